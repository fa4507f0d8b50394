//! The retiring ring of a resized completion queue (see `adapter::resize` for the design).
//!
//! After a resize, the ring state holds two io_urings: the current one, which takes every new
//! operation, and the retiring one, which only completes what was submitted to it. Each
//! in-flight operation carries the epoch of the ring it went to. The retiring ring is swapped in
//! for the current one (`swap_retiring`) whenever it is served, so the ordinary submit and reap
//! code runs on it unchanged, always with the ring owned.

use io_uring::{opcode, squeue::Entry, IoUring};

use super::{Pending, RingState, ENTER_SQ_WAIT};
use crate::cq::Completion;
use crate::error::Error;
use crate::ops::Side;
use crate::tables::WqId;

/// The io_uring a resize replaced. It takes no new operations, but the ones submitted to it
/// complete on its CQ, so it is reaped until the last one's final CQE, and then closed.
pub(super) struct Retiring {
    pub(super) uring: IoUring,
    /// Its SQ's pending SQEs (none once it is replaced: it was submitted first).
    pub(super) pending: Pending,
    pub(super) overflow_suspect: bool,
    pub(super) dropped_seen: u32,
    /// Its operations still waiting for their final CQE.
    pub(super) in_flight: usize,
    /// The fixed-file slots carried from it to the ring that replaced it.
    pub(super) carried: Vec<u32>,
}

impl<B> RingState<B> {
    pub(super) fn epoch_of(&self, ud: u32) -> u32 {
        self.slab
            .get(ud)
            .expect("find returns live entries")
            .epoch()
    }

    /// Cancels operation `victim`, which went to the retiring ring: a cancel by `user_data`
    /// only finds operations of the ring it is submitted to. Its SQE goes straight into the
    /// retiring ring's SQ (which nothing else fills any more) and is submitted at once.
    #[cold]
    pub(super) fn cancel_on_retiring(&mut self, wq: WqId, side: Side, cookie: u64, victim: u64) {
        let epoch = self.epoch_of(victim as u32);
        let ud = self.slab.insert(wq, side, cookie, None, epoch, None);
        let entry = opcode::AsyncCancel::new(victim).build().user_data(ud);
        self.swap_retiring();
        let pushed = self.push_now(&entry);
        self.swap_retiring();
        if !pushed {
            drop(self.slab.finish(ud as u32).and_then(|e| e.release()));
            self.local
                .push_back((Completion::failed(wq, cookie, -libc::EBUSY), side));
            return;
        }
        if let Some(r) = self.retiring.as_mut() {
            r.in_flight += 1;
        }
    }

    /// Pushes `entry`, which points at no memory, straight into the SQ and hands it to the
    /// kernel, waiting for room if the SQ is full (`IORING_ENTER_SQ_WAIT` with SQPOLL). Used on
    /// the retiring ring (swapped in), where nothing is pending.
    ///
    /// `IORING_ENTER_SQ_WAIT` returns once the SQPOLL thread has taken SQEs, which can be
    /// before it publishes the SQ head that user space reads: the SQ may still look full then,
    /// so the push is tried again, a bounded number of times.
    #[cold]
    pub(super) fn push_now(&mut self, entry: &Entry) -> bool {
        const ATTEMPTS: usize = 1000;
        for attempt in 0..ATTEMPTS {
            if attempt > 1 {
                std::thread::yield_now();
            }
            // SAFETY: the SQE points at no memory.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                if let Err(e) = self.flush_sq() {
                    tracing::warn!(error = %e, "cancel on the retiring ring not submitted yet; the next reap retries");
                }
                return true;
            }
            let made_room = match self.flush_sq() {
                Ok(()) if self.sqpoll => self.enter(0, ENTER_SQ_WAIT),
                other => other,
            };
            if made_room.is_err() {
                return false;
            }
        }
        false
    }

    /// Swaps the retiring ring in for the current one (and back), so that the submit and reap
    /// code, which works on `self.uring`, serves it too.
    pub(super) fn swap_retiring(&mut self) {
        if let Some(r) = self.retiring.as_mut() {
            std::mem::swap(&mut self.uring, &mut r.uring);
            std::mem::swap(&mut self.pending, &mut r.pending);
            std::mem::swap(&mut self.overflow_suspect, &mut r.overflow_suspect);
            std::mem::swap(&mut self.dropped_seen, &mut r.dropped_seen);
        }
    }

    /// Makes `uring` (a larger CQ, set up like the current ring) the current ring; the current
    /// one retires. Whatever was pending is submitted to the old ring first, then every occupied
    /// fixed-file slot of the old ring, and each slot of `files`, is copied into `uring`
    /// (`carry::carry_files`) before any operation can reach it.
    ///
    /// # Errors
    ///
    /// [`Error::ResizeDraining`] while an earlier resize's ring still has operations in flight,
    /// [`Error::CqTooSmall`] when more operations are in flight than `uring`'s CQ holds,
    /// [`Error::Sys`] when the pending SQEs cannot be submitted or the files cannot be carried
    /// (then the old ring stays current, and `uring` is closed with whatever reached it).
    pub(crate) fn replace_uring(&mut self, mut uring: IoUring, files: &[u32]) -> Result<(), Error> {
        self.swap_retiring();
        let drained = self.retiring_drained();
        self.swap_retiring();
        if drained {
            self.retire();
        }
        if let Some(r) = &self.retiring {
            return Err(Error::ResizeDraining {
                in_flight: r.in_flight,
            });
        }
        let entries = uring.params().cq_entries() as usize;
        if self.in_flight() > entries {
            return Err(Error::CqTooSmall {
                entries: entries as u32,
                in_flight: self.in_flight(),
            });
        }
        self.submit().map_err(|source| Error::Sys {
            what: "io_uring_enter (submit before a resize)",
            source,
        })?;
        let carried = self.carry_files(&mut uring, files)?;
        tracing::debug!(
            carried = carried.len(),
            "fixed files carried to the new ring"
        );
        let pending = Pending::for_ring(&uring).map_err(|source| Error::Sys {
            what: "mmap of the new ring's SQ",
            source,
        })?;
        let old = std::mem::replace(&mut self.uring, uring);
        let old_pending = std::mem::replace(&mut self.pending, pending);
        self.retiring = Some(Retiring {
            uring: old,
            pending: old_pending,
            overflow_suspect: std::mem::take(&mut self.overflow_suspect),
            dropped_seen: std::mem::take(&mut self.dropped_seen),
            in_flight: self.in_flight(),
            carried,
        });
        self.epoch = (self.epoch + 1) % super::slab::EPOCHS;
        self.room = 0;
        Ok(())
    }

    /// With the retiring ring swapped in: whether it has nothing left to deliver (no operation
    /// in flight, an empty CQ, no overflow pending).
    pub(super) fn retiring_drained(&mut self) -> bool {
        self.retiring.as_ref().is_some_and(|r| r.in_flight == 0)
            && self.uring.completion().is_empty()
            && !self.overflow_suspect
    }

    /// Closes the retiring ring, warning about fixed files left on it (`carry::report_stranded`).
    pub(super) fn retire(&mut self) {
        if let Some(r) = self.retiring.take() {
            super::carry::report_stranded(&r.uring, &r.carried);
        }
        tracing::debug!("the ring a resize replaced is drained and closed");
    }
}
