//! What the current thread is to a runtime: one of its workers, a thread inside
//! [`Runtime::block_on`](crate::Runtime::block_on), or nothing.
//!
//! A worker publishes its [`Local`] state in a thread-local pointer for as long as it runs;
//! futures and wakers reach it through [`with_worker`] and [`with_owner`]. A thread in
//! `block_on` holds its runtime's shared state, so that `spawn` and the I/O and time futures
//! polled there can hand their work to a worker.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::shared::Shared;
use crate::worker::Local;

thread_local! {
    /// The worker running on this thread, or null.
    static WORKER: Cell<*const Local> = const { Cell::new(std::ptr::null()) };
    /// The runtime of the `block_on` running on this thread, if any.
    static BLOCK_ON: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's worker, if it is one.
#[inline(always)]
pub(crate) fn with_worker<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    let local = WORKER.with(Cell::get);
    // SAFETY: the pointer is set by `WorkerGuard::enter` to a `Local` that outlives the guard,
    // and cleared when the guard drops, before the `Local` does; only this thread reads it.
    unsafe { local.as_ref() }.map(f)
}

/// Runs `f` with this thread's worker if it is the worker with id `uid`.
#[inline(always)]
pub(crate) fn with_owner<R>(uid: u64, f: impl FnOnce(&Local) -> R) -> Option<R> {
    with_worker(|local| (local.uid == uid).then(|| f(local))).flatten()
}

/// Whether this thread is a worker (of any runtime).
pub(crate) fn on_worker() -> bool {
    !WORKER.with(Cell::get).is_null()
}

/// The runtime this thread works for: its worker's, or its `block_on`'s.
pub(crate) fn runtime() -> Option<Arc<Shared>> {
    with_worker(|local| Arc::clone(&local.shared)).or_else(|| BLOCK_ON.with(|b| b.borrow().clone()))
}

/// Makes this thread a worker while the guard lives.
pub(crate) struct WorkerGuard(());

impl WorkerGuard {
    /// Publishes `local` as this thread's worker. `local` must outlive the guard.
    pub(crate) fn enter(local: &Local) -> Self {
        WORKER.with(|w| w.set(local));
        Self(())
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(std::ptr::null()));
    }
}

/// Makes `shared` this thread's `block_on` runtime while the guard lives, and restores the
/// previous one afterwards.
pub(crate) struct BlockOnGuard {
    previous: Option<Arc<Shared>>,
}

impl BlockOnGuard {
    pub(crate) fn enter(shared: Arc<Shared>) -> Self {
        let previous = BLOCK_ON.with(|b| b.borrow_mut().replace(shared));
        Self { previous }
    }
}

impl Drop for BlockOnGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let ours = BLOCK_ON.with(|b| std::mem::replace(&mut *b.borrow_mut(), previous));
        // Dropped outside the borrow: it may be the runtime's last handle.
        drop(ours);
    }
}
