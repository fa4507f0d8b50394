//! The shared lock-free store: a Treiber stack of `u32` indices with bulk push and pop.
//!
//! Elements never move; the stack links them through a `u32` per element that the owner of the
//! elements provides ([`Links`]). A bulk push links a chain first and publishes it with one CAS;
//! a bulk pop detaches up to `n` elements with one CAS. In regio's pool it is the shared half of
//! a two-level design: per-thread magazines talk to it only in batches.
//!
//! ```
//! use std::sync::atomic::AtomicU32;
//! use regio_sync::{IndexStack, NIL};
//!
//! // Four elements; each one's link word lives wherever its owner keeps it (here, an array).
//! let links: Vec<AtomicU32> = (0..4).map(|_| AtomicU32::new(NIL)).collect();
//! let free = IndexStack::new();
//! free.push_slice(&links[..], &[0, 1, 2, 3]);
//! let mut batch = [NIL; 3];
//! assert_eq!(free.pop_into(&links[..], &mut batch), 3);
//! assert_eq!(batch, [3, 2, 1]);
//! assert_eq!(free.pop(&links[..]), Some(0));
//! assert_eq!(free.pop(&links[..]), None);
//! ```
//!
//! # Synchronization
//!
//! - **Tagged head.** `head` packs the top index and a 32-bit tag into one `AtomicU64`, and
//!   every successful CAS bumps the tag. A CAS that succeeds therefore proves that no push or pop
//!   happened since the head was loaded (up to a wrap of the tag, 2^32 operations inside one
//!   attempt), which rules out ABA.
//! - **Release sequence on `head`.** A pusher writes its links (Relaxed), then CASes the head with
//!   Release. Every write of `head` is a read-modify-write, so every Release CAS starts a release
//!   sequence that later CASes continue; a popper's Acquire load of `head` therefore sees the
//!   links of every element below the top, however many pushes ago they were written.
//! - **Racy walks are harmless.** A popper walks the links with Relaxed loads while other threads
//!   may pop and re-link those elements; it may read links that are already stale, but they are
//!   atomics (no data race) and the tag makes its CAS fail, after which it walks again.
//! - **`len` is advisory.** It is a Relaxed counter updated after each push and pop, for
//!   statistics and the low-watermark check, never for correctness.

use regio_loom_shim::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The link value that ends a chain.
pub const NIL: u32 = u32::MAX;

/// Where the stack finds each element's link word.
pub trait Links {
    /// The link word of element `index`, or `None` if no such element is visible (only a stale
    /// walk can ask for one; its CAS then fails).
    fn link(&self, index: u32) -> Option<&AtomicU32>;
}

impl Links for [AtomicU32] {
    #[inline]
    fn link(&self, index: u32) -> Option<&AtomicU32> {
        self.get(index as usize)
    }
}

/// A lock-free LIFO of element indices. See the module docs.
#[derive(Debug)]
pub struct IndexStack {
    head: AtomicU64,
    /// A wrapping counter read as signed: a pop may be counted before the push it undid.
    len: AtomicUsize,
}

impl Default for IndexStack {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn pack(top: u32, tag: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(top)
}

#[inline]
fn top(word: u64) -> u32 {
    word as u32
}

#[inline]
fn tag(word: u64) -> u32 {
    (word >> 32) as u32
}

impl IndexStack {
    /// An empty stack.
    pub fn new() -> Self {
        Self {
            head: AtomicU64::new(pack(NIL, 0)),
            len: AtomicUsize::new(0),
        }
    }

    /// About how many elements the stack holds (exact when no push or pop is under way).
    pub fn len(&self) -> usize {
        // Relaxed: a statistic; see "`len` is advisory". A pop's decrement can be seen before
        // the matching push's increment, hence the clamp.
        (self.len.load(Ordering::Relaxed) as isize).max(0) as usize
    }

    /// Whether the stack looks empty.
    pub fn is_empty(&self) -> bool {
        // Relaxed: the answer is a hint and orders nothing.
        top(self.head.load(Ordering::Relaxed)) == NIL
    }

    /// Pushes one element. The caller owns `index` exclusively until the push.
    ///
    /// # Panics
    ///
    /// If `links` has no link for `index`.
    #[inline]
    pub fn push(&self, links: &(impl Links + ?Sized), index: u32) {
        self.push_chain(links, index, index, 1);
    }

