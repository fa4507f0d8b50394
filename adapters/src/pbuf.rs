//! Provided-buffer rings (`IORING_REGISTER_PBUF_RING`) for multishot receive, filled by the
//! pool's [`BufFeed`](regio_pool::BufFeed) through [`BufRingSink`], whose contract (one feed per
//! ring, never more buffers than slots, unregistered before its buffers go back)
//! [`BufFeed`](regio_pool::BufFeed) states and enforces.
//!
//! # Synchronization
//!
//! The ring is an array of `io_uring_buf {addr, len, bid, resv}` shared with the kernel; the
//! `resv` field of entry 0 is the ring's tail. Producers (whichever threads drop received
//! messages) are serialised by a mutex that owns the user-side tail copy: each writes its entry
//! with plain stores, then publishes it with a Release store of the new tail, which pairs with
//! the kernel's acquire load of the tail before it reads the entry.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use regio_pool::{BufRingSink, Region, RegionOptions};

use crate::error::Error;
use crate::ring::RingShared;

/// `sizeof(struct io_uring_buf)`.
const ENTRY: usize = 16;
/// Offset of `resv` in entry 0: the ring's tail.
const TAIL: usize = 14;

/// A provided-buffer ring registered on one completion queue's ring, as buffer group `bgid`.
/// Hand it to [`BufFeed::new`](regio_pool::BufFeed::new) and post
/// [`Op::recv_multishot`](crate::Op::recv_multishot) with the same `bgid` on a work queue of
/// that CQ.
///
/// Dropping it (or the feed retiring it) unregisters the group, and a multishot receive still
/// armed on the group then ends with `ENOBUFS`. Unregistering needs the ring's owner in
/// single-issuer mode: from another thread it fails, and the ring is leaked with its buffers
/// (the feed keeps them lent).
pub struct ProvidedRing<B> {
    ring: Arc<RingShared<B>>,
    /// The ring's memory. `ManuallyDrop`: it is unmapped only once the kernel has let go of it.
    memory: ManuallyDrop<Region>,
    entries: u16,
    bgid: u16,
    tail: Mutex<u16>,
    /// Whether unregistering was tried already (by `retire`), so that `drop` does not again.
    retired: bool,
}

// SAFETY: `memory` is a private mapping owned by this value; entries are only written under the
// `tail` mutex and published through an atomic, so shared use from many threads is sound.
unsafe impl<B: Send> Send for ProvidedRing<B> {}
// SAFETY: as above.
unsafe impl<B: Send> Sync for ProvidedRing<B> {}

impl<B> fmt::Debug for ProvidedRing<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvidedRing")
            .field("bgid", &self.bgid)
            .field("entries", &self.entries)
            .finish()
    }
}

impl<B> ProvidedRing<B> {
    pub(crate) fn new(ring: Arc<RingShared<B>>, bgid: u16, entries: u16) -> Result<Self, Error> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(Error::Invalid(
                "provided-ring entries must be a power of two up to 32768",
            ));
        }
        let memory =
            Region::map(usize::from(entries) * ENTRY, RegionOptions::default()).map_err(|e| {
                Error::Sys {
                    what: "mmap of a provided-buffer ring",
                    source: e.into(),
                }
            })?;
        let base = memory.base();
        // Under the tables' write lock, so a resize sees every provided ring of its CQ.
        let w = ring.tables.write_lock();
        let registered = if ring.may_register() {
            // SAFETY: the mapping stays valid until `Drop` unregisters the group first.
            unsafe {
                crate::register::pbuf_register(ring.fd(), base.as_ptr() as u64, entries, bgid)
            }
        } else {
            drop(w);
            return Err(Error::NotOwner);
        };
        if registered.is_ok() {
            // Relaxed: the count is read under the write lock held here (`provided`).
            ring.provided.fetch_add(1, Ordering::Relaxed);
        }
        drop(w);
        if let Err(source) = registered {
            return Err(match source.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOSYS) => Error::Unsupported {
                    what: "provided-buffer rings (IORING_REGISTER_PBUF_RING)",
                    since: "5.19",
                },
                _ => Error::Sys {
                    what: "IORING_REGISTER_PBUF_RING",
                    source,
                },
            });
        }
        Ok(Self {
            ring,
            memory: ManuallyDrop::new(memory),
            entries,
            bgid,
            tail: Mutex::new(0),
            retired: false,
        })
    }

    /// The buffer group id.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    fn tail_word(&self) -> &AtomicU16 {
        // SAFETY: offset 14 of the mapping is the 2-byte-aligned `resv` of entry 0, which the
        // kernel reads as the tail and never writes; it lives as long as `self`.
        unsafe { &*self.memory.base().as_ptr().add(TAIL).cast::<AtomicU16>() }
    }
}

// SAFETY: `entries` is the registered ring's size and never changes, and `push` writes the slot
// at the tail, which the kernel has consumed as long as the ring holds at most `entries`
// buffers. Only `push` adds buffers (the type offers no other way, and `BufFeed::new` takes the
// ring by value). `retire` returns true only when the kernel unregistered the group.
unsafe impl<B: Send> BufRingSink for ProvidedRing<B> {
    fn entries(&self) -> u16 {
        self.entries
    }

    unsafe fn push(&self, addr: NonNull<u8>, len: u32, bid: u16) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let slot = usize::from(*tail & (self.entries - 1));
        // SAFETY: `slot < entries`, so the entry is inside the mapping; the caller's contract
        // (at most `entries` buffers in the ring) means the kernel consumed it already, it reads
        // it again only after the tail store below, and the mutex keeps other producers off it.
        unsafe {
            let e = self.memory.base().as_ptr().add(slot * ENTRY);
            e.cast::<u64>().write(addr.as_ptr() as u64);
            e.add(8).cast::<u32>().write(len);
            e.add(12).cast::<u16>().write(bid);
        }
        *tail = tail.wrapping_add(1);
        // Release: publishes the entry written above to the kernel's acquire load of the tail.
        self.tail_word().store(*tail, Ordering::Release);
    }

    fn retire(mut self: Box<Self>) -> bool {
        self.unregister()
    }
}

impl<B> ProvidedRing<B> {
    /// Unregisters the group and unmaps the ring; if the kernel refuses, leaks the mapping.
    /// Returns whether the group is unregistered. Runs once: `retire` or `drop`.
    fn unregister(&mut self) -> bool {
        self.retired = true;
        let bgid = self.bgid;
        // The write lock orders the single-issuer owner check (see `ring::issuer`) and keeps a
        // resize from replacing the ring's fd meanwhile.
        let w = self.ring.tables.write_lock();
        let unregistered = if self.ring.may_register() {
            crate::register::pbuf_unregister(self.ring.fd(), bgid).map_err(|source| Error::Sys {
                what: "IORING_UNREGISTER_PBUF_RING",
                source,
            })
        } else {
            Err(Error::NotOwner)
        };
        drop(w);
        if let Err(e) = unregistered {
            // Unmapping memory the kernel may still read would be unsound: leak it instead.
            tracing::error!(bgid, error = %e, "unregistering a provided-buffer ring failed; leaking it");
            return false;
        }
        // Relaxed: a resize reads the count under the tables' write lock; a stale 1 there only
        // refuses a resize that could have gone ahead.
        self.ring.provided.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the group is unregistered, so nothing else uses the mapping, and `memory` is
        // dropped only here, once (`retired` keeps `drop` from coming back).
        unsafe { ManuallyDrop::drop(&mut self.memory) };
        true
    }
}

impl<B> Drop for ProvidedRing<B> {
    fn drop(&mut self) {
        if !self.retired {
            self.unregister();
        }
    }
}
