//! Tasks: a spawned future in one allocation with its state word and its join slot.
//!
//! A task belongs to one worker, its *owner*, for its whole life (no work stealing). Only the
//! owner polls its future and drops it; other threads reach a task through its [`Waker`]
//! (`waker.rs`) and its [`JoinHandle`] (`join.rs`).
//!
//! # Synchronization
//!
//! - **The state word** has three bits. `NOTIFIED`: the task is queued (in its owner's run
//!   queue or inbox) and will be polled; a wake finding it set does nothing more (the
//!   deduplication of wake-ups). `COMPLETE`: the future is gone and the output (or the error) is
//!   in the join slot. `ABORT`: [`JoinHandle::abort`] was called.
//!   - A wake on another thread sets `NOTIFIED` with a Release RMW; the owner clears it with an
//!     Acquire RMW just before each poll. The RMWs form one release sequence, so the poll sees
//!     everything the waker wrote before it woke the task, and a wake that comes during the
//!     poll sets the bit again and queues the task again: no wake-up is lost.
//!   - A wake on the owner thread uses Relaxed: the poll runs on the same thread.
//!   - `COMPLETE` is set with Release after the future was dropped and the output stored;
//!     [`JoinHandle::is_finished`] reads it with Acquire.
//!   - `ABORT` is set with an AcqRel RMW from any thread, then the task is woken; the owner sees
//!     it through the Acquire clear before the next poll.
//! - **The future** lives in an `UnsafeCell` that only the owner touches, except for a task that
//!   no worker adopted before its runtime shut down (it was still in an inbox): the runtime
//!   drops that one on its own thread. Such tasks come only from [`spawn`](crate::spawn), which
//!   requires `Send` futures.
//! - **The join slot** is a mutex between the owner (which stores the output) and the join
//!   handle (which takes it, or detaches).
//! - **The registry index** (`Header::slot`) is an atomic only to make the header `Sync`; only
//!   the owner reads or writes it, Relaxed.

mod join;
mod refused;
mod registry;
mod waker;

use std::cell::UnsafeCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub use join::{JoinError, JoinHandle};
pub(crate) use refused::cancel_refused;
pub(crate) use registry::Registry;

use crate::remote::Remote;
use crate::worker::Local;
use join::{Join, JoinSlot};

/// Queued for a poll.
pub(crate) const NOTIFIED: u32 = 1;
/// Done: the future is gone and the join slot holds the outcome.
pub(crate) const COMPLETE: u32 = 2;
/// Abort requested.
pub(crate) const ABORT: u32 = 4;

/// What every task has, whatever its future.
pub(crate) struct Header {
    pub(crate) state: AtomicU32,
    /// The owner worker.
    pub(crate) owner: Arc<Remote>,
    /// The task's index in its owner's registry (owner only; module docs).
    slot: AtomicUsize,
}

impl Header {
    pub(crate) fn slot(&self) -> usize {
        // Relaxed: only the owner reads and writes it (module docs).
        self.slot.load(Ordering::Relaxed)
    }

    pub(crate) fn set_slot(&self, slot: usize) {
        // Relaxed: as in `slot`.
        self.slot.store(slot, Ordering::Relaxed);
    }
}

/// A task as its owner worker sees it, whatever its future.
pub(crate) trait Runnable: Send + Sync + 'static {
    fn header(&self) -> &Header;

    /// Polls the future once (on the owner), or finishes the task if it was aborted; a task that
    /// finishes leaves the owner's registry.
    fn run(self: Arc<Self>, local: &Local);

    /// Drops the future, if it is still there, and completes the join slot with
    /// [`JoinError::is_cancelled`]. On the owner, or for a task no worker adopted (module docs).
    fn cancel(self: Arc<Self>);
}

/// A task, type-erased.
pub(crate) type TaskRef = Arc<dyn Runnable>;

/// A task: its header, its future and its join slot, in one allocation.
pub(crate) struct Task<F: Future> {
    header: Header,
    future: UnsafeCell<Option<F>>,
    join: Mutex<JoinSlot<F::Output>>,
}

// SAFETY: the future is only polled and dropped on the owner thread, or, for a task of `spawn`
// (a `Send` future) that no worker adopted, on the thread that shuts the runtime down (module
// docs); the output crosses threads only through a `JoinHandle`, which is `Send` only when the
// output is. Everything else in the task is atomics, an `Arc<Remote>` and a mutex.
unsafe impl<F: Future> Send for Task<F> {}
// SAFETY: as for `Send`: shared access from other threads reaches only the atomics (wakes,
// abort) and the join mutex.
unsafe impl<F: Future> Sync for Task<F> {}

