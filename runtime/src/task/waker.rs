//! Waking a task: onto its owner's run queue on the owner thread, through the owner's inbox
//! from anywhere else.
//!
//! # Synchronization
//!
//! See `task/mod.rs`: the `NOTIFIED` bit deduplicates wake-ups (only the wake that sets it
//! queues the task), Relaxed on the owner thread and Release elsewhere, paired with the owner's
//! Acquire clear before each poll. A wake from another thread goes through the owner's inbox
//! and park word (module `park`), which rings the owner's eventfd only if it is parked.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Wake;

use super::{Runnable, Task, TaskRef, COMPLETE, NOTIFIED};
use crate::context;
use crate::remote::Mail;

impl<F> Wake for Task<F>
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn wake(self: Arc<Self>) {
        schedule(&self);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        schedule(self);
    }
}

/// Queues `task` for a poll, unless it is queued already or complete.
pub(crate) fn schedule<T: Runnable>(task: &Arc<T>) {
    let header = task.header();
    let queued_here = context::with_owner(header.owner.uid, |local| {
        // Relaxed: on the owner thread, which polls the task (module docs); a peek that
        // spares the RMW when a completion wakes a task that is queued already.
        if header.state.load(Ordering::Relaxed) & (NOTIFIED | COMPLETE) != 0 {
            return;
        }
        // Relaxed: as above. A wake from another thread that set the bit meanwhile shows in
        // the old value, and then that wake has queued the task.
        if header.state.fetch_or(NOTIFIED, Ordering::Relaxed) & (NOTIFIED | COMPLETE) == 0 {
            local.push_ready(Arc::clone(task) as TaskRef);
        }
    });
    if queued_here.is_some() {
        return;
    }
    // Release: pairs with the owner's Acquire clear before the poll (module docs).
    if header.state.fetch_or(NOTIFIED, Ordering::Release) & (NOTIFIED | COMPLETE) != 0 {
        return;
    }
    // A refusal means the owner has shut down, and cancelled the task on its way out.
    let _ = header.owner.send(Mail::Wake(Arc::clone(task) as TaskRef));
}
