//! Per-worker counters ([`WorkerStats`], from [`Runtime::stats`](crate::Runtime::stats)), and
//! per worker and adapter ([`RingStats`], from [`Runtime::ring_stats`](crate::Runtime::ring_stats)).
//!
//! # Synchronization
//!
//! Every counter is a statistic: nothing is published through it, so Relaxed suffices
//! throughout. The counters only the worker changes are bumped with a Relaxed load and store,
//! no locked instruction (one writer, so no increment is lost); the one other threads change
//! (the wake-up signals they send) uses a Relaxed read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering};

use regio_adapters::Stats;

/// The live counters of one worker's ring of one adapter (the worker alone changes them).
#[derive(Debug, Default)]
pub(crate) struct RingCounters {
    pub(crate) ops_submitted: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) reaps: AtomicU64,
}

/// The live counters of one worker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tasks_polled: AtomicU64,
    /// By adapter.
    pub(crate) rings: Box<[RingCounters]>,
    pub(crate) parks: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    pub(crate) signals: AtomicU64,
    pub(crate) remote_wakes: AtomicU64,
    pub(crate) inbox_spawns: AtomicU64,
    pub(crate) local_spawns: AtomicU64,
    pub(crate) live_tasks: AtomicU64,
}

impl Counters {
    /// The counters of a worker with a ring on each of `adapters` adapters.
    pub(crate) fn new(adapters: usize) -> Self {
        Self {
            rings: (0..adapters).map(|_| RingCounters::default()).collect(),
            ..Self::default()
        }
    }

    /// Adds `n` to a counter that only the worker changes.
    #[inline(always)]
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        // Relaxed load and store: the worker is the only writer (module docs).
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Adds `n` to a counter that other threads change too.
    pub(crate) fn bump_shared(counter: &AtomicU64, n: u64) {
        // Relaxed: a statistic (module docs).
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge that only the worker changes.
    pub(crate) fn set(counter: &AtomicU64, value: u64) {
        // Relaxed: a statistic with one writer (module docs).
        counter.store(value, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, worker: usize) -> WorkerStats {
        // Relaxed loads: statistics (module docs).
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sum = |f: fn(&RingCounters) -> &AtomicU64| self.rings.iter().map(|r| load(f(r))).sum();
        WorkerStats {
            worker,
            tasks_polled: load(&self.tasks_polled),
            ops_submitted: sum(|r| &r.ops_submitted),
            completions: sum(|r| &r.completions),
            reaps: sum(|r| &r.reaps),
            parks: load(&self.parks),
            timers_fired: load(&self.timers_fired),
            wakeup_signals: load(&self.signals),
            remote_wakes: load(&self.remote_wakes),
            inbox_spawns: load(&self.inbox_spawns),
            local_spawns: load(&self.local_spawns),
            live_tasks: load(&self.live_tasks),
        }
    }
}

/// A snapshot of one worker's counters. Each is exact for its own worker's view, but the
/// snapshot is not taken atomically across counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's index, from 0.
    pub worker: usize,
    /// Task polls.
    pub tasks_polled: u64,
    /// Operations handed to the worker's rings (cancels included), summed over the adapters
    /// ([`RingStats`] has them by adapter).
    pub ops_submitted: u64,
    /// Completions reaped from the worker's completion queues, summed over the adapters.
    pub completions: u64,
    /// Reaps that found at least one completion, summed over the adapters.
    pub reaps: u64,
    /// Times the worker slept in the kernel (on its completion queues' eventfds).
    pub parks: u64,
    /// Timers that fired (sleeps, timeouts and interval ticks that came due).
    pub timers_fired: u64,
    /// Eventfd signals other threads sent to wake the worker from a park: at most one per park,
    /// however many wake-ups arrive meanwhile.
    pub wakeup_signals: u64,
    /// Tasks of this worker woken from other threads (through its inbox).
    pub remote_wakes: u64,
    /// Tasks spawned onto this worker through its inbox (from other threads).
    pub inbox_spawns: u64,
    /// Tasks spawned onto this worker from the worker itself (local run queue, no inbox).
    pub local_spawns: u64,
    /// Tasks alive on the worker now.
    pub live_tasks: u64,
}

impl RingCounters {
    pub(crate) fn snapshot(&self, adapter: usize, worker: usize, ring: Stats) -> RingStats {
        // Relaxed loads: statistics (module docs).
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RingStats {
            adapter,
            worker,
            ops_submitted: load(&self.ops_submitted),
            completions: load(&self.completions),
            reaps: load(&self.reaps),
            ring,
        }
    }
}

/// A snapshot of one worker's counters for its ring of one adapter (its completion queue
/// there): what the worker did with it, and the adapter's own counters of that ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// The adapter's index, from 0.
    pub adapter: usize,
    /// The worker's index, from 0.
    pub worker: usize,
    /// Operations the worker handed to this ring (cancels included).
    pub ops_submitted: u64,
    /// Completions the worker reaped from this ring's completion queue.
    pub completions: u64,
    /// Reaps of this completion queue that found at least one completion.
    pub reaps: u64,
    /// The adapter's counters of this ring: SQEs, CQEs, `io_uring_enter` calls, SQ-full
    /// events, CQ overflows, rejections.
    pub ring: Stats,
}
