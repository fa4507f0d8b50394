//! [`Pending`]: where a ring's SQEs wait between their post and the next submit.
//!
//! With SQPOLL, storing the SQ tail *is* submitting, and a deferred batch must not reach the
//! kernel before its commit; SQEs are staged in a private buffer ([`Staging`]) and copied into
//! the SQ with one tail store at submit. Writing them straight into the SQ instead was measured
//! slower there: each post then writes cache lines the polling kernel thread shares. Without
//! SQPOLL nothing reads the SQ until `io_uring_enter`, so SQEs go straight into their SQ slots
//! ([`SqMap`]), written once, and submit only stores the tail.

use std::io;

use io_uring::IoUring;

use super::sq::SqMap;
use super::staging::Staging;
use crate::ops::Sqe;

/// The SQEs posted since the last submit, staged or written in place.
pub(super) enum Pending {
    Staged(Staging),
    InPlace(SqMap),
}

impl Pending {
    /// Staged with SQPOLL, in place without.
    pub fn for_ring(uring: &IoUring) -> io::Result<Self> {
        let params = uring.params();
        Ok(if params.is_setup_sqpoll() {
            Self::Staged(Staging::new(params.sq_entries() as usize))
        } else {
            Self::InPlace(SqMap::new(uring)?)
        })
    }

    /// Free SQ slots beside the pending SQEs.
    pub fn room(&mut self, uring: &mut IoUring) -> usize {
        match self {
            Self::Staged(s) => {
                let sq = uring.submission();
                sq.capacity() - sq.len() - s.len()
            }
            Self::InPlace(m) => m.room(),
        }
    }

    /// Adds `sqe` with `user_data` as its `user_data` and returns its copy, to be finished in
    /// place. The caller checked the room.
    #[inline(always)]
    pub fn push(&mut self, sqe: &Sqe, user_data: u64) -> &mut Sqe {
        match self {
            Self::Staged(s) => s.push(sqe, user_data),
            Self::InPlace(m) => m.push(sqe, user_data),
        }
    }

    /// How many SQEs are pending.
    #[inline]
    pub fn len(&self) -> u32 {
        match self {
            Self::Staged(s) => s.len() as u32,
            Self::InPlace(m) => m.pending(),
        }
    }

    /// Puts the pending SQEs in the SQ and publishes its tail.
    ///
    /// # Safety
    ///
    /// Every pending SQE must point only at memory that stays valid until its final CQE.
    pub unsafe fn publish(&mut self, uring: &mut IoUring) {
        match self {
            Self::Staged(s) => {
                let mut sq = uring.submission();
                // SAFETY: the caller's promise about the SQEs; the room checks before each
                // push kept staged + queued within the SQ's capacity.
                let pushed = unsafe { sq.push_multiple(s.entries()) };
                debug_assert!(pushed.is_ok(), "room was checked when staging");
                drop(sq); // publishes the tail
                s.clear();
            }
            Self::InPlace(m) => m.publish(),
        }
    }

    /// The `user_data` of each pending SQE.
    pub fn user_data(&self) -> Vec<u64> {
        match self {
            Self::Staged(s) => s.iter().map(|sqe| sqe.user_data).collect(),
            Self::InPlace(m) => m.pending_user_data(),
        }
    }

    /// Drops the pending SQEs without submitting them.
    pub fn discard(&mut self) {
        match self {
            Self::Staged(s) => s.clear(),
            Self::InPlace(m) => m.discard(),
        }
    }
}
