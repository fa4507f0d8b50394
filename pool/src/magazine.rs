//! Magazines: the per-thread caches in front of the shared store.
//!
//! Each thread that uses a pool claims one [`CacheSlot`], which holds one magazine per size
//! class. Only the owning thread takes or puts elements; other threads only read the length, for
//! statistics. A full magazine flushes half of itself to the shared store in one bulk push, and an
//! empty one refills half in one bulk pop, in the way DPDK's mempool caches work.
//!
//! # Synchronization
//!
//! - **Single owner.** The items live in an `UnsafeCell` that only the claiming thread touches,
//!   so they need no atomics; the claim (`claimed`, an Acquire CAS) orders a new owner after the
//!   previous owner's Release store that gave the slot up.
//! - **Advisory length.** `len` is an atomic only so that other threads may read it (Relaxed) for
//!   [`MessagePool::available`](crate::MessagePool::available); the owner writes it with Relaxed
//!   stores, which cost a plain move.
//!
//! **Bounded length.** Every write of `len` keeps it at most [`MAG_CAP`] (`push` stops at the
//! magazine's capacity, at most `MAG_CAP`; `fill` asserts; `pop` and `drain_oldest` only lower
//! it), so the hot `push` and `pop` index the items without a bounds check.
//!
//! **The empty stand-in.** A pool keeps one slot of magazines of capacity 0 for threads without
//! a cache of their own ([`CacheSlot::stand_in`]), so that the hot paths need not tell "no
//! cache" apart from "a cache": `pop` finds such a magazine empty and `push` finds it full before
//! they write anything, so any number of threads may call them on it.

use regio_loom_shim::cell::UnsafeCell;
use regio_loom_shim::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::segment::ElemMeta;

/// The most elements one magazine holds.
pub(crate) const MAG_CAP: usize = 128;

/// One size class's cache in one thread, of `T`s (element metadata pointers in the pool).
/// Aligned to two cache lines (the unit of the adjacent-line prefetcher), so that the magazines
/// of different threads never share a line.
#[repr(align(128))]
pub(crate) struct Magazine<T> {
    len: AtomicU32,
    /// The most elements `push` caches (the pool's cache size), at most [`MAG_CAP`].
    cap: u32,
    items: UnsafeCell<[T; MAG_CAP]>,
}

impl<T: Copy> Magazine<T> {
    /// An empty magazine that caches up to `cap` elements; `blank` fills the unused entries.
    fn new(blank: T, cap: usize) -> Self {
        assert!(
            cap <= MAG_CAP,
            "a magazine holds at most {MAG_CAP} elements"
        );
        Self {
            len: AtomicU32::new(0),
            cap: cap as u32,
            items: UnsafeCell::new([blank; MAG_CAP]),
        }
    }

