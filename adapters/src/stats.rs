//! Counters for an adapter and for each of its completion queues.
//!
//! # Synchronization
//!
//! Every counter is a statistic, read with Relaxed loads; nothing is published through these
//! counters, so no stronger ordering is needed. The counters that only a ring's owner changes
//! (all but `rejected`) are updated with a Relaxed load and store ([`Counters::add_owned`]):
//! the ring lock orders one owner's store before the next owner's load, so no increment is lost
//! and no locked instruction is paid. `rejected`, which posting threads change, is updated with
//! a Relaxed read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one completion queue (one ring).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    pub enters: AtomicU64,
    pub sq_full: AtomicU64,
    pub cq_overflows: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: a statistic (module docs).
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to a counter that only the ring's owner changes (module docs).
    #[inline]
    pub fn add_owned(counter: &AtomicU64, n: u64) {
        // Relaxed load and store: the ring lock's Acquire/Release orders successive owners, so
        // this owner sees the last one's store, and nobody else stores.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, inbox_depth: usize) -> Stats {
        // Relaxed loads: statistics (module docs).
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            submitted: load(&self.submitted),
            completed: load(&self.completed),
            enters: load(&self.enters),
            sq_full: load(&self.sq_full),
            cq_overflows: load(&self.cq_overflows),
            rejected: load(&self.rejected),
            inbox_depth: inbox_depth as u64,
        }
    }
}

/// A snapshot of counters, for one completion queue or summed over an adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SQEs handed to the kernel.
    pub submitted: u64,
    /// CQEs reaped (every CQE, including the non-final ones of multishot and send_zc).
    pub completed: u64,
    /// `io_uring_enter` system calls made.
    pub enters: u64,
    /// Times a post or an inbox drain found the SQ full.
    pub sq_full: u64,
    /// Times the kernel flagged a CQ overflow (completions parked in its overflow list).
    pub cq_overflows: u64,
    /// Descriptors rejected by validation (each became an error completion).
    pub rejected: u64,
    /// Posts waiting in the inbox when the snapshot was taken.
    pub inbox_depth: u64,
}

impl std::ops::Add for Stats {
    type Output = Stats;
    fn add(self, o: Stats) -> Stats {
        Stats {
            submitted: self.submitted + o.submitted,
            completed: self.completed + o.completed,
            enters: self.enters + o.enters,
            sq_full: self.sq_full + o.sq_full,
            cq_overflows: self.cq_overflows + o.cq_overflows,
            rejected: self.rejected + o.rejected,
            inbox_depth: self.inbox_depth + o.inbox_depth,
        }
    }
}

impl Stats {
    /// `io_uring_enter` calls per submitted operation.
    pub fn syscalls_per_op(&self) -> f64 {
        self.enters as f64 / self.submitted.max(1) as f64
    }
}
