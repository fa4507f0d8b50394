//! [`OpTable`]: one worker's operations, from their first poll to their final completion.
//!
//! Each operation is a slot, named by a *cookie*: the slot's index in the low 32 bits and its
//! generation in the high 32 (never 0, which [`INTERNAL`] keeps for the worker's own cancels).
//! A slot's generation changes each time it is reused, so a completion or a cancel meant for an
//! earlier operation in the same slot can never reach a later one.
//!
//! A slot's life:
//!
//! ```text
//! Staged --post--> Posted --final CQE--> Done --polled--> Free
//!    |                |                    |
//!  dropped         dropped              dropped
//!    v                v                    v
//! Abandoned{posted: false}  Abandoned{posted: true}  Free (the buffer goes back to the pool)
//!    |                |
//!  (not posted)     final CQE
//!    v                v
//!  Free             Free (the buffer goes back to the pool)
//! ```
//!
//! An abandoned operation that was posted gets a cancel from the caller
//! ([`OpTable::abandon`] says so); its buffer stays with the adapter until the final
//! completion, which frees the slot. The table is the worker's alone: no synchronization.

use std::task::{Context, Poll, Waker};

use std::sync::Arc;

use regio_adapters::{Completion, WorkQueue};
use regio_pool::Message;

use crate::fs::FileQueues;

use super::Completed;

/// The cookie of the worker's own operations (the cancels of dropped futures), whose
/// completions nobody waits for.
pub(crate) const INTERNAL: u64 = 0;

/// The work queue an operation goes to.
#[derive(Clone)]
pub(crate) enum Queue {
    /// The worker's own queue, on no file: nops, timeouts, cancels of its operations.
    Control,
    /// A file's queue on this worker's ring. The file's queues are kept (not removed from the
    /// adapter) while any operation, or any cancel, may still be posted on one.
    File {
        wq: WorkQueue<Message>,
        /// Held, never read: keeps the file open and its queues registered.
        _file: Arc<FileQueues>,
    },
}

enum State {
    Free,
    /// Waiting in the worker's staging queue for the next submission.
    Staged(Option<Waker>),
    /// In the kernel; `first` is the result of a first, non-final completion (send_zc).
    Posted {
        waker: Option<Waker>,
        first: Option<i32>,
    },
    /// The final completion came; the future has not taken it yet.
    Done(Completed),
    /// The future was dropped.
    Abandoned {
        posted: bool,
    },
}

struct Slot {
    generation: u32,
    state: State,
    queue: Queue,
}

/// One worker's operations.
#[derive(Default)]
pub(crate) struct OpTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Operations posted and not finally completed.
    in_kernel: usize,
}

/// What the caller must do after [`OpTable::abandon`].
#[must_use]
pub(crate) enum Abandoned {
    /// Nothing: the slot is free, or frees itself.
    Nothing,
    /// Post a cancel of the operation on this queue.
    Cancel(Queue),
}

fn split(cookie: u64) -> (usize, u32) {
    (
        (cookie & u64::from(u32::MAX)) as usize,
        (cookie >> 32) as u32,
    )
}

