//! [`SqMap`]: this crate's own view of a ring's submission queue, so that posting writes each
//! SQE once, straight into its SQ slot (through the pending area's cursor, see `pending`), and
//! publishes the tail only on submit.
//!
//! The io-uring crate stores the SQ tail whenever its SQ handle drops, so SQEs pushed through
//! it cannot wait unpublished for a deferred batch's commit. Here the SQ ring's head and tail
//! and the SQE array are mapped a second time (the same shared pages as the crate's mappings),
//! and SQEs are written past the published tail, where the kernel does not look, until
//! [`SqMap::publish`]. Used for rings without SQPOLL (see `ring::pending`).
//!
//! # Synchronization
//!
//! - The tail is written only by user space: Release on publish, so the kernel (or the SQPOLL
//!   thread) that reads it with acquire sees the SQEs written before it.
//! - The head is written by the kernel as it consumes SQEs: read with Acquire, so a slot the
//!   head has passed is free for reuse.
//! - The owner of the ring is the only writer here; successive owners are ordered by the ring
//!   lock, so the cached tails need nothing more.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::IoUring;

use crate::ops::Sqe;
use crate::uring_abi::{params, OFF_SQES, OFF_SQ_RING};

/// One mapping, unmapped on drop.
pub(super) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    pub fn new(uring: &IoUring, len: usize, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the ring's fd at an offset the kernel defines; no
        // existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                uring.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len })
    }

    /// Where the mapping starts.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this base and length, and nothing refers
        // to it any more (its owner, an `SqMap` or a `CqMap`, is being dropped).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A ring's SQ, written in place by its owner.
pub(super) struct SqMap {
    /// The SQ ring mapping, which `head` and `tail` point into.
    _ring: Mapping,
    sqes: Mapping,
    head: NonNull<AtomicU32>,
    tail: NonNull<AtomicU32>,
    mask: u32,
    entries: u32,
    /// The tail last published. The next slot to fill is the pending area's cursor (see
    /// `pending`), which every method that needs it takes.
    published: u32,
}

// SAFETY: the mappings belong to this value alone, and it is only used by the ring's owner
// (through `&mut`); the pointers into them stay valid wherever the value moves.
unsafe impl Send for SqMap {}

impl SqMap {
    /// Maps `uring`'s SQ ring and SQE array.
    pub fn new(uring: &IoUring) -> io::Result<Self> {
        let p = params(uring);
        let page = 4096usize;
        let ring_len = (p.sq_off.head.max(p.sq_off.tail) as usize + 4).next_multiple_of(page);
        let ring = Mapping::new(uring, ring_len, OFF_SQ_RING)?;
        let sqes_len = p.sq_entries as usize * std::mem::size_of::<Sqe>();
        let sqes = Mapping::new(uring, sqes_len, OFF_SQES)?;
        let at = |off: u32| {
            // SAFETY: the kernel's offsets of the head and tail lie inside the ring mapping
            // (its length covers both), and both are 4-aligned `u32`s the kernel and user
            // space access atomically.
            NonNull::new(unsafe { ring.base.as_ptr().add(off as usize) }.cast::<AtomicU32>())
                .expect("inside a mapping")
        };
        let (head, tail) = (at(p.sq_off.head), at(p.sq_off.tail));
        // SAFETY: just mapped; see `at`.
        // Relaxed: user space alone writes the tail, and this thread set the ring up.
        let t = unsafe { tail.as_ref() }.load(Ordering::Relaxed);
        Ok(Self {
            _ring: ring,
            sqes,
            head,
            tail,
            mask: p.sq_entries - 1,
            entries: p.sq_entries,
            published: t,
        })
    }

    fn tail(&self) -> &AtomicU32 {
        // SAFETY: points into `self._ring`, mapped for as long as `self` lives.
        unsafe { self.tail.as_ref() }
    }

    /// The SQE array and its mask: slot `next & mask` is where the SQE numbered `next` goes.
    pub fn slots(&self) -> (NonNull<Sqe>, u32) {
        (self.sqes.base().cast(), self.mask)
    }

    /// The tail last published: the cursor of an area with nothing pending.
    pub fn published(&self) -> u32 {
        self.published
    }

    /// Free slots, beside the ones filled up to `next` and not yet published.
    #[inline]
    pub fn room(&mut self, next: &mut u32) -> usize {
        if *next == self.published {
            // Nothing pending: take in SQEs pushed through the io-uring crate's own handle
            // (rare paths such as resizes), which published their own tail.
            // Relaxed: user space alone writes the tail, under the ring lock.
            let t = self.tail().load(Ordering::Relaxed);
            *next = t;
            self.published = t;
        }
        // SAFETY: points into `self._ring`, mapped for as long as `self` lives.
        // Acquire: pairs with the kernel's release of the head after it read the SQEs before
        // it, so the slots it passed may be written again.
        let head = unsafe { self.head.as_ref() }.load(Ordering::Acquire);
        (self.entries - next.wrapping_sub(head)) as usize
    }

    /// SQEs filled up to `next` and not yet published.
    #[inline]
    pub fn pending(&self, next: u32) -> u32 {
        next.wrapping_sub(self.published)
    }

    /// Hands the SQEs filled up to `next` to the kernel: one tail store.
    #[inline]
    pub fn publish(&mut self, next: u32) {
        // Release: the kernel reads the SQEs up to the tail after an acquire load of it.
        self.tail().store(next, Ordering::Release);
        self.published = next;
    }

    /// The `user_data` of each SQE filled up to `next` and not yet published.
    pub fn pending_user_data(&self, next: u32) -> Vec<u64> {
        (0..self.pending(next))
            .map(|k| {
                let slot = (self.published.wrapping_add(k) & self.mask) as usize;
                // SAFETY: `slot < entries`, inside the SQE mapping, which lives as long as
                // `self`; pending slots hold SQEs the pending area wrote, which the kernel does
                // not touch before their publication.
                unsafe { (*self.sqes.base().as_ptr().cast::<Sqe>().add(slot)).user_data }
            })
            .collect()
    }

    /// Drops the pending SQEs unpublished: the cursor goes back to the published tail, which
    /// this returns.
    pub fn discard(&self) -> u32 {
        self.published
    }
}
