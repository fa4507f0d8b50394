//! Segments: one region carved into equal buffers, with the per-element metadata, and the
//! directory that names elements by index.
//!
//! An element index is `region << 24 | local`, so a region holds at most 2^24 buffers and the
//! index of any element leads straight to its region and its metadata.
//!
//! # Synchronization
//!
//! - **Publish once.** The directory is an array of `AtomicPtr<Segment>`; a segment is fully
//!   built, then stored with Release by the single grower, and never changes or moves until the
//!   pool is freed. Readers load with Acquire, so they see it whole.
//! - **Metadata ownership.** An element's descriptor and scatter list (`UnsafeCell`s) belong to
//!   whoever holds the element: the thread that popped it from the shared store or a magazine,
//!   or the message that owns it. Those hand-offs (the store's Release/Acquire CAS pair, a
//!   magazine's single owner, the waiter list's mutex) order every access.
//! - **Generations** are stored by the holder and read by validators; see [`generations`].

use std::cell::UnsafeCell;
use std::ptr::NonNull;

use regio_loom_shim::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::descriptor::{Descriptor, Opcode, MAX_SG};
use crate::key::{BufKey, RegionId};
use crate::region::Region;
use crate::shared::Inner;
use regio_sync::{Links, NIL};

/// Bits of an element index that name the buffer inside its region.
pub(crate) const LOCAL_BITS: u32 = 24;
/// The most buffers one region may hold.
pub(crate) const MAX_PER_REGION: usize = 1 << LOCAL_BITS;
/// The most regions one pool may hold.
pub(crate) const MAX_REGIONS: usize = 256;

/// Element generations: a counter in the upper 30 bits and a state in the lower 2.
///
/// Every transition bumps the counter, so each (index, generation) pair names one lifetime of
/// one element, and any handle from an earlier lifetime is detected as stale (up to a wrap
/// after 2^30 transitions of that element).
///
/// A free element already carries the generation that its next holder is stamped with: a
/// release bumps the generation (to one that no handle has), and an acquire only reads it,
/// from the magazine entry that carries it along ([`Cached`](crate::magazine::Cached)) or, on
/// the slower paths, from the element. So the acquiring thread never writes the generation word,
/// and in the common case does not even read it: when messages are released on another thread,
/// the word stays in the releasing CPU's cache.
pub(crate) mod generations {
    /// Held by a [`Message`](crate::Message), or free and waiting for its next holder.
    pub(crate) const HELD: u32 = 1;
    /// Lent out as a [`RawMessage`](crate::RawMessage).
    pub(crate) const RAW: u32 = 2;
    /// The generation of an element that was never handed out.
    pub(crate) const FIRST: u32 = HELD;

    /// The generation after `g`, in `state`.
    #[inline]
    pub(crate) fn next(g: u32, state: u32) -> u32 {
        (g & !3).wrapping_add(4) | state
    }

    /// The generation after the held generation `g`, held again: [`next`]`(g, HELD)`, as one
    /// add (the state bits of `g` are `HELD` already, and the counter's wrap carries out of the
    /// word in both).
    #[inline(always)]
    pub(crate) fn after_held(g: u32) -> u32 {
        debug_assert_eq!(state(g), HELD);
        g.wrapping_add(4)
    }

    /// The state part of `g`.
    #[inline]
    pub(crate) fn state(g: u32) -> u32 {
        g & 3
    }
}

/// The elements of a scatter message, kept in its head element's metadata.
#[derive(Clone, Copy)]
pub(crate) struct Group {
    pub(crate) len: u8,
    pub(crate) elems: [u32; MAX_SG],
}

