//! [`IoRing`]: one io_uring as a ring state drives it: the io-uring crate's handle, the SQEs
//! posted since the last submit ([`Pending`]), and what the reap knows of its CQ.
//!
//! A ring state holds one for its current io_uring and, after a resize, one for the io_uring
//! that retires (`resize`); submit and reap work on either through the same methods.

use std::io;

use io_uring::IoUring;

use super::cq_map::CqMap;
use super::pending::Pending;
use super::sq_flags::SqFlags;
use super::{ENTER_SQ_WAIT, ENTER_SQ_WAKEUP};
use crate::stats::Counters;

/// One io_uring, its pending SQEs, and the state of its CQ.
pub(super) struct IoRing {
    pub uring: IoUring,
    /// SQEs posted since the last submit.
    pub pending: Pending,
    /// The CQ read in place, without SQPOLL (with it, a reap copies CQEs out first: see
    /// `reap::drain_cq`).
    pub cq_map: Option<CqMap>,
    sqpoll: bool,
    /// With SQPOLL, the cap on the room counted for posts, after which the next post publishes
    /// what is staged early ([`crate::Config::sqpoll_publish_every`]); 0: no early publishing
    /// (always without SQPOLL).
    publish_every: u32,
    /// Where the kernel says that the CQ overflowed.
    sq_flags: SqFlags,
    /// The kernel's count of dropped CQEs when it was last read.
    pub dropped_seen: u32,
}

impl IoRing {
    /// Drives `uring`, which has nothing pending yet (and publishes nothing early: see
    /// [`set_publish_every`](Self::set_publish_every)).
    pub fn new(uring: IoUring) -> io::Result<Self> {
        let pending = Pending::for_ring(&uring)?;
        let sqpoll = uring.params().is_setup_sqpoll();
        let sq_flags = SqFlags::new(&uring)?;
        let cq_map = if sqpoll {
            None
        } else {
            Some(CqMap::new(&uring)?)
        };
        Ok(Self {
            sqpoll,
            publish_every: 0,
            cq_map,
            uring,
            pending,
            sq_flags,
            dropped_seen: 0,
        })
    }

    /// Whether a kernel thread polls the SQ.
    pub fn sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// Whether the kernel holds CQEs in its overflow list, which an `io_uring_enter` with
    /// `IORING_ENTER_GETEVENTS` moves into the CQ (see `sq_flags`).
    #[inline]
    pub fn cq_overflow(&self) -> bool {
        self.sq_flags.cq_overflow()
    }

    /// Free SQ slots beside the pending SQEs.
    pub fn room(&mut self) -> usize {
        self.pending.room(&mut self.uring)
    }

    /// Publishes early every `every` staged SQEs from now on, with SQPOLL (0: never; without
    /// SQPOLL, never whatever `every`).
    pub fn set_publish_every(&mut self, every: u32) {
        self.publish_every = if self.sqpoll { every } else { 0 };
    }

    /// The early-publishing cap of this io_uring (0: none).
    pub fn publish_every(&self) -> u32 {
        self.publish_every
    }

    /// The room for the next posts, for a post or chain of `want` SQEs that found the room it
    /// knew used up: [`room`](Self::room); when publishing early (SQPOLL and
    /// [`publish_every`](Self::publish_every)), at most that (or `want`, if more), after the
    /// SQEs staged so far were published (see `pending`). The caller is between posts, never
    /// in the middle of a linked chain.
    pub fn post_room(&mut self, want: usize) -> usize {
        if self.publish_every == 0 {
            return self.room();
        }
        // SAFETY: every pending SQE was built by `submit::enqueue` (or points at no memory),
        // and points only at memory its slab entry keeps alive until the final CQE.
        unsafe { self.pending.publish_early(&mut self.uring) };
        self.room().min(want.max(self.publish_every as usize))
    }

    /// Hands the pending SQEs to the kernel: with SQPOLL, a wake-up only when the thread sleeps;
    /// without, one `io_uring_enter`.
    #[inline]
    pub fn submit(&mut self, counters: &Counters) -> io::Result<()> {
        let n = self.pending.len();
        if n == 0 {
            return Ok(());
        }
        self.submit_pending(n, counters)
    }

    /// [`submit`](Self::submit) of `n > 0` pending SQEs.
    fn submit_pending(&mut self, n: u32, counters: &Counters) -> io::Result<()> {
        // SAFETY: every pending SQE was built by `submit::enqueue` (or points at no memory), and
        // points only at memory its slab entry keeps alive until the final CQE.
        unsafe { self.pending.publish(&mut self.uring) };
        Counters::add_owned(&counters.submitted, u64::from(n));
        self.flush_sq(counters)
    }

    /// Hands the kernel the SQEs already in the SQ (not the pending ones): a wake-up for a
    /// sleeping SQPOLL thread, or one `io_uring_enter`.
    pub fn flush_sq(&mut self, counters: &Counters) -> io::Result<()> {
        if self.sqpoll {
            // `need_wakeup` issues the SeqCst fence that pairs with the kernel thread's barrier
            // before it sleeps, after our tail store (made when the SQ handle last dropped).
            if self.uring.submission().need_wakeup() {
                return self.enter(counters, 0, ENTER_SQ_WAKEUP);
            }
            return Ok(());
        }
        // Everything in the SQ, not just the last batch: SQEs an earlier enter left behind (it
        // may submit fewer than asked) go in first.
        let queued = self.uring.submission().len() as u32;
        if queued == 0 {
            return Ok(());
        }
        self.enter(counters, queued, 0)
    }

    /// One `io_uring_enter`, retried on `EINTR`; `EBUSY` (the CQ overflowed: the kernel takes
    /// no SQEs until it is reaped) is not an error.
    pub fn enter(&mut self, counters: &Counters, to_submit: u32, flags: u32) -> io::Result<()> {
        Counters::add_owned(&counters.enters, 1);
        loop {
            // SAFETY: no extra argument is passed; the SQEs handed over were built from memory
            // the slab keeps alive until their final CQE.
            let r = unsafe {
                self.uring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, 0, flags, None)
            };
            match r {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                other => return other.map(drop),
            }
        }
    }

    /// Pushes `entry`, which points at no memory, straight into the SQ and hands it to the
    /// kernel, waiting for room if the SQ is full (`IORING_ENTER_SQ_WAIT` with SQPOLL). For an
    /// io_uring with nothing pending (a retiring one). Returns whether it was pushed.
    ///
    /// `IORING_ENTER_SQ_WAIT` returns once the SQPOLL thread has taken SQEs, which can be
    /// before it publishes the SQ head that user space reads: the SQ may still look full then,
    /// so the push is tried again, a bounded number of times.
    #[cold]
    pub fn push_now(&mut self, counters: &Counters, entry: &io_uring::squeue::Entry) -> bool {
        const ATTEMPTS: usize = 1000;
        for attempt in 0..ATTEMPTS {
            if attempt > 1 {
                std::thread::yield_now();
            }
            // SAFETY: the SQE points at no memory.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                if let Err(e) = self.flush_sq(counters) {
                    tracing::warn!(error = %e, "an SQE on the retiring ring was not submitted yet; the next reap retries");
                }
                return true;
            }
            let made_room = match self.flush_sq(counters) {
                Ok(()) if self.sqpoll => self.enter(counters, 0, ENTER_SQ_WAIT),
                other => other,
            };
            if made_room.is_err() {
                return false;
            }
        }
        false
    }
}
