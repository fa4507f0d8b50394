//! The in-flight table: one entry per operation between its SQE and its final CQE, indexed
//! by the SQE's `user_data`, in the manner of monoio's lifecycle table.
//!
//! Entries are written and read one field at a time, in place. Building an entry aside and
//! copying it in compiles to vector loads over fields just stored one by one, which cannot be
//! forwarded from the store buffer and stall the post; the same goes for moving a whole entry
//! out at completion.

use crate::ops::{Keep, Side};
use crate::tables::WqId;

/// An operation between its SQE and its final CQE.
pub(super) struct InFlight<B> {
    pub wq: WqId,
    pub side: Side,
    pub cookie: u64,
    /// The operation's buffer, handed back with its final completion.
    pub buf: Option<B>,
    /// The ring generation it was submitted to: the current one, or the retiring one.
    pub epoch: u32,
    /// Memory the kernel reads late (a timespec, a socket address), or the target ring of a
    /// message, kept until the final completion.
    pub keep: Option<Box<Keep>>,
    /// Whether the entry holds an operation (free entries hold no buffer and no keep).
    live: bool,
    /// For a free entry: the next free one (the free list runs through the entries).
    next_free: u32,
}

/// The end of the free list.
const NONE: u32 = u32::MAX;

/// The in-flight table of one ring.
pub(super) struct Slab<B> {
    entries: Vec<InFlight<B>>,
    /// The first free entry, or `NONE`.
    free: u32,
    live: usize,
}

impl<B> Default for Slab<B> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: NONE,
            live: 0,
        }
    }
}

impl<B> Slab<B> {
    /// Records an operation and returns its index, the `user_data` of its SQE.
    #[inline(always)]
    pub fn insert(
        &mut self,
        wq: WqId,
        side: Side,
        cookie: u64,
        buf: Option<B>,
        epoch: u32,
        keep: Option<Box<Keep>>,
    ) -> u32 {
        let i = if self.free != NONE {
            let i = self.free;
            self.free = self.entries[i as usize].next_free;
            i
        } else {
            self.entries.push(InFlight {
                wq,
                side,
                cookie: 0,
                buf: None,
                epoch: 0,
                keep: None,
                live: false,
                next_free: NONE,
            });
            (self.entries.len() - 1) as u32
        };
        self.live += 1;
        let e = &mut self.entries[i as usize];
        debug_assert!(
            !e.live && e.buf.is_none() && e.keep.is_none(),
            "a free entry"
        );
        e.wq = wq;
        e.side = side;
        e.cookie = cookie;
        e.epoch = epoch;
        e.live = true;
        // A free entry holds neither a buffer nor a keep: forgetting the `None`s replaced here
        // spares a call to their drop glue.
        std::mem::forget(std::mem::replace(&mut e.buf, buf));
        std::mem::forget(std::mem::replace(&mut e.keep, keep));
        i
    }

    /// The live entry at `i`.
    #[inline(always)]
    pub fn get(&self, i: u32) -> Option<&InFlight<B>> {
        self.entries.get(i as usize).filter(|e| e.live)
    }

    /// Frees entry `i` at its operation's final completion and returns it, still holding its
    /// buffer and keep: the caller takes both out (the next [`insert`](Self::insert) there
    /// expects them gone).
    #[inline(always)]
    pub fn finish(&mut self, i: u32) -> Option<&mut InFlight<B>> {
        let e = self.entries.get_mut(i as usize).filter(|e| e.live)?;
        e.live = false;
        e.next_free = self.free;
        self.free = i;
        self.live -= 1;
        Some(e)
    }

    /// The index of the live operation of `wq` with `cookie`.
    pub fn find(&self, wq: WqId, cookie: u64) -> Option<u32> {
        self.entries
            .iter()
            .position(|e| e.live && e.wq == wq && e.cookie == cookie)
            .map(|i| i as u32)
    }

    /// Operations in flight.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Forgets every operation still in flight, leaking its buffer and keep: for a ring that
    /// must go while the kernel may still write into them.
    pub fn leak_all(&mut self) {
        for e in self.entries.drain(..) {
            std::mem::forget(e);
        }
        self.free = NONE;
        self.live = 0;
    }
}
