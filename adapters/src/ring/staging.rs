//! The staging area: SQEs built since the last submit, in a buffer the size of the SQ.
//!
//! They reach the SQ together, with one tail store, so the SQPOLL thread takes a batch in one
//! pass instead of one SQE per pass. They cannot be written into the SQ as they are built: with
//! SQPOLL, storing the tail *is* submitting, and a deferred batch ([`crate::Batch`]) must not
//! reach the kernel before its commit; the io-uring crate publishes the tail whenever its SQ
//! handle drops.

use io_uring::squeue::Entry;

use crate::ops::Sqe;

/// SQEs waiting for the next submit; never more than the SQ holds (the ring's `room` sees
/// to it), so the buffer never grows while posting.
pub(super) struct Staging {
    sqes: Box<[Sqe]>,
    len: usize,
}

impl Staging {
    /// Room for `capacity` SQEs (the SQ's size).
    pub fn new(capacity: usize) -> Self {
        Self {
            sqes: (0..capacity).map(|_| Sqe::default()).collect(),
            len: 0,
        }
    }

    /// Copies `sqe` in, with `user_data` as its `user_data`, and returns the copy, to be
    /// finished in place.
    ///
    /// # Panics
    ///
    /// When the area is full: the caller checks the SQ's room first.
    #[inline(always)]
    pub fn push(&mut self, sqe: &Sqe, user_data: u64) -> &mut Sqe {
        let place = &mut self.sqes[self.len];
        sqe.copy_to(place, user_data);
        self.len += 1;
        place
    }

    /// The staged SQEs, as the io-uring crate pushes them.
    pub fn entries(&self) -> &[Entry] {
        Sqe::as_entries(&self.sqes[..self.len])
    }

    /// The staged SQEs.
    pub fn iter(&self) -> impl Iterator<Item = &Sqe> {
        self.sqes[..self.len].iter()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}
