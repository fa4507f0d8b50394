//! [`CqSet`]: reaping across many completion queues, from one thread or from many.
//!
//! # Synchronization
//!
//! A reaper claims a CQ with the ring's own lock ([`Combiner::try_lock`](crate::combiner)),
//! which is never waited on: a CQ that another reaper holds is skipped, so no CQ is reaped by
//! two threads at once. Each pass starts at the next position of a shared cursor (a Relaxed
//! `fetch_add`: it only spreads the starting points, and orders nothing), so every CQ comes first
//! in turn and none starves.
//!
//! An idle reaper resets every CQ's eventfd, makes one more pass, and only then sleeps in
//! `epoll_wait` on all the eventfds: a completion posted after the reset signals its eventfd and
//! wakes the sleeper, and one posted before it is found by the second pass. No wake-up is lost.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cq::{reap_locked, Completion, CompletionQueue};
use crate::error::Error;
use crate::ring::Ring;
use crate::sys::Epoll;
use crate::IoBuf;

/// A set of completion queues, from one adapter or several, reaped together.
///
/// In single-issuer mode ([`Config::single_issuer`](crate::Config::single_issuer)) a thread
/// reaps only the CQs it owns ([`CompletionQueue::bind_owner`]); the others in the set are
/// skipped, as CQs another reaper holds are, and their eventfds are left for their owners to
/// drain.
pub struct CqSet<B> {
    rings: Vec<Arc<Ring<B>>>,
    cursor: AtomicUsize,
    epoll: Epoll,
}

impl<B> std::fmt::Debug for CqSet<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqSet")
            .field("cqs", &self.rings.len())
            .finish()
    }
}

impl<B: IoBuf> CqSet<B> {
    /// A set over `cqs`.
    pub fn new(cqs: impl IntoIterator<Item = CompletionQueue<B>>) -> Result<Self, Error> {
        let epoll = Epoll::new().map_err(|source| Error::Sys {
            what: "epoll_create1",
            source,
        })?;
        let rings: Vec<_> = cqs.into_iter().map(|c| c.ring).collect();
        for (i, r) in rings.iter().enumerate() {
            epoll
                .add(r.eventfd.as_raw_fd(), i as u64)
                .map_err(|source| Error::Sys {
                    what: "epoll_ctl",
                    source,
                })?;
        }
        Ok(Self {
            rings,
            cursor: AtomicUsize::new(0),
            epoll,
        })
    }

    /// The number of CQs in the set.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// One round-robin pass: reaps up to `max` completions in all from the CQs no other reaper
    /// holds. Never blocks.
    pub fn reap(&self, out: &mut Vec<Completion<B>>, max: usize) -> Result<usize, Error> {
        let n = self.rings.len();
        if n == 0 {
            return Ok(0);
        }
        // Relaxed: spreads starting points only (module docs).
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut got = 0;
        for k in 0..n {
            if got >= max {
                break;
            }
            let ring = &self.rings[(start + k) % n];
            if let Some(mut g) = ring.try_own() {
                got += reap_locked(ring, &mut g, None::<&regio_sync::Guard<'_>>, out, max - got)?;
            }
        }
        Ok(got)
    }

    /// Reaps; if there is nothing, sleeps on the CQs' eventfds until completions arrive or
    /// `timeout` passes. Returns how many were reaped (0 on timeout).
    pub fn wait(
        &self,
        out: &mut Vec<Completion<B>>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        crate::wait::reap_or_sleep(
            timeout,
            || self.reap(out, max),
            || {
                // Only the eventfds of CQs this thread may reap: in single-issuer mode another
                // thread's CQ has its owner asleep on the same eventfd, and a drain here would
                // eat the wake-up for a foreign post or for deferred task work, which only that
                // owner can act on. (Until the owner drains it, such an eventfd keeps this
                // thread's epoll awake: a short spin rather than a lost wake-up.)
                for r in &self.rings {
                    if !r.single_issuer || r.owned_here() {
                        crate::sys::eventfd_drain(&r.eventfd);
                    }
                }
            },
            |left| {
                self.epoll
                    .wait(left)
                    .map(drop)
                    .map_err(|source| Error::Sys {
                        what: "epoll_wait",
                        source,
                    })
            },
        )
    }
}
