//! The staging area: SQEs built since the last submit, in a buffer the size of the SQ.
//!
//! They reach the SQ in groups, each with one tail store (at submit, or, publishing early,
//! every few posts: see `pending`), so the SQPOLL thread takes several in one pass instead of
//! one SQE per pass. They cannot be written into the SQ as they are built: with SQPOLL,
//! storing the tail *is* submitting, a linked chain must reach the kernel thread whole, and the
//! io-uring crate publishes the tail whenever its SQ handle drops.
//!
//! The pending area (`pending`) writes the SQEs into the buffer through its cursor, as it does
//! into the SQ of a ring without SQPOLL; the methods here take the number staged from it.

use std::ptr::NonNull;

use io_uring::squeue::Entry;

use crate::ops::Sqe;

/// The buffer SQEs wait in for the next submit; never more than the SQ holds (the ring's
/// `room` sees to it).
pub(super) struct Staging {
    /// A `Box<[Sqe]>` of `capacity` SQEs, held as a pointer because the pending area writes
    /// into it through a pointer of its own (a `Box` asserts that it alone reaches its memory).
    sqes: NonNull<Sqe>,
    capacity: usize,
}

// SAFETY: the buffer belongs to this value alone (freed on drop), and is only used by the
// ring's owner, through the pending area that holds this value.
unsafe impl Send for Staging {}

impl Staging {
    /// Room for `capacity` SQEs (the SQ's size), rounded up to a power of two, so that a slot
    /// number masked with the mask [`slots`](Self::slots) gives is always inside.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        let sqes: Box<[Sqe]> = (0..capacity).map(|_| Sqe::default()).collect();
        let sqes = NonNull::new(Box::into_raw(sqes).cast::<Sqe>()).expect("a Box is never null");
        Self { sqes, capacity }
    }

    /// The buffer and its mask: slot `n & mask` is where the SQE numbered `n` goes.
    pub fn slots(&self) -> (NonNull<Sqe>, u32) {
        (self.sqes, (self.capacity - 1) as u32)
    }

    /// The first `len` SQEs, as the io-uring crate pushes them (`len` at most the capacity).
    pub fn entries(&self, len: usize) -> &[Entry] {
        Sqe::as_entries(self.staged(len))
    }

    /// The first `len` SQEs (`len` at most the capacity).
    pub fn staged(&self, len: usize) -> &[Sqe] {
        assert!(len <= self.capacity, "more staged than the buffer holds");
        // SAFETY: the buffer holds `capacity` initialised SQEs and lives as long as `self`;
        // the pending area writes into it only through `&mut` to the value holding `self`, so
        // not while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.sqes.as_ptr(), len) }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.sqes.as_ptr(), self.capacity);
        // SAFETY: made by `Box::into_raw` of a boxed slice of `capacity` SQEs in `new`, and
        // freed only here; nothing refers to it any more (its pending area is being dropped).
        drop(unsafe { Box::from_raw(slice) });
    }
}