    /// How many elements it holds (exact for the owner, a snapshot for others).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        // Relaxed: see "Advisory length".
        self.len.load(Ordering::Relaxed) as usize
    }

    /// Takes the most recently cached element.
    ///
    /// # Safety
    ///
    /// Only the thread that claimed the magazine's slot may call this, or any thread if the
    /// magazine is an empty stand-in (capacity 0).
    #[inline]
    pub(crate) unsafe fn pop(&self) -> Option<T> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        // SAFETY: single owner (the caller's contract); `n - 1 < MAG_CAP`, as the length never
        // exceeds `MAG_CAP` (see "Bounded length").
        let item = self
            .items
            .with(|items| unsafe { *(*items).get_unchecked(n - 1) });
        // Relaxed: see "Advisory length".
        self.len.store(n as u32 - 1, Ordering::Relaxed);
        Some(item)
    }

    /// Caches `item` unless the magazine is full (holds its capacity).
    ///
    /// # Safety
    ///
    /// As for [`pop`](Self::pop).
    #[inline]
    pub(crate) unsafe fn push(&self, item: T) -> bool {
        let n = self.len();
        if n >= self.cap as usize {
            return false;
        }
        // SAFETY: single owner (a stand-in returned above), and `n < cap <= MAG_CAP` (`new`).
        self.items
            .with_mut(|items| unsafe { *(*items).get_unchecked_mut(n) = item });
        // Relaxed: see "Advisory length".
        self.len.store(n as u32 + 1, Ordering::Relaxed);
        true
    }

    /// Appends `items`, which must fit.
    ///
    /// # Safety
    ///
    /// Only the thread that claimed the magazine's slot may call this.
    pub(crate) unsafe fn fill(&self, items: &[T]) {
        let n = self.len();
        assert!(n + items.len() <= MAG_CAP, "magazine overfilled");
        // SAFETY: single owner (the caller's contract); the range was checked above.
        self.items
            .with_mut(|all| unsafe { (&mut *all)[n..n + items.len()].copy_from_slice(items) });
        // Relaxed: see "Advisory length".
        self.len.store((n + items.len()) as u32, Ordering::Relaxed);
    }

    /// Moves the `count` oldest elements (or all, if fewer) into `out` and returns how many:
    /// the ones least likely to be warm in this CPU's cache.
    ///
    /// # Safety
    ///
    /// Only the thread that claimed the magazine's slot may call this.
    pub(crate) unsafe fn drain_oldest(&self, count: usize, out: &mut [T]) -> usize {
        // SAFETY: the caller's contract. One block copy, not a loop of single elements.
        unsafe {
            self.drain_oldest_with(count.min(out.len()), |oldest| {
                out[..oldest.len()].copy_from_slice(oldest);
            })
        }
    }

    /// [`drain_oldest`](Self::drain_oldest), writing `f` of each element into `out`.
    ///
    /// # Safety
    ///
    /// As for `drain_oldest`.
    pub(crate) unsafe fn drain_oldest_map<U>(
        &self,
        count: usize,
        out: &mut [U],
        f: impl Fn(T) -> U,
    ) -> usize {
        // SAFETY: the caller's contract.
        unsafe {
            self.drain_oldest_with(count.min(out.len()), |oldest| {
                for (out, &item) in out.iter_mut().zip(oldest) {
                    *out = f(item);
                }
            })
        }
    }

    /// Shows the `count` oldest elements (or all, if fewer) to `take`, which takes them over,
    /// then removes them; returns how many.
    ///
    /// # Safety
    ///
    /// As for `drain_oldest`.
    unsafe fn drain_oldest_with(&self, count: usize, take: impl FnOnce(&[T])) -> usize {
        let n = self.len();
        let k = count.min(n);
        // SAFETY: single owner (the caller's contract); `k <= n <= MAG_CAP`.
        self.items.with_mut(|all| unsafe {
            let all = &mut *all;
            take(&all[..k]);
            all.copy_within(k..n, 0);
        });
        // Relaxed: see "Advisory length".
        self.len.store((n - k) as u32, Ordering::Relaxed);
        k
    }
}

/// One thread's caches for one pool: a magazine per size class.
#[repr(align(128))]
pub(crate) struct CacheSlot {
    claimed: AtomicBool,
    mags: Box<[Magazine<Cached>]>,
}

/// What a pool's magazines hold: a free element, as a pointer to its metadata (so that it needs
/// no lookup in the segment directory; never null, so a popped one needs no check either), with
/// its generation (see [`generations`](crate::segment::generation)): the one its next holder gets, which the
/// releasing thread stored in the element too.
#[derive(Clone, Copy)]
pub(crate) struct Cached {
    pub(crate) meta: NonNull<ElemMeta>,
    pub(crate) generation: u32,
}

impl Cached {
    /// What fills a magazine's unused entries.
    pub(crate) const BLANK: Cached = Cached {
        meta: NonNull::dangling(),
        generation: 0,
    };
}

// SAFETY: the items of each magazine are touched only by the thread that claimed the slot (the
// claim is an Acquire CAS, the give-up a Release store), and never in a stand-in's magazines
// (module docs); other threads only read the atomic lengths. So sharing `&CacheSlot` between threads cannot race on the cells. The pointers name
// element metadata of the pool that owns the slot, which is `Sync`.
unsafe impl Sync for CacheSlot {}
// SAFETY: as above; the pointers are plain addresses of the pool's own metadata.
unsafe impl Send for CacheSlot {}

