//! [`CqSet`]: reaping across many completion queues, from one thread or from many.
//!
//! # Synchronization
//!
//! A reaper claims a CQ with the ring's own lock ([`Combiner::try_lock`](regio_sync::Combiner::try_lock)),
//! which is never waited on: a CQ that another reaper holds is skipped, so no CQ is reaped by
//! two threads at once. Each pass starts at the next position of a shared cursor (a Relaxed
//! `fetch_add`: it only spreads the starting points, and orders nothing), so every CQ comes first
//! in turn and none starves.
//!
//! An idle reaper resets every CQ's eventfd, makes one more pass, and only then sleeps in
//! `epoll_wait` on all the eventfds: a completion posted after the reset signals its eventfd and
//! wakes the sleeper, and one posted before it is found by the second pass. A CQ that another
//! thread owns during that pass cannot be looked at: the pass asks its owner to signal the
//! eventfd when it lets go if the CQ holds completions (a Dekker pair, see the `wait` module).
//! No wake-up is lost.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::handle::{look, reap_locked, Completion, Ring};
use crate::ring::RingShared;
use crate::sys::Epoll;
use crate::wait::{Look, Owned};
use crate::IoBuf;

/// A set of completion queues, from one adapter or several, reaped together.
///
/// In single-issuer mode ([`Config::single_issuer`](crate::Config::single_issuer)) a thread
/// reaps only the CQs it owns ([`Ring::bind_owner`]): [`reap`](Self::reap) skips the
/// others, as CQs another reaper holds are, and [`wait`](Self::wait) refuses a set with a CQ that
/// another thread owns (it would reset that CQ's eventfd and steal its owner's wake-up).
pub struct CqSet<B> {
    rings: Vec<Arc<RingShared<B>>>,
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
    pub fn new(cqs: impl IntoIterator<Item = Ring<B>>) -> Result<Self, Error> {
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

    /// One look of a wait (see the `wait` module): a round-robin pass like [`reap`](Self::reap)
    /// that skips the CQs other threads own, or asks their owners to signal the eventfd, as
    /// `owned` says.
    fn look(&self, out: &mut Vec<Completion<B>>, max: usize, owned: Owned) -> Result<Look, Error> {
        let n = self.rings.len();
        let mut all = Look::default();
        if n == 0 {
            return Ok(all);
        }
        // Relaxed: spreads starting points only (module docs).
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if all.got >= max {
                break;
            }
            let one = look(&self.rings[(start + k) % n], out, max - all.got, owned)?;
            all.got += one.got;
            all.stuck |= one.stuck;
        }
        Ok(all)
    }

    /// Reaps; if there is nothing, sleeps on the CQs' eventfds until completions arrive or
    /// `timeout` passes. Returns how many were reaped (0 on timeout).
    ///
    /// # Errors
    ///
    /// As for [`Ring::reap`](crate::Ring::reap); in single-issuer mode,
    /// [`Error::NotOwner`] at once if the set holds a CQ that is not bound to the calling thread.
    pub fn wait(
        &self,
        out: &mut Vec<Completion<B>>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        if self
            .rings
            .iter()
            .any(|r| r.single_issuer && !r.owned_here())
        {
            return Err(Error::NotOwner);
        }
        crate::wait::reap_or_sleep(
            timeout,
            |owned| self.look(out, max, owned),
            || {
                // Every CQ of the set is this thread's to reap (checked above), so no other
                // owner sleeps on these eventfds.
                for r in &self.rings {
                    crate::sys::eventfd_drain(&r.eventfd);
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
