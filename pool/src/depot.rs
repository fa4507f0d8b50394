//! The depot: whole batches of free elements, exchanged between magazines in one copy.
//!
//! A magazine that overflows on one thread and a magazine that runs dry on another are the
//! common case when completions are reaped on a thread other than the one that submitted (one
//! thread acquires, another releases). Through the linked [`IndexStack`](regio_sync::IndexStack)
//! alone, every refill walks a chain whose links another CPU just wrote: one cache miss per
//! element, in series. The depot keeps a few bins, each holding one batch as a contiguous array,
//! so a batch moves with a couple of cache lines instead. It is an accelerator in front of the
//! stack: when no bin is free (or full), callers fall back to the stack.
//!
//! Each bin holds magazine entries ([`Cached`]: an element's metadata pointer and generation),
//! so a batch goes from the overflowing magazine into a bin and from the bin into the refilling
//! magazine as plain copies, with no translation to element indices and back.
//!
//! # Synchronization
//!
//! - **A state word per bin** cycles EMPTY → BUSY → FULL(n) → BUSY → EMPTY, where FULL(n) also
//!   says how many entries the bin holds. Only the thread that moved a bin to BUSY (a CAS with
//!   Acquire) touches its entries, so the cells never race.
//! - **Release/Acquire hand-off.** Filling ends with a Release store of FULL(n), and taking
//!   begins with an Acquire CAS from FULL(n), so the taker sees the entries; emptying ends with a
//!   Release store of EMPTY, and filling begins with an Acquire CAS from EMPTY, so the next
//!   filler's writes come after the last taker's reads.
//! - **The length is advisory**: [`Depot::len`] adds up the FULL(n) words with Relaxed loads, for
//!   statistics and the low watermark. Keeping it in the state words spares the two threads that
//!   trade batches a shared counter to write; for the same reason the pool's count of users
//!   does not move when a batch passes through a bin (see "The depot's batches stay counted" in
//!   [`crate::shared`]).
//!
//! A thread stalled while a bin is BUSY holds up only that bin; every other bin, and the stack,
//! stay available.

use regio_loom_shim::cell::UnsafeCell;
use regio_loom_shim::sync::atomic::{AtomicU32, Ordering};

use crate::magazine::Cached;

/// The most elements one bin holds: one batch of the largest magazine.
pub(crate) const BIN_CAP: usize = crate::magazine::MAG_CAP / 2;

const EMPTY: u32 = 0;
const BUSY: u32 = 1;
/// The low bits of a FULL(n) word; `n` is in the bits above.
const FULL: u32 = 2;
const STATE_BITS: u32 = 2;

/// The state word of a bin holding `n` entries.
fn full(n: usize) -> u32 {
    ((n as u32) << STATE_BITS) | FULL
}

/// How many entries a state word says its bin holds.
fn count(state: u32) -> usize {
    if state & ((1 << STATE_BITS) - 1) == FULL {
        (state >> STATE_BITS) as usize
    } else {
        0
    }
}

#[repr(align(128))]
struct Bin {
    state: AtomicU32,
    items: UnsafeCell<[Cached; BIN_CAP]>,
}

/// A few bins of batches for one size class.
pub(crate) struct Depot {
    bins: Box<[Bin]>,
}

// SAFETY: a bin's cells are touched only by the thread that moved it to BUSY, and the state
// word's Release/Acquire pairs order successive owners (module docs). The entries point at the
// pool's element metadata, which is `Sync`.
unsafe impl Sync for Depot {}
// SAFETY: as above; the entries are plain addresses and integers.
unsafe impl Send for Depot {}

impl Depot {
    /// A depot of `bins` empty bins.
    pub(crate) fn new(bins: usize) -> Self {
        Self {
            bins: (0..bins)
                .map(|_| Bin {
                    state: AtomicU32::new(EMPTY),
                    items: UnsafeCell::new([Cached::BLANK; BIN_CAP]),
                })
                .collect(),
        }
    }

    /// About how many elements the bins hold.
    pub(crate) fn len(&self) -> usize {
        self.bins
            .iter()
            // Relaxed: see "The length is advisory".
            .map(|bin| count(bin.state.load(Ordering::Relaxed)))
            .sum()
    }

