//! [`Shared`]: what a runtime's workers and handles share: the workers' remote halves, the
//! adapters and their pool, and where the next spawned task goes.
//!
//! # Synchronization
//!
//! - `open` says whether spawns are accepted: Release when shutdown clears it, Acquire when a
//!   spawn reads it. A spawn that reads it set but reaches a worker whose inbox has closed
//!   since is refused by the inbox, and its task is cancelled; the inbox's mutex closes the
//!   race (module `inbox`).
//! - `next` is a round-robin counter, a Relaxed RMW: any distribution of tickets is correct.
//! - Each worker's live-task gauge is read Relaxed: a hint for placement.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regio_adapters::Adapter;
use regio_pool::{FileSlots, Message, MessagePool};

use crate::adapter::OnAdapter;
use crate::context;
use crate::remote::{Mail, Remote};
use crate::spec::RingMode;
use crate::task::{JoinHandle, Task};

/// How the workers run, fixed at build.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// How long an idle worker keeps looking for work before it parks.
    pub(crate) spin: Duration,
}

/// One adapter of a runtime: ring `i` of it belongs to worker `i`.
pub(crate) struct RtAdapter {
    pub(crate) adapter: Adapter<Message>,
    /// The mode the rings were set up in (`Interrupt` after a refused SQPOLL).
    pub(crate) mode: RingMode,
    /// The most completions one reap of a ring takes.
    pub(crate) reap_max: usize,
    /// The depth (each side) of the work queues made for descriptors, and of each worker's
    /// own queue.
    pub(crate) queue_depth: u32,
    /// The free slots of this adapter's fixed-file table (none in single-issuer mode; see the
    /// `files` module).
    pub(crate) file_slots: FileSlots,
}

/// A runtime's shared state.
pub(crate) struct Shared {
    pub(crate) workers: Box<[Arc<Remote>]>,
    pub(crate) adapters: Box<[RtAdapter]>,
    pub(crate) pool: MessagePool,
    pub(crate) config: WorkerConfig,
    next: AtomicUsize,
    open: AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        workers: Box<[Arc<Remote>]>,
        adapters: Box<[RtAdapter]>,
        pool: MessagePool,
        config: WorkerConfig,
    ) -> Self {
        Self {
            workers,
            adapters,
            pool,
            config,
            next: AtomicUsize::new(0),
            open: AtomicBool::new(true),
        }
    }

    /// Whether spawns are accepted.
    pub(crate) fn is_open(&self) -> bool {
        // Acquire: pairs with the Release in `close` (module docs).
        self.open.load(Ordering::Acquire)
    }

    /// Refuses spawns from now on.
    pub(crate) fn close(&self) {
        // Release: see `is_open`.
        self.open.store(false, Ordering::Release);
    }

    /// The worker for the next spawned task: the less loaded of the next two in round-robin
    /// order.
    fn pick(&self) -> &Arc<Remote> {
        let n = self.workers.len();
        // Relaxed: a ticket; any interleaving of tickets is a fine distribution.
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let second = (first + 1) % n;
        let load = |i: usize| {
            // Relaxed: a placement hint (module docs).
            self.workers[i].counters.live_tasks.load(Ordering::Relaxed)
        };
        if load(second) < load(first) {
            &self.workers[second]
        } else {
            &self.workers[first]
        }
    }

    /// Spawns `future` on a worker: straight onto its run queue when this thread is that
    /// worker, else through its inbox. After shutdown the task is cancelled at once. The task
    /// keeps the current adapter of the caller (module `adapter`).
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let owner = self.pick();
        let (task, handle) = Task::new(OnAdapter::inherit(future), Arc::clone(owner));
        task.mark_queued();
        if !self.is_open() {
            crate::task::cancel_refused(task);
            return handle;
        }
        let here = context::with_owner(owner.uid, |local| local.adopt(Arc::clone(&task) as _));
        if here.is_none() {
            if let Err(Mail::Spawn(task)) = owner.send(Mail::Spawn(task)) {
                // The worker has shut down: a `Send` task may be dropped here.
                crate::task::cancel_refused(task);
            }
        }
        handle
    }
}