impl<F> Task<F>
where
    F: Future + 'static,
    F::Output: 'static,
{
    /// A task owned by `owner`, not yet queued, and the handle to its output.
    pub(crate) fn new(future: F, owner: Arc<Remote>) -> (Arc<Self>, JoinHandle<F::Output>) {
        let task = Arc::new(Self {
            header: Header {
                state: AtomicU32::new(0),
                owner,
                slot: AtomicUsize::new(usize::MAX),
            },
            future: UnsafeCell::new(Some(future)),
            join: Mutex::new(JoinSlot::default()),
        });
        let handle = JoinHandle::new(Arc::clone(&task) as Arc<dyn Join<F::Output>>);
        (task, handle)
    }

    /// Marks the task queued, for a task that is about to be pushed onto a run queue or into an
    /// inbox for its first poll.
    pub(crate) fn mark_queued(&self) {
        // Relaxed: nobody else knows the task yet; the queue or the inbox that takes it
        // publishes it.
        self.header.state.fetch_or(NOTIFIED, Ordering::Relaxed);
    }

    fn lock_join(&self) -> std::sync::MutexGuard<'_, JoinSlot<F::Output>> {
        // The slot is whole after any panic (each update is a few stores).
        self.join.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the future in place (it is pinned), catching a panic from its destructor.
    fn drop_future(&self) {
        // SAFETY: the future is touched only on the owner thread, or by the thread that cancels
        // an unadopted `Send` task (module docs), never by two at once; no reference into it
        // lives across this call. Assigning `None` drops the future where it lies, as `Pin`
        // requires.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { *self.future.get() = None }));
        if dropped.is_err() {
            tracing::error!("a task's future panicked while it was dropped");
        }
    }

    /// Drops the future, stores `outcome` for the join handle (or drops it, if the handle is
    /// gone), marks the task complete and wakes the joiner.
    fn finish(&self, outcome: Result<F::Output, JoinError>) {
        self.drop_future();
        let (waker, unwanted) = {
            let mut slot = self.lock_join();
            if slot.detached {
                (None, Some(outcome))
            } else {
                slot.output = Some(outcome);
                (slot.waker.take(), None)
            }
        };
        // Release: a join handle that reads COMPLETE with Acquire sees the future dropped and
        // the outcome stored (module docs).
        self.header.state.fetch_or(COMPLETE, Ordering::Release);
        if catch_unwind(AssertUnwindSafe(|| drop(unwanted))).is_err() {
            tracing::error!("a task's output panicked while it was dropped");
        }
        if let Some(waker) = waker {
            crate::contain::wake(waker);
        }
    }
}

impl<F> Runnable for Task<F>
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(self: Arc<Self>, local: &Local) {
        // Acquire: pairs with the Release of wakers on other threads (module docs).
        let prev = self.header.state.fetch_and(!NOTIFIED, Ordering::Acquire);
        if prev & COMPLETE != 0 {
            return;
        }
        if prev & ABORT != 0 {
            self.finish(Err(JoinError::cancelled()));
            local.forget_task(self.header.slot());
            return;
        }
        let waker = Waker::from(Arc::clone(&self));
        let mut cx = Context::from_waker(&waker);
        let polled = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: this is the owner thread (the worker polls only its own tasks), so nothing
            // else touches the future now, and the reference ends with this closure.
            let future = unsafe { &mut *self.future.get() }.as_mut()?;
            // SAFETY: the future lies in the task's allocation, which never moves, and is only
            // ever dropped in place (`drop_future`): pinning it is sound.
            let future = unsafe { Pin::new_unchecked(future) };
            Some(future.poll(&mut cx))
        }));
        let outcome = match polled {
            Ok(None) | Ok(Some(Poll::Pending)) => return,
            Ok(Some(Poll::Ready(output))) => Ok(output),
            Err(payload) => Err(JoinError::panic(payload)),
        };
        self.finish(outcome);
        local.forget_task(self.header.slot());
    }

    fn cancel(self: Arc<Self>) {
        // Acquire: see `finish` and `is_finished`; a completed task has nothing to cancel.
        if self.header.state.load(Ordering::Acquire) & COMPLETE != 0 {
            return;
        }
        self.finish(Err(JoinError::cancelled()));
    }
}

impl<F> Join<F::Output> for Task<F>
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        let mut slot = self.lock_join();
        if let Some(outcome) = slot.output.take() {
            slot.taken = true;
            return Poll::Ready(outcome);
        }
        assert!(
            !slot.taken,
            "a JoinHandle was polled again after it returned the task's output"
        );
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn abort(self: Arc<Self>) {
        // AcqRel: the owner's Acquire clear before the next poll sees the bit (module docs).
        let prev = self.header.state.fetch_or(ABORT, Ordering::AcqRel);
        if prev & COMPLETE == 0 {
            waker::schedule(&self);
        }
    }

    fn is_finished(&self) -> bool {
        // Acquire: pairs with the Release in `finish` (module docs).
        self.header.state.load(Ordering::Acquire) & COMPLETE != 0
    }

    fn detach(&self) {
        let unwanted = {
            let mut slot = self.lock_join();
            slot.detached = true;
            slot.waker = None;
            slot.output.take()
        };
        drop(unwanted);
    }
}
