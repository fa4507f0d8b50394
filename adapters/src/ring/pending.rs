//! [`Pending`]: where a ring's SQEs wait between their post and the next submit.
//!
//! With SQPOLL, storing the SQ tail *is* submitting, a deferred batch's SQEs wait for its commit
//! (unless it publishes early: see below), and a chain must reach the kernel thread whole; SQEs
//! are staged in a private buffer ([`Staging`]) and copied into the SQ a group at a time, each
//! with one tail store. Writing them straight into the SQ one by one was measured slower there:
//! each post then writes cache lines the polling kernel thread shares. Without SQPOLL nothing
//! reads the SQ until `io_uring_enter`, so SQEs go straight into their SQ slots ([`SqMap`]),
//! written once, and submit only stores the tail.
//!
//! Either way a post writes its SQE the same way, through one cursor: slot `next & mask` of the
//! area's slots (the staging buffer, or the SQE array). Only the room, the submit and the rare
//! paths ask which area it is.
//!
//! With SQPOLL and [`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every) set,
//! the staged SQEs also go to the kernel thread before the submit, that many at a time
//! ([`Pending::publish_early`]), so that the thread works on the first ones while a deferred
//! batch stages the next: a round trip's staging and the kernel's work overlap instead of
//! following each other. This costs the posts nothing: the ring caps the room it counts down
//! per post at that number (see `IoRing::post_room`), and the post that finds it used up,
//! before it stages anything, publishes what is staged and counts the room again. So SQEs are
//! published only between posts, never inside a chain (whose room is looked at once, before its
//! first member), and a chain reaches the SQ in one tail store. Without SQPOLL there is nothing
//! to overlap (nothing reads the SQ before `io_uring_enter`), and nothing is published early.

use std::io;
use std::ptr::NonNull;

use io_uring::IoUring;

use super::sq::SqMap;
use super::staging::Staging;
use crate::ops::Sqe;

/// The SQEs posted since the last submit, staged or written in place.
pub(super) struct Pending {
    /// The area's slots: the SQE numbered `next` goes to `slots[next & mask]`.
    slots: NonNull<Sqe>,
    mask: u32,
    /// The next SQE's number: in place, the tail the next publish stores; staged, how many
    /// SQEs are staged (not published yet).
    next: u32,
    /// Staged: how many SQEs were published early since the last submit (0 in place).
    early: u32,
    area: Area,
}

/// Where the pending SQEs are.
enum Area {
    Staged(Staging),
    InPlace(SqMap),
}

// SAFETY: `slots` points into the area this value owns (the staging buffer or the SQ mapping),
// which moves with it; only the ring's owner uses it, through `&mut`.
unsafe impl Send for Pending {}

impl Pending {
    /// Staged with SQPOLL, in place without.
    pub fn for_ring(uring: &IoUring) -> io::Result<Self> {
        let params = uring.params();
        let (area, next) = if params.is_setup_sqpoll() {
            (Area::Staged(Staging::new(params.sq_entries() as usize)), 0)
        } else {
            let map = SqMap::new(uring)?;
            let next = map.published();
            (Area::InPlace(map), next)
        };
        let (slots, mask) = match &area {
            Area::Staged(s) => s.slots(),
            Area::InPlace(m) => m.slots(),
        };
        Ok(Self {
            slots,
            mask,
            next,
            early: 0,
            area,
        })
    }

    /// Free SQ slots beside the pending SQEs.
    pub fn room(&mut self, uring: &mut IoUring) -> usize {
        match &mut self.area {
            Area::Staged(_) => {
                let sq = uring.submission();
                sq.capacity() - sq.len() - self.next as usize
            }
            Area::InPlace(m) => m.room(&mut self.next),
        }
    }

