//! [`CqMap`]: this crate's own view of a ring's completion queue, so that a reap routes each
//! CQE where the kernel wrote it, with no copy out of the CQ first.
//!
//! The CQ ring's head, tail and CQE array are mapped a second time (the same shared pages as
//! the io-uring crate's mapping), as `sq` does for the SQ. The CQEs between the head and the
//! tail are finished: the kernel writes no slot there again until the head has passed it, so
//! the reap reads them in place as slices, and stores the head once it has routed them. Used
//! for rings without SQPOLL (see `reap::drain_cq`, which copies a chunk out first with SQPOLL).
//!
//! # Synchronization
//!
//! - The tail is written by the kernel as it posts CQEs: read with Acquire, so the CQEs before
//!   it are visible.
//! - The head is written only by user space, by the ring's owner (successive owners are ordered
//!   by the ring lock): read Relaxed, and stored with Release, so that the kernel, which reads
//!   it with acquire before it reuses a slot, sees every read of the CQEs before it as done.
//! - The io-uring crate's own CQ handle reads the head and the tail afresh each time one is made
//!   and stores the head when it drops; none is alive while a reap routes from here.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::{cqueue, IoUring};

use super::sq::Mapping;
use crate::uring_abi::{params, OFF_CQ_RING};

/// A ring's CQ, read in place by its owner.
pub(super) struct CqMap {
    /// The CQ ring mapping, which `head`, `tail` and `cqes` point into.
    _ring: Mapping,
    head: NonNull<AtomicU32>,
    tail: NonNull<AtomicU32>,
    cqes: NonNull<cqueue::Entry>,
    mask: u32,
}

// SAFETY: the mapping belongs to this value alone, and it is only used by the ring's owner
// (through `&mut`, or `&` for reads of the CQEs the head has not passed); the pointers into it
// stay valid wherever the value moves.
unsafe impl Send for CqMap {}

impl CqMap {
    /// Maps `uring`'s CQ ring.
    pub fn new(uring: &IoUring) -> io::Result<Self> {
        let p = params(uring);
        let len =
            p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<cqueue::Entry>();
        let ring = Mapping::new(uring, len, OFF_CQ_RING)?;
        let at = |off: u32| {
            // SAFETY: the kernel's offsets of the head, the tail and the CQE array lie inside
            // the mapping (its length covers the array, which comes last).
            unsafe { ring.base().add(off as usize) }
        };
        Ok(Self {
            // The head and tail are 4-aligned `u32`s the kernel and user space access
            // atomically; the CQE array is 8-aligned (checked against the ABI in `uring_abi`).
            head: at(p.cq_off.head).cast(),
            tail: at(p.cq_off.tail).cast(),
            cqes: at(p.cq_off.cqes).cast(),
            mask: p.cq_entries - 1,
            _ring: ring,
        })
    }

    fn head(&self) -> &AtomicU32 {
        // SAFETY: points into `self._ring`, mapped for as long as `self` lives.
        unsafe { self.head.as_ref() }
    }

    /// The head, and how many CQEs wait after it.
    #[inline]
    pub fn ready(&self) -> (u32, usize) {
        // Relaxed: user space alone writes the head, under the ring lock.
        let head = self.head().load(Ordering::Relaxed);
        (head, self.waiting(head))
    }

    /// How many CQEs the kernel has posted past `head`.
    #[inline]
    pub fn waiting(&self, head: u32) -> usize {
        // SAFETY: points into `self._ring`, mapped for as long as `self` lives.
        // Acquire: pairs with the kernel's release of the tail after it wrote the CQEs before it.
        let tail = unsafe { self.tail.as_ref() }.load(Ordering::Acquire);
        tail.wrapping_sub(head) as usize
    }

    /// The `n` CQEs from `head` in place, as two runs (up to the end of the array, then from
    /// its start; the second is empty unless they wrap). `n` must not exceed what
    /// [`ready`](Self::ready) counted.
    #[inline]
    pub fn runs(&self, head: u32, n: usize) -> (&[cqueue::Entry], &[cqueue::Entry]) {
        let entries = self.mask as usize + 1;
        debug_assert!(n <= entries && n <= self.waiting(head));
        let start = (head & self.mask) as usize;
        let first = n.min(entries - start);
        // SAFETY: both runs lie inside the CQE array (`start + first <= entries`, and
        // `n - first <= start`), mapped for as long as `self` lives, which the returned borrows
        // keep; the CQEs there are between the head and the tail, finished, and the kernel
        // does not write their slots again until the head passes them, which needs `&mut self`
        // (`consume`) and so ends these borrows first.
        unsafe {
            let base = self.cqes.as_ptr();
            (
                std::slice::from_raw_parts(base.add(start), first),
                std::slice::from_raw_parts(base, n - first),
            )
        }
    }

    /// Moves the head `n` CQEs past `head`: their slots go back to the kernel.
    #[inline]
    pub fn consume(&mut self, head: u32, n: usize) -> u32 {
        let head = head.wrapping_add(n as u32);
        // Release: the reads of the CQEs routed happen before the kernel may reuse their slots.
        self.head().store(head, Ordering::Release);
        head
    }
}
