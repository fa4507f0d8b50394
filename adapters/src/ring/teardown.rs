//! What a dropped ring does with the operations still in flight: it cancels them and waits (up
//! to a second) for their final CQEs before their buffers are dropped, so the kernel never
//! writes into a buffer that went back to its pool; a buffer whose operation outlives the wait
//! is leaked, not freed. A single-issuer ring dropped off its owner thread can do neither, and
//! leaks.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};

use super::io_ring::IoRing;
use super::slab::Slab;
use super::{RingShared, RingState, CANCEL_ALL, MESSAGE_BIT};
use crate::ops::Sqe;
use crate::stats::Counters;

/// How long a dropped ring waits for the final CQEs of its operations.
const FINAL_CQE_PATIENCE: Duration = Duration::from_secs(1);

impl<B> Drop for RingState<B> {
    fn drop(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        cancel_all(&mut self.io, &self.counters);
        if let Some(r) = self.retiring.as_mut() {
            cancel_all(&mut r.io, &self.counters);
        }
        self.room = 0;
        let deadline = Instant::now() + FINAL_CQE_PATIENCE;
        while self.in_flight() > 0 && Instant::now() < deadline {
            collect_final(&mut self.io, &mut self.slab);
            if let Some(r) = self.retiring.as_mut() {
                collect_final(&mut r.io, &mut self.slab);
            }
        }
        let stuck = self.in_flight();
        if stuck > 0 {
            tracing::error!(stuck, "operations outlived the ring; leaking their buffers");
            self.slab.leak_all();
        }
    }
}

/// Asks `io` to cancel everything it has in flight.
fn cancel_all(io: &mut IoRing, counters: &Counters) {
    let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
    if io.room() > 0 {
        io.pending.push(&Sqe::from_entry(cancel), CANCEL_ALL);
    }
    if let Err(e) = io.submit(counters) {
        tracing::warn!(error = %e, "cancel at ring drop could not be submitted");
    }
}

/// Waits a little for `io`'s CQEs and frees the slab entries whose final CQE came.
fn collect_final<B>(io: &mut IoRing, slab: &mut Slab<B>) {
    let ts = types::Timespec::new().nsec(10_000_000);
    let args = types::SubmitArgs::new().timespec(&ts);
    let _ = io.uring.submitter().submit_with_args(1, &args);
    let cqes: Vec<_> = io.uring.completion().collect();
    for cqe in cqes {
        let ud = cqe.user_data();
        if ud & (MESSAGE_BIT | CANCEL_ALL) == 0 && !cqueue::more(cqe.flags()) {
            drop(slab.finish(ud as u32).and_then(|e| e.release()));
        }
    }
}

impl<B> Drop for RingShared<B> {
    /// In single-issuer mode, a ring dropped off its owner thread cannot submit its cancel nor
    /// wait for the final CQEs (the kernel refuses both there): the buffers of operations in
    /// flight are leaked, and the kernel cancels the operations when the ring's fd closes. A
    /// ring that was never bound frees its never-submitted posts.
    fn drop(&mut self) {
        if !self.single_issuer || self.owned_here() {
            return;
        }
        // Relaxed: `&mut self`, nobody else reaches the ring.
        let bound = self.owner.load(Ordering::Relaxed) != 0;
        let s = self.combiner.get_mut();
        if bound {
            s.abandon();
        } else {
            s.forget_unsubmitted();
        }
    }
}

impl<B> RingState<B> {
    /// Leaks the buffers of every operation in flight (see [`RingShared`]'s drop).
    #[cold]
    fn abandon(&mut self) {
        let stuck = self.in_flight();
        if stuck > 0 {
            tracing::error!(
                stuck,
                "a single-issuer ring was dropped off its owner thread; leaking the buffers of its \
                 operations in flight (the kernel cancels them when the ring closes)"
            );
            self.slab.leak_all();
        }
    }

    /// Frees the operations posted to a ring that was never enabled: none reached the kernel.
    #[cold]
    fn forget_unsubmitted(&mut self) {
        let pending = self.io.pending.user_data();
        self.io.pending.discard();
        for ud in pending {
            drop(self.slab.finish(ud as u32).and_then(|e| e.release()));
        }
    }
}