/// Everything the pool knows about one element besides its buffer's bytes.
///
/// Laid out in three parts so that threads that only read a part never share a cache line
/// with threads that write another: the fixed identity (read by everyone, written once), the
/// synchronisation words (written on every acquire and release, often by different threads),
/// and the holder's descriptor and scatter list.
#[repr(C, align(64))]
pub(crate) struct ElemMeta {
    /// The buffer's key (fixed for the element's life).
    pub(crate) key: BufKey,
    /// This element's index.
    pub(crate) index: u32,
    /// The buffer's first byte.
    pub(crate) data: NonNull<u8>,
    /// The size class.
    pub(crate) class: u8,
    /// The pool the element belongs to (an element outlives none of its pool's users).
    pub(crate) pool: NonNull<Inner>,
    _fixed_end: CacheLineEnd,
    /// The shared store's link.
    pub(crate) link: AtomicU32,
    /// See [`generations`].
    pub(crate) generation: AtomicU32,
    /// The head element of the scatter message this element is a member of, and [`NIL`]
    /// otherwise (a single-buffer message does not write it; a scatter message resets it for its
    /// members when it drops).
    pub(crate) head: AtomicU32,
    _sync_end: CacheLineEnd,
    /// The scatter list, when this element heads a scatter message; `len` is 1 otherwise
    /// (a scatter message resets it when it drops).
    pub(crate) group: UnsafeCell<Group>,
    /// Whether `desc` may differ from the state a single-buffer acquire resets it to (a `Nop`
    /// owned by this element, with this element's whole buffer as its one slice) in more than
    /// its owner's generation: set when a holder borrows the descriptor mutably or a scatter
    /// message heads it, cleared by a full reset. A clean descriptor needs only its generation
    /// restamped on acquire.
    pub(crate) desc_dirty: UnsafeCell<bool>,
    /// The descriptor, when this element heads a message.
    pub(crate) desc: UnsafeCell<Descriptor>,
}

// A clean acquire writes the descriptor's owner stamp after it reads the dirty flag: one line.
const _: () = {
    const LINE: usize = 64;
    let desc = std::mem::offset_of!(ElemMeta, desc);
    let flag_line = std::mem::offset_of!(ElemMeta, desc_dirty) / LINE;
    let owner = crate::descriptor::OWNER_BYTES;
    assert!((desc + owner.start) / LINE == flag_line);
    assert!((desc + owner.end - 1) / LINE == flag_line);
};

/// A zero-sized field that makes the next field of a `repr(C)` struct start on a new cache line.
#[derive(Default)]
#[repr(align(64))]
struct CacheLineEnd;

/// One region and the metadata of its buffers.
pub(crate) struct Segment {
    pub(crate) region: Region,
    pub(crate) buf_size: u32,
    pub(crate) metas: Box<[ElemMeta]>,
}

impl Segment {
    /// Carves `region` into `count` buffers of `buf_size` bytes for class `class` of `pool`.
    pub(crate) fn new(
        pool: &Inner,
        id: RegionId,
        class: u8,
        region: Region,
        buf_size: u32,
        count: u32,
    ) -> Self {
        let base = region.base();
        let first = u32::from(id.0) << LOCAL_BITS;
        let metas = (0..count)
            .map(|local| {
                let offset = local * buf_size;
                ElemMeta {
                    link: AtomicU32::new(NIL),
                    generation: AtomicU32::new(generations::FIRST),
                    head: AtomicU32::new(NIL),
                    _fixed_end: CacheLineEnd,
                    _sync_end: CacheLineEnd,
                    class,
                    pool: NonNull::from(pool),
                    index: first | local,
                    key: BufKey {
                        region: id,
                        offset,
                        len: buf_size,
                    },
                    // SAFETY: `count * buf_size` bytes fit in the region (checked by the grower),
                    // so the offset stays inside the mapping.
                    data: unsafe { base.add(offset as usize) },
                    group: UnsafeCell::new(Group {
                        len: 1,
                        elems: [NIL; MAX_SG],
                    }),
                    // Not yet stamped with an owner or a slice.
                    desc_dirty: UnsafeCell::new(true),
                    desc: UnsafeCell::new(Descriptor::new(Opcode::Nop)),
                }
            })
            .collect();
        Segment {
            region,
            buf_size,
            metas,
        }
    }

