//! The depot: whole batches of free elements, exchanged between magazines in one copy.
//!
//! A magazine that overflows on one thread and a magazine that runs dry on another are the
//! common case when completions are reaped on a thread other than the one that submitted (one
//! thread acquires, another releases). Through the linked [`IndexStack`](crate::IndexStack)
//! alone, every refill walks a chain whose links another CPU just wrote: one cache miss per
//! element, in series. The depot keeps a few bins, each holding one batch as a contiguous array,
//! so a batch moves with a couple of cache lines instead. It is an accelerator in front of the
//! stack: when no bin is free (or full), callers fall back to the stack.
//!
//! # Synchronization
//!
//! - **A state word per bin** cycles EMPTY → BUSY → FULL → BUSY → EMPTY. Only the thread that
//!   moved a bin to BUSY (a CAS with Acquire) touches its items and length, so the cells never
//!   race.
//! - **Release/Acquire hand-off.** Filling ends with a Release store of FULL, and taking begins
//!   with an Acquire CAS from FULL, so the taker sees the items; emptying ends with a Release
//!   store of EMPTY, and filling begins with an Acquire CAS from EMPTY, so the next filler's
//!   writes come after the last taker's reads.
//! - **`len` is advisory**, as in the stack: a Relaxed counter for statistics.
//!
//! A thread stalled while a bin is BUSY holds up only that bin; every other bin, and the stack,
//! stay available.

use regio_sync::primitive::cell::UnsafeCell;
use regio_sync::primitive::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The most elements one bin holds: one batch of the largest magazine.
pub(crate) const BIN_CAP: usize = crate::magazine::MAG_CAP / 2;

const EMPTY: u32 = 0;
const BUSY: u32 = 1;
const FULL: u32 = 2;

#[repr(align(128))]
struct Bin {
    state: AtomicU32,
    len: UnsafeCell<usize>,
    items: UnsafeCell<[u32; BIN_CAP]>,
}

/// A few bins of batches for one size class.
pub(crate) struct Depot {
    bins: Box<[Bin]>,
    len: AtomicUsize,
}

// SAFETY: a bin's cells are touched only by the thread that moved it to BUSY, and the state
// word's Release/Acquire pairs order successive owners (module docs).
unsafe impl Sync for Depot {}
// SAFETY: the depot owns plain integers.
unsafe impl Send for Depot {}

impl Depot {
    /// A depot of `bins` empty bins.
    pub(crate) fn new(bins: usize) -> Self {
        Self {
            bins: (0..bins)
                .map(|_| Bin {
                    state: AtomicU32::new(EMPTY),
                    len: UnsafeCell::new(0),
                    items: UnsafeCell::new([0; BIN_CAP]),
                })
                .collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// About how many elements the bins hold.
    pub(crate) fn len(&self) -> usize {
        // Relaxed: see "`len` is advisory".
        self.len.load(Ordering::Relaxed)
    }

    /// Stores `items` (1..=BIN_CAP free elements, owned by the caller) in an empty bin. Returns
    /// false, keeping nothing, if no bin is empty.
    pub(crate) fn put(&self, items: &[u32]) -> bool {
        debug_assert!(!items.is_empty() && items.len() <= BIN_CAP);
        let Some(bin) = self.claim(EMPTY) else {
            return false;
        };
        // SAFETY: the bin is BUSY and ours (module docs); `items.len() <= BIN_CAP`.
        bin.items
            .with_mut(|all| unsafe { (&mut *all)[..items.len()].copy_from_slice(items) });
        // SAFETY: as above.
        bin.len.with_mut(|len| unsafe { *len = items.len() });
        // Release: publishes the items to the taker's Acquire CAS.
        bin.state.store(FULL, Ordering::Release);
        // Relaxed: see "`len` is advisory".
        self.len.fetch_add(items.len(), Ordering::Relaxed);
        true
    }

    /// Takes the batch of a full bin into `out` (at least [`BIN_CAP`] long) and returns its
    /// length, or 0 if no bin is full. The caller owns the elements afterwards.
    pub(crate) fn take(&self, out: &mut [u32]) -> usize {
        let Some(bin) = self.claim(FULL) else {
            return 0;
        };
        // SAFETY: the bin is BUSY and ours (module docs).
        let n = bin.len.with(|len| unsafe { *len });
        // SAFETY: as above; `n <= BIN_CAP <= out.len()`.
        bin.items
            .with(|all| unsafe { out[..n].copy_from_slice(&(&*all)[..n]) });
        // Release: the next filler's writes come after these reads.
        bin.state.store(EMPTY, Ordering::Release);
        // Relaxed: see "`len` is advisory".
        self.len.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Moves the first bin found in state `from` to BUSY.
    fn claim(&self, from: u32) -> Option<&Bin> {
        self.bins.iter().find(|bin| {
            // Relaxed: a cheap look before the CAS, which decides.
            bin.state.load(Ordering::Relaxed) == from
                // Acquire on success: pairs with the Release store that put the bin in `from`
                // (module docs). Relaxed on failure: we move on.
                && bin
                    .state
                    .compare_exchange(from, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn batches_go_in_and_out_whole() {
        let depot = Depot::new(2);
        let mut out = [0u32; BIN_CAP];
        assert_eq!(depot.take(&mut out), 0);
        assert!(depot.put(&[1, 2, 3]));
        assert!(depot.put(&[4]));
        assert!(!depot.put(&[5]), "both bins are full");
        assert_eq!(depot.len(), 4);
        let n = depot.take(&mut out);
        assert_eq!(&out[..n], &[1, 2, 3]);
        assert!(depot.put(&[6, 7]));
        let mut seen = Vec::new();
        loop {
            let n = depot.take(&mut out);
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&out[..n]);
        }
        seen.sort_unstable();
        assert_eq!(seen, [4, 6, 7]);
        assert_eq!(depot.len(), 0);
    }
}
