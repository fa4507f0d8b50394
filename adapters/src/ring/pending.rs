//! [`Pending`]: where a ring's SQEs wait between their post and the next submit.
//!
//! With SQPOLL, storing the SQ tail *is* submitting, and a deferred batch must not reach the
//! kernel before its commit; SQEs are staged in a private buffer ([`Staging`]) and copied into
//! the SQ with one tail store at submit. Writing them straight into the SQ instead was measured
//! slower there: each post then writes cache lines the polling kernel thread shares. Without
//! SQPOLL nothing reads the SQ until `io_uring_enter`, so SQEs go straight into their SQ slots
//! ([`SqMap`]), written once, and submit only stores the tail.
//!
//! Either way a post writes its SQE the same way, through one cursor: slot `next & mask` of the
//! area's slots (the staging buffer, or the SQE array). Only the room, the submit and the rare
//! paths ask which area it is.

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
    /// SQEs are staged.
    next: u32,
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

    /// How many SQEs are pending.
    #[inline]
    pub fn len(&self) -> u32 {
        match &self.area {
            Area::Staged(_) => self.next,
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
                let mut sq = uring.submission();
                // SAFETY: the caller's promise about the SQEs; the room checks before each
                // push kept staged + queued within the SQ's capacity.
                let pushed = unsafe { sq.push_multiple(s.entries(self.next as usize)) };
                debug_assert!(pushed.is_ok(), "room was checked when staging");
                drop(sq); // publishes the tail
                self.next = 0;
            }
            Area::InPlace(m) => m.publish(self.next),
        }
    }

    /// The `user_data` of each pending SQE.
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

    /// Drops the pending SQEs without submitting them.
    pub fn discard(&mut self) {
        self.next = match &self.area {
            Area::Staged(_) => 0,
            Area::InPlace(m) => m.discard(),
        };
    }
}