    /// Adds `sqe` with `user_data` as its `user_data` and returns its copy, to be finished in
    /// place. The caller checked the room.
    #[inline(always)]
    pub fn push(&mut self, sqe: &Sqe, user_data: u64) -> &mut Sqe {
        let slot = (self.next & self.mask) as usize;
        // SAFETY: `slot <= mask`, and the area has `mask + 1` slots (the staging buffer, or the
        // SQE array), which live as long as `self`. The caller's room check means the slot
        // holds nothing still wanted: staged, fewer SQEs than the buffer holds are pending, so
        // `next` is below its size and no staged SQE is overwritten; in place, the kernel has
        // consumed whatever was there (the head passed it) and does not read it again before
        // the tail is published past it. `&mut self` makes this the only reference.
        let place = unsafe { &mut *self.slots.as_ptr().add(slot) };
        sqe.copy_to(place, user_data);
        self.next = self.next.wrapping_add(1);
        place
    }

    /// How many SQEs are pending: posted since the last submit (staged, those published early
    /// included: the submit still has to wake a sleeping SQPOLL thread for them).
    #[inline]
    pub fn len(&self) -> u32 {
        match &self.area {
            Area::Staged(_) => self.early.saturating_add(self.next),
            Area::InPlace(m) => m.pending(self.next),
        }
    }

    /// Puts the pending SQEs in the SQ and publishes its tail.
    ///
    /// # Safety
    ///
    /// Every pending SQE must point only at memory that stays valid until its final CQE.
    pub unsafe fn publish(&mut self, uring: &mut IoUring) {
        match &mut self.area {
            Area::Staged(s) => {
                // SAFETY: the caller's promise.
                unsafe { push_staged(s, self.next, uring) };
                self.next = 0;
                self.early = 0;
            }
            Area::InPlace(m) => m.publish(self.next),
        }
    }

    /// Staged, puts the SQEs staged since the last publish (if any) in the SQ and publishes its
    /// tail, with no system call: a polling SQPOLL thread takes them at once, a sleeping one at
    /// the next submit, which wakes it. In place, nothing (see the module docs).
    ///
    /// The caller must be between posts, not in the middle of a linked chain (the last SQE
    /// staged must end one, or be no member), or the kernel would see the chain cut in two.
    ///
    /// # Safety
    ///
    /// As [`publish`](Self::publish).
    pub unsafe fn publish_early(&mut self, uring: &mut IoUring) {
        if let Area::Staged(s) = &self.area {
            if self.next > 0 {
                // SAFETY: the caller's promise.
                unsafe { push_staged(s, self.next, uring) };
                self.early = self.early.saturating_add(self.next);
                self.next = 0;
            }
        }
    }

    /// The `user_data` of each pending SQE not in the SQ yet.
    pub fn user_data(&self) -> Vec<u64> {
        match &self.area {
            Area::Staged(s) => s
                .staged(self.next as usize)
                .iter()
                .map(|sqe| sqe.user_data)
                .collect(),
            Area::InPlace(m) => m.pending_user_data(self.next),
        }
    }

    /// Drops the pending SQEs not in the SQ yet (those published early stay, for the next
    /// submit to wake the kernel thread for).
    pub fn discard(&mut self) {
        self.next = match &self.area {
            Area::Staged(_) => 0,
            Area::InPlace(m) => m.discard(),
        };
    }
}

/// Puts the first `len` staged SQEs of `staging` in `uring`'s SQ and publishes its tail.
///
/// # Safety
///
/// Every one of them must point only at memory that stays valid until its final CQE.
unsafe fn push_staged(staging: &Staging, len: u32, uring: &mut IoUring) {
    let mut sq = uring.submission();
    // SAFETY: the caller's promise about the SQEs; the room checks before each push kept the
    // SQEs staged, plus those queued, within the SQ's capacity.
    let pushed = unsafe { sq.push_multiple(staging.entries(len as usize)) };
    debug_assert!(pushed.is_ok(), "room was checked when staging");
    drop(sq); // publishes the tail (a Release store, after the SQEs)
}