    /// Lets `fill` write up to [`BIN_CAP`] free elements, owned by the caller, into an empty bin,
    /// and keeps the first `n` it says it wrote. Returns `Some(n)`, or `None` without calling
    /// `fill` if no bin is empty. The caller gives up the elements it stores.
    pub(crate) fn put_with(
        &self,
        fill: impl FnOnce(&mut [Cached; BIN_CAP]) -> usize,
    ) -> Option<usize> {
        let (bin, _) = self.claim(|state| state == EMPTY)?;
        // SAFETY: the bin is BUSY and ours (module docs).
        let n = bin.items.with_mut(|all| fill(unsafe { &mut *all }));
        debug_assert!(n <= BIN_CAP);
        let state = if n == 0 { EMPTY } else { full(n) };
        // Release: publishes the entries to the taker's Acquire CAS (or, for EMPTY, orders our
        // accesses before the next filler's).
        bin.state.store(state, Ordering::Release);
        Some(n)
    }

    /// Hands the entries of a full bin to `take`, which owns those elements afterwards, and
    /// returns what it returns; `None` if no bin is full.
    pub(crate) fn take_with<R>(&self, take: impl FnOnce(&[Cached]) -> R) -> Option<R> {
        let (bin, state) = self.claim(|state| count(state) > 0)?;
        let n = count(state);
        // SAFETY: the bin is BUSY and ours (module docs); `n <= BIN_CAP` (`put_with`).
        let taken = bin.items.with(|all| take(unsafe { &(&*all)[..n] }));
        // Release: the next filler's writes come after these reads.
        bin.state.store(EMPTY, Ordering::Release);
        Some(taken)
    }

    /// Moves the first bin whose state passes `wanted` to BUSY, and returns it with the state it
    /// had.
    fn claim(&self, wanted: impl Fn(u32) -> bool) -> Option<(&Bin, u32)> {
        self.bins.iter().find_map(|bin| {
            // Relaxed: a cheap look before the CAS, which decides.
            let state = bin.state.load(Ordering::Relaxed);
            // Acquire on success: pairs with the Release store that put the bin in `state`
            // (module docs). Relaxed on failure: we move on.
            (wanted(state)
                && bin
                    .state
                    .compare_exchange(state, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok())
            .then_some((bin, state))
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Entries that stand for elements 1, 2, ...: only the generations are looked at.
    fn entries(gens: &[u32]) -> Vec<Cached> {
        gens.iter()
            .map(|&generation| Cached {
                generation,
                ..Cached::BLANK
            })
            .collect()
    }

    fn put(depot: &Depot, gens: &[u32]) -> bool {
        let items = entries(gens);
        depot
            .put_with(|bin| {
                bin[..items.len()].copy_from_slice(&items);
                items.len()
            })
            .is_some()
    }

    fn take(depot: &Depot) -> Option<Vec<u32>> {
        depot.take_with(|items| items.iter().map(|c| c.generation).collect())
    }

    #[test]
    fn batches_go_in_and_out_whole() {
        let depot = Depot::new(2);
        assert_eq!(take(&depot), None);
        assert!(put(&depot, &[1, 2, 3]));
        assert!(put(&depot, &[4]));
        assert!(!put(&depot, &[5]), "both bins are full");
        assert_eq!(depot.len(), 4);
        assert_eq!(take(&depot).unwrap(), [1, 2, 3]);
        assert!(put(&depot, &[6, 7]));
        let mut seen = Vec::new();
        while let Some(batch) = take(&depot) {
            seen.extend(batch);
        }
        seen.sort_unstable();
        assert_eq!(seen, [4, 6, 7]);
        assert_eq!(depot.len(), 0);
    }

    #[test]
    fn an_empty_fill_leaves_the_bin_empty() {
        let depot = Depot::new(1);
        assert_eq!(depot.put_with(|_| 0), Some(0));
        assert_eq!(take(&depot), None);
        assert!(put(&depot, &[BIN_CAP as u32; BIN_CAP]));
        assert_eq!(depot.len(), BIN_CAP);
        assert_eq!(take(&depot).unwrap().len(), BIN_CAP);
    }
}
