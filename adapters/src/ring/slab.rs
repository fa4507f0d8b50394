//! The in-flight table: one entry per operation between its SQE and its final CQE, indexed
//! by the SQE's `user_data`, in the manner of monoio's lifecycle table.
//!
//! An SQE's `user_data` is the entry's index in its low 32 bits and, above them, the
//! *generation* the entry got when the operation was inserted (30 bits: bits 62 and 63 are the
//! ring's own, see `ring::MESSAGE_BIT`). A cancel names its target by the whole `user_data`, and
//! the kernel may run it late (`IOSQE_ASYNC`: on an async worker, after the target completed and
//! its entry went to another work queue's operation); the generation keeps it from matching the
//! newcomer.
//!
//! Each entry counts its own generations, one step at each insert (a load and a store in the
//! entry's line, which the insert writes anyway, rather than a counter of the slab's that every
//! insert reads and writes): the same `user_data` comes back only after 2^30 operations through
//! that one entry.
//!
//! Entries are written and read one field at a time, in place. Building an entry aside and
//! copying it in compiles to vector loads over fields just stored one by one, which cannot be
//! forwarded from the store buffer and stall the post; the same goes for moving a whole entry
//! out at completion.

use std::mem::ManuallyDrop;

use crate::ops::{Retained, Side};
use crate::tables::WqId;

/// An operation between its SQE and its final CQE: one cache line per entry.
#[repr(align(64))]
pub(super) struct InFlight<B> {
    /// The operation's work queue, as [`WqId::key`]: the reap compares and hands it on as one
    /// word.
    wq_key: u64,
    pub cookie: u64,
    /// The operation's buffer, handed back with its final completion.
    pub buf: Option<B>,
    /// Memory the kernel reads late (a timespec, a socket address), or the target ring of a
    /// message, kept until the final completion.
    pub keep: Option<Box<Retained>>,
    /// The serial of the io_uring the operation went to (the current one or the retiring one)
    /// above [`STAMP_SERIAL`], whether the entry holds a buffer or a keep ([`STAMP_OWNS`]), and
    /// its side in the low bit ([`STAMP_RECV`]).
    stamp: u32,
    /// The generation of the entry's last operation (the one in its `user_data`; below
    /// [`GENERATIONS`]).
    generation: u32,
    /// [`LIVE`] while the entry holds an operation; for a free entry, the next free one (the
    /// free list runs through the entries). Free entries hold no buffer and no keep.
    next: u32,
}

/// The end of the free list (entries are indexed below it).
const NONE: u32 = LIVE - 1;
/// The `next` of a live entry.
const LIVE: u32 = 1 << 31;
/// The generations an entry tells apart (bits 32..62 of `user_data`).
const GENERATIONS: u32 = 1 << 30;

/// How many io_uring serials an entry tells apart (the serial shares a word with two flags; see
/// `RingState::uring_serial`).
pub(super) const URING_SERIALS: u32 = 1 << (32 - STAMP_SERIAL);
/// In an entry's stamp: the operation took a receive credit.
const STAMP_RECV: u32 = 1;
/// In an entry's stamp: the entry holds a buffer or a keep.
const STAMP_OWNS: u32 = 2;
/// The shift of the io_uring serial in an entry's stamp.
const STAMP_SERIAL: u32 = 2;

impl<B> InFlight<B> {
    /// The operation's work queue.
    #[inline(always)]
    pub fn wq(&self) -> WqId {
        WqId::from_key(self.wq_key)
    }

    /// The operation's work queue as [`WqId::key`].
    #[inline(always)]
    pub fn wq_key(&self) -> u64 {
        self.wq_key
    }

    /// The depth credit the operation took (the reap reads [`side_bit`](Self::side_bit)).
    #[cfg(test)]
    pub fn side(&self) -> Side {
        if self.stamp & STAMP_RECV == 0 {
            Side::Send
        } else {
            Side::Recv
        }
    }

    /// The depth credit the operation took, as one bit: 1 for [`Side::Recv`].
    #[inline(always)]
    pub fn side_bit(&self) -> u32 {
        self.stamp & STAMP_RECV
    }

