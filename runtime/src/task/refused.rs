//! [`cancel_refused`]: the end of a task whose spawn was refused (the runtime is shutting
//! down), without recursion.
//!
//! A refused task is dropped at once on the spawner's thread. If dropping it spawns again (a
//! guard whose destructor restarts the task it guarded), that spawn is refused too, and a drop
//! in place would recurse for as long as the chain goes: a stack overflow. So a refusal made
//! while the thread is already dropping refused tasks only queues its task; the outermost
//! refusal drops the queue one task after the other. A chain that never ends is cut after
//! [`MAX_CHAIN`] tasks: the rest is leaked (never dropped, its join handle never resolves),
//! with an error in the log, rather than dropped for ever.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::TaskRef;

/// The most refused tasks one refusal drops, its chain included.
const MAX_CHAIN: usize = 1_000_000;

thread_local! {
    /// The refused tasks waiting to be dropped, while a refusal drops them on this thread.
    static QUEUE: RefCell<Option<VecDeque<TaskRef>>> = const { RefCell::new(None) };
}

/// Cancels `task`, whose spawn was refused: drops its future and completes its join handle
/// with a cancellation (see the module docs).
pub(crate) fn cancel_refused(task: TaskRef) {
    let task = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        match q.as_mut() {
            // A refusal further up this thread's stack drops it.
            Some(queue) => {
                queue.push_back(task);
                None
            }
            None => {
                *q = Some(VecDeque::new());
                Some(task)
            }
        }
    });
    let Some(task) = task else { return };
    task.cancel();
    let mut dropped = 1;
    while let Some(next) = QUEUE.with(|q| q.borrow_mut().as_mut().and_then(VecDeque::pop_front)) {
        if dropped == MAX_CHAIN {
            std::mem::forget(next);
            break;
        }
        next.cancel();
        dropped += 1;
    }
    let rest = QUEUE.with(|q| q.borrow_mut().take()).unwrap_or_default();
    if dropped == MAX_CHAIN {
        tracing::error!(
            dropped,
            "tasks spawned from the destructors of refused tasks, without end: the rest of \
             the chain is leaked"
        );
    }
    for task in rest {
        std::mem::forget(task);
    }
}
