//! [`SqFlags`]: the SQ ring's flags word, where the kernel says that its CQ overflowed.
//!
//! When a CQE finds the CQ full, the kernel parks it in an overflow list and sets
//! `IORING_SQ_CQ_OVERFLOW`; from then on it parks every new CQE there too (to keep their order),
//! until an `io_uring_enter` with `IORING_ENTER_GETEVENTS` moves them into the CQ. An SQPOLL
//! thread never does that move, so a ring whose reaper missed the flag sees an empty CQ forever.
//! The kernel decides that the CQ is full against the head it last read, which can be older than
//! the head the reaper has just stored, and it publishes the tail of the CQEs that filled the CQ
//! only after it parked the first one: the reaper cannot tell from the head and the tail alone
//! whether an overflow happened. So every reap that finds the CQ empty reads this flag.
//!
//! The word is read through this crate's own mapping of the SQ ring: the
//! io-uring crate reads it through its SQ handle, which stores the SQ tail when it drops, a write
//! into the cache line the SQPOLL thread polls, on every empty reap.
//!
//! # Synchronization
//!
//! The flag only says that an `io_uring_enter` is due; the CQEs it moves are read after that
//! system call, through the tail's Acquire. A Relaxed load suffices. A flag set just after the
//! load is seen by the next reap.
//!
//! A waiter asleep on the CQ's eventfd is woken only when the kernel moves the CQ tail: the CQEs
//! that filled the CQ move it, and the reap they wake reads the flag. One gap remains: if the
//! kernel judged the CQ full against a head older than the one just stored, and every CQE that
//! filled it was already reaped, the parked CQE moves nothing, and a waiter that went to sleep
//! in the instant before the flag rose sleeps until its timeout or another signal. No test has
//! hit it (`tests/overflow_under_load.rs` waits with no timeout on an 8-entry CQ that overflows
//! thousands of times); polling the ring's own fd, which the kernel reports readable while CQEs
//! are parked, would close it, but a resize replaces that fd under the waiters.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::IoUring;

use super::sq::Mapping;
use crate::uring_abi::{params, OFF_SQ_RING, SQ_CQ_OVERFLOW};

/// The flags word of one io_uring's SQ ring.
pub(super) struct SqFlags {
    /// The SQ ring up to its flags, which `flags` points into.
    _ring: Mapping,
    flags: NonNull<AtomicU32>,
}

// SAFETY: the mapping belongs to this value alone; the pointer into it stays valid wherever the
// value moves, and the word is only read, atomically.
unsafe impl Send for SqFlags {}

impl SqFlags {
    /// Maps `uring`'s SQ ring up to its flags.
    pub fn new(uring: &IoUring) -> io::Result<Self> {
        let at = params(uring).sq_off.flags as usize;
        let ring = Mapping::new(uring, at + size_of::<u32>(), OFF_SQ_RING)?;
        // SAFETY: the kernel's offset of the flags lies inside the mapping, whose length covers
        // the word; it is a 4-aligned `u32` that the kernel writes atomically.
        let flags = unsafe { ring.base().add(at) }.cast::<AtomicU32>();
        Ok(Self { _ring: ring, flags })
    }

    /// Whether the kernel holds CQEs in its overflow list.
    #[inline]
    pub fn cq_overflow(&self) -> bool {
        // SAFETY: points into `self._ring`, mapped for as long as `self` lives.
        let flags = unsafe { self.flags.as_ref() };
        // Relaxed: the flag orders nothing (module docs).
        flags.load(Ordering::Relaxed) & SQ_CQ_OVERFLOW != 0
    }
}