    /// The serial of the io_uring the operation went to.
    #[inline(always)]
    pub fn uring_serial(&self) -> u32 {
        self.stamp >> STAMP_SERIAL
    }

    #[inline(always)]
    fn live(&self) -> bool {
        self.next & LIVE != 0
    }

    /// Whether the entry holds neither a buffer nor a keep (most operations): its final
    /// completion then has nothing to hand back or drop.
    #[inline(always)]
    pub fn is_bare(&self) -> bool {
        self.stamp & STAMP_OWNS == 0
    }

    /// Empties a [`finish`](Slab::finish)ed entry: drops the keep and hands the buffer back.
    /// Most operations hold neither; a `None` is left in place, with no copy of the field and
    /// no store over it.
    #[inline(always)]
    pub fn release(&mut self) -> Option<B> {
        if self.keep.is_some() {
            drop(self.keep.take());
        }
        if self.buf.is_some() {
            self.buf.take()
        } else {
            None
        }
    }
}

/// The in-flight table of one ring.
pub(super) struct Slab<B> {
    entries: Vec<InFlight<B>>,
    /// The first free entry, or `NONE`.
    free: u32,
}

impl<B> Default for Slab<B> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: NONE,
        }
    }
}

impl<B> Slab<B> {
    /// Records an operation and returns the `user_data` of its SQE: its index (the low 32 bits,
    /// which [`get`](Self::get) and [`finish`](Self::finish) take) and its generation.
    ///
    /// The buffer and keep come in `ManuallyDrop`, and are leaked, not dropped, if the table
    /// cannot grow (a panic at 2^31 operations in flight): so no unwinding path holds them,
    /// and the compiler can see a `None` through to the test of it here.
    #[inline(always)]
    pub fn insert(
        &mut self,
        wq: WqId,
        side: Side,
        cookie: u64,
        buf: ManuallyDrop<Option<B>>,
        uring_serial: u32,
        keep: ManuallyDrop<Option<Box<Retained>>>,
    ) -> u64 {
        let i = self.free;
        // One bounds check for both cases: `NONE` (an empty free list) is never an index.
        let (i, e) = if (i as usize) < self.entries.len() {
            (i, &mut self.entries[i as usize])
        } else {
            (self.entries.len() as u32, Self::grow(&mut self.entries))
        };
        // A grown entry's `next` is `NONE`, as `free` was.
        self.free = e.next;
        let generation = (e.generation + 1) % GENERATIONS;
        e.generation = generation;
        debug_assert!(
            !e.live() && e.buf.is_none() && e.keep.is_none(),
            "a free entry"
        );
        debug_assert!(uring_serial < URING_SERIALS);
        e.wq_key = wq.key();
        e.cookie = cookie;
        let owns = buf.is_some() || keep.is_some();
        e.stamp = uring_serial << STAMP_SERIAL
            | if owns { STAMP_OWNS } else { 0 }
            | if side == Side::Recv { STAMP_RECV } else { 0 };
        e.next = LIVE;
        // A free entry holds neither a buffer nor a keep, so a `None` needs no store (a copy of
        // a `None` just built in narrower stores would also stall; see `Sqe::copy_to`), and the
        // `None`s a `Some` replaces need no drop.
        if buf.is_some() {
            std::mem::forget(std::mem::replace(&mut e.buf, ManuallyDrop::into_inner(buf)));
        }
        if keep.is_some() {
            std::mem::forget(std::mem::replace(
                &mut e.keep,
                ManuallyDrop::into_inner(keep),
            ));
        }
        u64::from(i) | u64::from(generation) << 32
    }

    /// Adds a free entry at the end of `entries` (the free list being empty) and returns it.
    #[cold]
    fn grow(entries: &mut Vec<InFlight<B>>) -> &mut InFlight<B> {
        assert!(entries.len() < NONE as usize, "2^31 operations in flight");
        entries.push(InFlight {
            wq_key: 0,
            cookie: 0,
            buf: None,
            keep: None,
            stamp: 0,
            generation: 0,
            next: NONE,
        });
        entries.last_mut().expect("just pushed")
    }

    /// The live entry at `i`.
    #[inline(always)]
    pub fn get(&self, i: u32) -> Option<&InFlight<B>> {
        self.entries.get(i as usize).filter(|e| e.live())
    }