    /// The bytes of the region that are carved into buffers.
    pub(crate) fn carved_len(&self) -> u64 {
        self.metas.len() as u64 * u64::from(self.buf_size)
    }
}

/// The append-only table of segments, indexed by region id.
pub(crate) struct Directory {
    segs: Box<[AtomicPtr<Segment>]>,
    count: AtomicUsize,
}

// SAFETY: the directory owns its segments (through the raw pointers); the only interior
// mutability reachable from `&Directory` goes through atomics or through the metadata cells,
// whose accesses are ordered by element ownership (module docs).
unsafe impl Send for Directory {}
// SAFETY: as above.
unsafe impl Sync for Directory {}

impl Directory {
    pub(crate) fn new(max_regions: usize) -> Self {
        Self {
            segs: (0..max_regions)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            count: AtomicUsize::new(0),
        }
    }

    /// The number of published regions.
    pub(crate) fn len(&self) -> usize {
        // Acquire: a caller that sees `n` regions may look them up (pairs with `publish`).
        self.count.load(Ordering::Acquire)
    }

    /// The most regions this directory can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.segs.len()
    }

    /// The segment of region `id`, if published.
    #[inline]
    pub(crate) fn get(&self, id: u16) -> Option<&Segment> {
        // Acquire: pairs with the Release store in `publish`, so the segment is seen whole.
        let ptr = self.segs.get(usize::from(id))?.load(Ordering::Acquire);
        // SAFETY: a published segment stays allocated and unchanged until the directory drops.
        unsafe { ptr.as_ref() }
    }

    /// The metadata of element `index`, if it exists.
    #[inline]
    pub(crate) fn meta(&self, index: u32) -> Option<&ElemMeta> {
        let seg = self.get((index >> LOCAL_BITS) as u16)?;
        seg.metas
            .get((index & (MAX_PER_REGION as u32 - 1)) as usize)
    }

    /// The metadata of an element the caller holds.
    #[inline]
    pub(crate) fn held(&self, index: u32) -> &ElemMeta {
        self.meta(index)
            .expect("an element that was handed out belongs to a published region")
    }

    /// Publishes `seg` as the next region and returns its id. Only the grower calls this, one at a
    /// time (under the pool's grow lock).
    pub(crate) fn publish(&self, seg: Segment) -> RegionId {
        // Relaxed: only the grower, serialised by its lock, writes `count`.
        let id = self.count.load(Ordering::Relaxed);
        let ptr = Box::into_raw(Box::new(seg));
        // Release: the segment's contents happen-before any Acquire load that sees the pointer.
        self.segs[id].store(ptr, Ordering::Release);
        // Release: pairs with the Acquire load in `len`.
        self.count.store(id + 1, Ordering::Release);
        RegionId(id as u16)
    }

    /// Every published segment with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RegionId, &Segment)> {
        (0..self.len()).filter_map(|i| self.get(i as u16).map(|s| (RegionId(i as u16), s)))
    }
}

impl Links for Directory {
    #[inline]
    fn link(&self, index: u32) -> Option<&AtomicU32> {
        self.meta(index).map(|m| &m.link)
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        for slot in self.segs.iter() {
            // Relaxed: `&mut self`, so no other thread can reach the directory.
            let ptr = slot.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: `ptr` came from `Box::into_raw` in `publish` and is freed only here.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::generations::{after_held, next, FIRST, HELD};

    #[test]
    fn after_held_is_the_next_held_generation_through_the_wrap() {
        for g in [FIRST, FIRST + 4, u32::MAX - 6, u32::MAX - 2] {
            assert_eq!(after_held(g), next(g, HELD), "after {g:#x}");
        }
        assert_eq!(
            after_held(u32::MAX - 2),
            HELD,
            "the counter wraps to 0, held"
        );
    }
}