impl CacheSlot {
    /// A slot with a magazine of capacity `cap` per class.
    pub(crate) fn new(classes: usize, cap: usize) -> Self {
        Self {
            claimed: AtomicBool::new(false),
            mags: (0..classes)
                .map(|_| Magazine::new(Cached::BLANK, cap))
                .collect(),
        }
    }

    /// The empty stand-in for threads without a cache (module docs): never claimed.
    pub(crate) fn stand_in(classes: usize) -> Self {
        Self::new(classes, 0)
    }

    /// Claims the slot for the calling thread.
    pub(crate) fn try_claim(&self) -> bool {
        // Acquire on success: the previous owner's accesses (before its Release in `release`)
        // happen-before ours. Relaxed on failure: we move on to another slot.
        self.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives the slot up. The owner must have emptied its magazines.
    pub(crate) fn release(&self) {
        // Release: see `try_claim`.
        self.claimed.store(false, Ordering::Release);
    }

    /// The magazine of `class`.
    #[inline]
    pub(crate) fn mag(&self, class: usize) -> &Magazine<Cached> {
        &self.mags[class]
    }

    /// The magazine of class 0, the start of the magazines that [`Mags`] reaches.
    pub(crate) fn first_mag(&self) -> NonNull<Magazine<Cached>> {
        // The whole slice's pointer, so that `Mags::get` may reach every class from it.
        NonNull::from(&*self.mags).cast()
    }

    /// All magazines, by class.
    pub(crate) fn mags(&self) -> &[Magazine<Cached>] {
        &self.mags
    }
}

/// A slot's magazines as the hot paths reach them: one pointer, kept in the thread's lookup
/// shortcut, so that they need not load it from the slot.
#[derive(Clone, Copy)]
pub(crate) struct Mags<'a> {
    first: NonNull<Magazine<Cached>>,
    _slot: PhantomData<&'a CacheSlot>,
}

impl<'a> Mags<'a> {
    /// The magazines from `first`.
    ///
    /// # Safety
    ///
    /// `first` is [`CacheSlot::first_mag`] of a slot that lives for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn new(first: NonNull<Magazine<Cached>>) -> Self {
        Mags {
            first,
            _slot: PhantomData,
        }
    }

    /// The magazine of `class`.
    ///
    /// # Safety
    ///
    /// `class` is one of the pool's size classes: a slot has a magazine for each.
    #[inline(always)]
    pub(crate) unsafe fn get(self, class: usize) -> &'a Magazine<Cached> {
        // SAFETY: the slot has a magazine per class (the caller's contract) and lives for `'a`
        // (`new`'s).
        unsafe { self.first.add(class).as_ref() }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn push_pop_fill_drain() {
        let m = Magazine::new(0u32, 2);
        // SAFETY: this test thread is the only user of `m`.
        unsafe {
            assert_eq!(m.pop(), None);
            assert!(m.push(1));
            assert!(m.push(2));
            assert!(!m.push(3), "full at its capacity");
            m.fill(&[3, 4]);
            assert_eq!(m.len(), 4);
            let mut out = [0; 8];
            assert_eq!(m.drain_oldest(3, &mut out), 3);
            assert_eq!(&out[..3], &[1, 2, 3]);
            assert_eq!(m.pop(), Some(4));
            assert_eq!(m.len(), 0);
        }
    }

    #[test]
    fn the_stand_in_is_empty_and_full() {
        let s = CacheSlot::stand_in(2);
        // SAFETY: a stand-in may be used by any thread (module docs).
        unsafe {
            assert_eq!(s.mag(1).pop().map(|c| c.generation), None);
            assert!(!s.mag(1).push(Cached::BLANK));
        }
        assert_eq!(s.mag(1).len(), 0);
    }

    #[test]
    fn a_slot_is_claimed_once() {
        let s = CacheSlot::new(2, 4);
        assert!(s.try_claim());
        assert!(!s.try_claim());
        s.release();
        assert!(s.try_claim());
        assert_eq!(s.mags().len(), 2);
    }
}