    /// Frees entry `i` at its operation's final completion and returns it, still holding its
    /// buffer and keep: the caller reads what it needs, then empties it with
    /// [`InFlight::release`] (the next [`insert`](Self::insert) there expects it empty).
    #[inline(always)]
    pub fn finish(&mut self, i: u32) -> Option<&mut InFlight<B>> {
        let e = self.entries.get_mut(i as usize).filter(|e| e.live())?;
        e.next = self.free;
        self.free = i;
        Some(e)
    }

    /// The `user_data` of the live operation of `wq` with `cookie`.
    pub fn find(&self, wq: WqId, cookie: u64) -> Option<u64> {
        self.entries
            .iter()
            .position(|e| e.live() && e.wq_key == wq.key() && e.cookie == cookie)
            .map(|i| i as u64 | u64::from(self.entries[i].generation) << 32)
    }

    /// Operations in flight: counted over the entries, for the rare paths that ask (a resize,
    /// a teardown, a warning), so that posting and reaping keep no count.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.live()).count()
    }

    /// Forgets every operation still in flight, leaking its buffer and keep: for a ring that
    /// must go while the kernel may still write into them.
    pub fn leak_all(&mut self) {
        for e in self.entries.drain(..) {
            std::mem::forget(e);
        }
        self.free = NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_with_a_pool_message_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<InFlight<regio_pool::Message>>(), 64);
    }

    #[test]
    fn entries_are_reused_and_keep_their_side_and_serial() {
        let mut slab = Slab::<u8>::default();
        let wq = WqId {
            index: 3,
            generation: 9,
        };
        let a = slab.insert(
            wq,
            Side::Recv,
            11,
            ManuallyDrop::new(Some(1)),
            URING_SERIALS - 1,
            ManuallyDrop::new(None),
        ) as u32;
        let b = slab.insert(
            wq,
            Side::Send,
            12,
            ManuallyDrop::new(None),
            0,
            ManuallyDrop::new(None),
        );
        assert_eq!(slab.len(), 2);
        let e = slab.get(a).unwrap();
        assert_eq!(
            (e.side(), e.uring_serial(), e.cookie),
            (Side::Recv, URING_SERIALS - 1, 11)
        );
        assert_eq!(slab.find(wq, 12), Some(b));
        let e = slab.finish(a).unwrap();
        assert_eq!(e.release(), Some(1));
        assert!(
            slab.get(a).is_none() && slab.finish(a).is_none(),
            "freed once"
        );
        let again = slab.insert(
            wq,
            Side::Send,
            13,
            ManuallyDrop::new(None),
            1,
            ManuallyDrop::new(None),
        );
        assert_eq!(again as u32, a, "reused");
        assert_ne!(again >> 32, 0, "with another generation");
        assert_eq!(slab.len(), 2);
    }

    #[test]
    fn user_data_keeps_clear_of_the_rings_own_bits() {
        let mut slab = Slab::<u8>::default();
        let wq = WqId {
            index: 0,
            generation: 0,
        };
        let first = slab.insert(
            wq,
            Side::Send,
            0,
            ManuallyDrop::new(None),
            0,
            ManuallyDrop::new(None),
        );
        assert_eq!(first >> 32, 1, "a new entry's first generation");
        assert_eq!(slab.finish(first as u32).and_then(|e| e.release()), None);
        slab.entries[0].generation = GENERATIONS - 2;
        let ud = slab.insert(
            wq,
            Side::Send,
            1,
            ManuallyDrop::new(None),
            0,
            ManuallyDrop::new(None),
        );
        assert_eq!(ud >> 32, u64::from(GENERATIONS - 1));
        assert_eq!(ud >> 62, 0);
        assert!(slab.get(ud as u32).is_some());
        assert_eq!(slab.finish(ud as u32).and_then(|e| e.release()), None);
        let next = slab.insert(
            wq,
            Side::Send,
            2,
            ManuallyDrop::new(None),
            0,
            ManuallyDrop::new(None),
        );
        assert_eq!(
            (next as u32, next >> 32),
            (ud as u32, 0),
            "the generation wraps"
        );
    }
}
