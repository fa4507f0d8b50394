//! [`Remote`]: the part of a worker that other threads reach (its inbox, park word, doorbell and
//! counters), and the table that finds a live worker by its id.
//!
//! # Synchronization
//!
//! - Mail goes through [`park::post`] (module `park`: the inbox push, the RMW on the park word,
//!   the doorbell ring only for a parked worker).
//! - Worker ids come from a process-wide counter bumped with a Relaxed RMW: only uniqueness is
//!   needed.
//! - The table of live workers is a mutex-guarded list, used only on the rare path of an
//!   operation dropped on a thread other than its worker's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::bell::EventFdBell;
use crate::inbox::Inbox;
use crate::park::{self, Park, Posted};
use crate::stats::Counters;
use crate::task::TaskRef;

/// What other threads send a worker.
pub(crate) enum Mail {
    /// A task spawned onto the worker from elsewhere: the worker adopts it and runs it.
    Spawn(TaskRef),
    /// A task of the worker's, woken by another thread (its `NOTIFIED` bit is set).
    Wake(TaskRef),
    /// An operation whose future was dropped on another thread: the worker cancels it and frees
    /// its slot once the kernel is done (the value is the operation's cookie).
    Abandon(u64),
    /// Stop: cancel everything and drain the ring until this deadline.
    Shutdown(Instant),
}

/// The shared half of a worker.
pub(crate) struct Remote {
    /// The worker's index in its runtime, which is also its ring's in every adapter.
    pub(crate) index: usize,
    /// A process-wide unique id.
    pub(crate) uid: u64,
    inbox: Inbox<Mail>,
    pub(crate) park: Park,
    pub(crate) bell: EventFdBell,
    pub(crate) counters: Counters,
}

impl Remote {
    /// The remote half of worker `index`, with a ring on each of `adapters` adapters.
    pub(crate) fn new(index: usize, bell: EventFdBell, adapters: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            index,
            // Relaxed: only uniqueness is needed (module docs).
            uid: NEXT.fetch_add(1, Ordering::Relaxed),
            inbox: Inbox::new(),
            park: Park::new(),
            bell,
            counters: Counters::new(adapters),
        }
    }

    /// Sends `mail` to the worker, waking it if it sleeps; hands it back if the worker has shut
    /// down (its inbox is closed).
    pub(crate) fn send(&self, mail: Mail) -> Result<(), Mail> {
        match park::post(&self.inbox, &self.park, &self.bell, mail)? {
            Posted::Rang => Counters::bump_shared(&self.counters.signals, 1),
            Posted::Queued => {}
        }
        Ok(())
    }

    /// The worker: moves the mail that came in to `into`.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Mail>) {
        self.inbox.drain_into(into);
    }

    /// The worker, or the runtime after the worker is gone: refuses mail from now on and
    /// returns what came in.
    pub(crate) fn close(&self) -> VecDeque<Mail> {
        self.inbox.close()
    }
}

/// The workers running now, by id.
static LIVE: Mutex<Vec<(u64, Weak<Remote>)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(u64, Weak<Remote>)>> {
    // The list is whole after any panic (pushes and removals only).
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lists a worker that has started.
pub(crate) fn publish(remote: &Arc<Remote>) {
    live().push((remote.uid, Arc::downgrade(remote)));
}

/// Unlists a worker that is stopping (and any whose last handle is gone). No handle is
/// upgraded, so no `Remote` can drop while the list is locked.
pub(crate) fn withdraw(uid: u64) {
    live().retain(|(id, w)| *id != uid && w.strong_count() > 0);
}

/// The running worker with id `uid`, if it still runs.
pub(crate) fn find(uid: u64) -> Option<Arc<Remote>> {
    let found = live()
        .iter()
        .find(|(id, _)| *id == uid)
        .map(|(_, w)| w.clone());
    found.and_then(|w| w.upgrade())
}
