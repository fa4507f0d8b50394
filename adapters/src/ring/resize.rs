//! The ring side of a completion-queue resize (see `adapter::resize` for the design and the
//! adapter's side): the io_uring a resize replaced *retires*.
//!
//! After a resize, the ring state holds two io_urings: the current one, which takes every new
//! operation, and the retiring one ([`Retiring`]), which only completes what was submitted to
//! it. Each in-flight operation is stamped with the serial of the io_uring it went to
//! (`RingState::uring_serial`). Every reap serves the retiring io_uring first (`reap`), through
//! the same slab, until its last operation's final CQE has come and its CQ is empty; then it is
//! closed ([`RingState::retire`]). A cancel of an operation that went to the retiring io_uring
//! is submitted there ([`RingState::cancel_on_retiring`]), since a cancel by `user_data` only
//! finds operations of its own ring. The fixed files are carried over before the swap
//! ([`carry`]).

pub(super) mod carry;

use std::mem::ManuallyDrop;

use io_uring::{opcode, IoUring};

use super::io_ring::IoRing;
use super::shared::{dup_ring_fd, RingShared};
use super::{Post, RingState};
use crate::error::Error;
use crate::handle::Completion;
use crate::ops::Side;
use crate::tables::WqId;
use regio_sync::CombinerGuard;

/// The io_uring a resize replaced. It takes no new operations, but the ones submitted to it
/// complete on its CQ, so it is reaped until the last one's final CQE, and then closed.
pub(super) struct Retiring {
    /// It has nothing pending: everything pending was submitted before the swap.
    pub io: IoRing,
    /// Its operations still waiting for their final CQE.
    pub in_flight: usize,
    /// The fixed-file slots carried from it to the io_uring that replaced it.
    pub carried: Vec<u32>,
}

impl<B> RingShared<B> {
    /// Makes `uring` the current io_uring, carrying the fixed files over, `files` among them
    /// (see [`RingState::replace_uring`]), with the ring owned through `g`. The caller holds the
    /// tables' write lock, which serialises fd changes with registrations.
    pub(crate) fn replace_uring(
        &self,
        g: &mut CombinerGuard<'_, RingState<B>, Post<B>>,
        uring: IoUring,
        files: &[u32],
    ) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        let fd = uring.as_raw_fd();
        let entries = uring.params().cq_entries();
        let target = dup_ring_fd(fd).map_err(|source| Error::Sys {
            what: "dup of the new ring's fd",
            source,
        })?;
        g.with(|s| s.replace_uring(uring, files))?;
        self.set_current(fd, entries, target);
        Ok(())
    }
}

impl<B> RingState<B> {
    /// The serial of the io_uring that the live operation `ud` went to.
    pub(super) fn serial_of(&self, ud: u64) -> u32 {
        self.slab
            .get(ud as u32)
            .expect("find returns live entries")
            .uring_serial()
    }

    /// Cancels operation `victim`, which went to the retiring io_uring: a cancel by `user_data`
    /// only finds operations of the ring it is submitted to. Its SQE goes straight into the
    /// retiring io_uring's SQ (which nothing else fills any more) and is submitted at once.
    #[cold]
    pub(super) fn cancel_on_retiring(&mut self, wq: WqId, side: Side, cookie: u64, victim: u64) {
        let serial = self.serial_of(victim);
        let (buf, keep) = (ManuallyDrop::new(None), ManuallyDrop::new(None));
        let ud = self.slab.insert(wq, side, cookie, buf, serial, keep);
        let entry = opcode::AsyncCancel::new(victim).build().user_data(ud);
        let pushed = match self.retiring.as_mut() {
            Some(r) => {
                let pushed = r.io.push_now(&self.counters, &entry);
                r.in_flight += usize::from(pushed);
                pushed
            }
            None => false,
        };
        if !pushed {
            drop(self.slab.finish(ud as u32).and_then(|e| e.release()));
            self.local
                .push_back((Completion::failed(wq, cookie, -libc::EBUSY), side));
        }
    }

    /// Makes `uring` (a larger CQ, set up like the current io_uring) the current one; the
    /// current one retires. Whatever was pending is submitted to the old io_uring first, then
    /// every occupied fixed-file slot of the old one, and each slot of `files`, is copied into
    /// `uring` ([`carry`]) before any operation can reach it.
    ///
    /// # Errors
    ///
    /// [`Error::ResizeDraining`] while an earlier resize's io_uring still has operations in
    /// flight, [`Error::CqTooSmall`] when more operations are in flight than `uring`'s CQ
    /// holds, [`Error::Sys`] when the pending SQEs cannot be submitted or the files cannot be
    /// carried (then the old io_uring stays current, and `uring` is closed with whatever
    /// reached it).
    pub(crate) fn replace_uring(&mut self, mut uring: IoUring, files: &[u32]) -> Result<(), Error> {
        if self.retiring_drained() {
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
        let mut io = IoRing::new(uring).map_err(|source| Error::Sys {
            what: "mmap of the new ring's SQ",
            source,
        })?;
        io.set_publish_every(self.io.publish_every());
        let old = std::mem::replace(&mut self.io, io);
        self.retiring = Some(Retiring {
            io: old,
            in_flight: self.in_flight(),
            carried,
        });
        self.uring_serial = (self.uring_serial + 1) % super::slab::URING_SERIALS;
        self.room = 0;
        Ok(())
    }

    /// Whether a retiring io_uring exists and has nothing left to deliver (no operation in
    /// flight, an empty CQ, no overflow pending).
    fn retiring_drained(&mut self) -> bool {
        self.retiring.as_mut().is_some_and(|r| {
            r.in_flight == 0 && r.io.uring.completion().is_empty() && !r.io.cq_overflow()
        })
    }

    /// Closes the retiring io_uring, warning about fixed files left on it
    /// ([`carry::report_stranded`]).
    pub(super) fn retire(&mut self) {
        if let Some(r) = self.retiring.take() {
            carry::report_stranded(&r.io.uring, &r.carried);
        }
        tracing::debug!("the ring a resize replaced is drained and closed");
    }
}