impl OpTable {
    /// A slot for an operation about to be staged, waking `waker` when it completes.
    pub(crate) fn insert(&mut self, waker: &Waker, queue: Queue) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    state: State::Free,
                    queue: Queue::Control,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.checked_add(1).unwrap_or(1);
        slot.state = State::Staged(Some(waker.clone()));
        slot.queue = queue;
        (u64::from(slot.generation) << 32) | index as u64
    }

    /// The live slot `cookie` names.
    fn slot(&mut self, cookie: u64) -> Option<&mut Slot> {
        let (index, generation) = split(cookie);
        self.slots
            .get_mut(index)
            .filter(|s| s.generation == generation && !matches!(s.state, State::Free))
    }

    fn release(&mut self, cookie: u64) {
        let (index, _) = split(cookie);
        let slot = &mut self.slots[index];
        slot.state = State::Free;
        slot.queue = Queue::Control;
        self.free.push(index as u32);
    }

    /// The future's poll: the completion if it came, else `Pending` with the waker updated.
    ///
    /// # Panics
    ///
    /// If `cookie` names no live operation (the future was polled after it completed).
    pub(crate) fn poll(&mut self, cookie: u64, cx: &mut Context<'_>) -> Poll<Completed> {
        let slot = self
            .slot(cookie)
            .expect("an operation future was polled after it completed");
        match &mut slot.state {
            State::Staged(waker) | State::Posted { waker, .. } => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Done(_) => {
                let State::Done(done) = std::mem::replace(&mut slot.state, State::Free) else {
                    unreachable!("matched above")
                };
                self.release(cookie);
                Poll::Ready(done)
            }
            State::Free | State::Abandoned { .. } => {
                unreachable!("a live future's slot is neither free nor abandoned")
            }
        }
    }

    /// The future was dropped: frees what can be freed now, and says whether a cancel must be
    /// posted.
    pub(crate) fn abandon(&mut self, cookie: u64) -> Abandoned {
        let Some(slot) = self.slot(cookie) else {
            return Abandoned::Nothing;
        };
        match slot.state {
            State::Staged(_) => {
                slot.state = State::Abandoned { posted: false };
                Abandoned::Nothing
            }
            State::Posted { .. } => {
                slot.state = State::Abandoned { posted: true };
                Abandoned::Cancel(slot.queue.clone())
            }
            State::Done(_) => {
                self.release(cookie);
                Abandoned::Nothing
            }
            State::Free | State::Abandoned { .. } => Abandoned::Nothing,
        }
    }

    /// Frees the slot of an operation that was never staged (its builder panicked).
    pub(crate) fn discard(&mut self, cookie: u64) {
        if self.slot(cookie).is_some() {
            self.release(cookie);
        }
    }

    /// An explicit cancel: the queue to post the cancel on, if the operation has not completed.
    pub(crate) fn cancel_queue(&mut self, cookie: u64) -> Option<Queue> {
        let slot = self.slot(cookie)?;
        match slot.state {
            State::Staged(_) | State::Posted { .. } => Some(slot.queue.clone()),
            _ => None,
        }
    }

    /// Whether the staged operation `cookie` should still be posted; an operation abandoned
    /// before it was posted is forgotten here (the caller drops it, and with it its buffer).
    pub(crate) fn should_post(&mut self, cookie: u64) -> bool {
        match self.slot(cookie).map(|s| &s.state) {
            Some(State::Staged(_)) => true,
            Some(State::Abandoned { posted: false }) => {
                self.release(cookie);
                false
            }
            _ => false,
        }
    }

    /// The operation `cookie` was handed to the ring.
    pub(crate) fn posted(&mut self, cookie: u64) {
        if let Some(slot) = self.slot(cookie) {
            if let State::Staged(waker) = &mut slot.state {
                let waker = waker.take();
                slot.state = State::Posted { waker, first: None };
                self.in_kernel += 1;
            }
        }
    }

    /// The ring refused the operation for good (its work queue was removed): it completes with
    /// `result`, and its buffer went back to the pool with the refused operation.
    pub(crate) fn refused(&mut self, cookie: u64, result: i32) {
        let Some(slot) = self.slot(cookie) else {
            return;
        };
        match std::mem::replace(&mut slot.state, State::Free) {
            State::Staged(waker) => {
                slot.state = State::Done(Completed {
                    result,
                    flags: 0,
                    buf: None,
                });
                if let Some(w) = waker {
                    w.wake();
                }
            }
            _ => self.release(cookie),
        }
    }

    /// Routes a completion to its operation: a final one completes it (or frees an abandoned
    /// one, whose buffer goes back to the pool here).
    pub(crate) fn complete(&mut self, c: Completion<Message>) {
        if c.cookie == INTERNAL || c.wq.is_none() {
            return;
        }
        let cookie = c.cookie;
        let is_final = c.is_final();
        let Some(slot) = self.slot(cookie) else {
            tracing::error!(cookie, "a completion for no live operation");
            return;
        };
        match &mut slot.state {
            State::Posted { first, .. } if !is_final => {
                first.get_or_insert(c.result);
            }
            State::Posted { .. } => {
                let State::Posted { waker, first } =
                    std::mem::replace(&mut slot.state, State::Free)
                else {
                    unreachable!("matched above")
                };
                slot.state = State::Done(Completed {
                    result: first.unwrap_or(c.result),
                    flags: c.flags,
                    buf: c.buf,
                });
                self.in_kernel -= 1;
                if let Some(w) = waker {
                    w.wake();
                }
            }
            State::Abandoned { posted: true } if is_final => {
                self.in_kernel -= 1;
                self.release(cookie);
            }
            State::Abandoned { posted: true } => {}
            _ => tracing::error!(cookie, "a completion for an operation not in the kernel"),
        }
    }

    /// Operations in the kernel (posted, final completion not reaped).
    pub(crate) fn in_kernel(&self) -> usize {
        self.in_kernel
    }
}