    /// Pushes every element of `items` with one CAS. The caller owns them exclusively until the
    /// push. The last item ends up on top.
    ///
    /// # Panics
    ///
    /// If `links` has no link for one of the items.
    pub fn push_slice(&self, links: &(impl Links + ?Sized), items: &[u32]) {
        let Some((&first, rest)) = items.split_first() else {
            return;
        };
        // Link items[i+1] -> items[i], so the chain runs from the last item down to the first.
        let mut below = first;
        for &item in rest {
            // Relaxed: the Release CAS in `push_chain` publishes these links.
            link(links, item).store(below, Ordering::Relaxed);
            below = item;
        }
        self.push_chain(links, below, first, items.len());
    }

    fn push_chain(&self, links: &(impl Links + ?Sized), top_of_chain: u32, bottom: u32, n: usize) {
        // Relaxed: the value is only a guess for the CAS, which re-reads it on failure.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below.
            link(links, bottom).store(top(head), Ordering::Relaxed);
            // Release on success: publishes the chain's links (see "Release sequence"). Relaxed
            // on failure: we only retry with the fresh value.
            match self.head.compare_exchange_weak(
                head,
                pack(top_of_chain, tag(head).wrapping_add(1)),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        // Relaxed: see "`len` is advisory".
        self.len.fetch_add(n, Ordering::Relaxed);
    }

    /// Pops one element.
    #[inline]
    pub fn pop(&self, links: &(impl Links + ?Sized)) -> Option<u32> {
        let mut one = [NIL];
        (self.pop_into(links, &mut one) == 1).then_some(one[0])
    }

    /// Pops up to `out.len()` elements with one CAS, writes them to `out` and returns how many.
    /// The caller owns them exclusively afterwards.
    pub fn pop_into(&self, links: &(impl Links + ?Sized), out: &mut [u32]) -> usize {
        if out.is_empty() {
            return 0;
        }
        // Acquire: makes the links below the top visible (see "Release sequence").
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let mut n = 0;
            let mut cur = top(head);
            while n < out.len() && cur != NIL {
                let Some(next) = links.link(cur) else {
                    break;
                };
                out[n] = cur;
                n += 1;
                // Relaxed: this walk is validated by the tag CAS below ("Racy walks").
                cur = next.load(Ordering::Relaxed);
            }
            if n == 0 {
                return 0;
            }
            // Acquire on both paths: on success it is the same head we walked from (the tag
            // proves it), and on failure we walk again from the new head, whose links must be
            // visible.
            match self.head.compare_exchange_weak(
                head,
                pack(cur, tag(head).wrapping_add(1)),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Relaxed: see "`len` is advisory".
                    self.len.fetch_sub(n, Ordering::Relaxed);
                    return n;
                }
                Err(now) => head = now,
            }
        }
    }
}

#[inline]
fn link(links: &(impl Links + ?Sized), index: u32) -> &AtomicU32 {
    links
        .link(index)
        .expect("an element owned by the caller has a link")
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn links(n: u32) -> Box<[AtomicU32]> {
        (0..n).map(|_| AtomicU32::new(NIL)).collect()
    }

    #[test]
    fn lifo_single_and_bulk() {
        let l = links(8);
        let s = IndexStack::new();
        assert_eq!(s.pop(&*l), None);
        s.push(&*l, 3);
        s.push_slice(&*l, &[0, 1, 2]);
        assert_eq!(s.len(), 4);
        let mut out = [NIL; 3];
        assert_eq!(s.pop_into(&*l, &mut out), 3);
        assert_eq!(out, [2, 1, 0]);
        assert_eq!(s.pop(&*l), Some(3));
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn two_threads_keep_every_index() {
        let l: std::sync::Arc<Box<[AtomicU32]>> = std::sync::Arc::new(links(64));
        let s = std::sync::Arc::new(IndexStack::new());
        let all: Vec<u32> = (0..64).collect();
        s.push_slice(&**l, &all);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (l, s) = (l.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut buf = [NIL; 5];
                    for _ in 0..20_000 {
                        let n = s.pop_into(&**l, &mut buf);
                        s.push_slice(&**l, &buf[..n]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut seen = Vec::new();
        while let Some(i) = s.pop(&**l) {
            seen.push(i);
        }
        seen.sort_unstable();
        assert_eq!(seen, all);
    }
}
