//! [`Inbox`]: what other threads hand to a worker (spawned tasks, wake-ups, dropped operations,
//! the shutdown order), in arrival order.
//!
//! # Synchronization
//!
//! One mutex guards the queue and its `closed` flag together, so a push either lands before the
//! close (and the closer drains it) or is refused (and the pusher keeps its item): nothing is
//! stranded in a closed inbox. The worker takes the whole queue at once, by swapping it with an
//! empty one, so it holds the mutex for a pointer swap only. Telling a parked worker that the
//! inbox has something is the [`park`](crate::park) module's job.

use std::collections::VecDeque;

use regio_loom_shim::sync::{Mutex, MutexGuard};

/// A worker's inbox: many pushers, one drainer.
pub(crate) struct Inbox<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Inbox<T> {
    /// An open, empty inbox.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic under this lock can only come from a push or a swap, which leave the queue
        // whole; carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends `item`, or hands it back if the inbox was closed.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        Ok(())
    }

    /// Moves everything queued to the end of `into` (which the caller then empties; its
    /// allocation is reused by the next drain).
    pub(crate) fn drain_into(&self, into: &mut VecDeque<T>) {
        let mut state = self.lock();
        if state.items.is_empty() {
            return;
        }
        if into.is_empty() {
            std::mem::swap(&mut state.items, into);
        } else {
            into.append(&mut state.items);
        }
    }

    /// Closes the inbox: later pushes are refused. Returns what was queued.
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.items)
    }
}
