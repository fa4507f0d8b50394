//! `Message`: the guard over one element (a descriptor and its buffers).
//!
//! # Synchronization
//!
//! - **Exclusive ownership.** A message holds its elements alone, so it writes their generations
//!   with Relaxed stores; the hand-off that follows a release (a magazine, the store's Release
//!   CAS, the waiter list's mutex) orders those writes before the next holder's.
//! - **Raw round trips.** [`Message::into_raw`] publishes with a Release store, and
//!   [`MessagePool::from_raw`](crate::MessagePool::from_raw) redeems with an Acquire CAS from that
//!   exact generation, so a raw message is redeemed at most once.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use regio_loom_shim::sync::atomic::Ordering;

use crate::descriptor::Descriptor;
use crate::key::{BufKey, ElemRef};
use crate::segment::{generations, ElemMeta, Group};
use crate::shared::Inner;

/// One element of the pool: a [`Descriptor`] plus one or more registered buffers (a scatter
/// list). It goes back to its pool when dropped, on any thread.
///
/// The buffers are registered memory: [`key`](Self::key) and [`keys`](Self::keys) name them the
/// way the kernel does, and [`as_ptr`](Self::as_ptr) gives the address for building an SQE.
pub struct Message {
    /// The head element's metadata, which also names the pool.
    head: NonNull<ElemMeta>,
    tag: Tag,
}

// Two words, so that a `Message` (and an `Option` or `Result` of one) travels in registers: a
// bigger one goes through the stack, where copying it back in pieces of other sizes defeats
// store-to-load forwarding on every acquire.
const _: () = assert!(std::mem::size_of::<Message>() == 16);

/// A message's generation, buffer count and size class, in one word. As three fields, the
/// compiler may build the word on the stack with narrow stores and read it back with one wide
/// load, which store-to-load forwarding cannot serve: a stall of a dozen cycles on every
/// acquire whose message goes through memory (a `Vec::extend` of acquires did, at 2.3 times the
/// time of the same loop built without the stall). Built with shifts, it stays in a register.
#[derive(Clone, Copy)]
struct Tag(u64);

impl Tag {
    #[inline(always)]
    fn new(generation: u32, nbufs: u8, class: u8) -> Tag {
        Tag(u64::from(generation) | u64::from(nbufs) << 32 | u64::from(class) << 40)
    }

    /// The generation the message was stamped with.
    #[inline(always)]
    fn generation(self) -> u32 {
        self.0 as u32
    }

    /// How many buffers the message holds (1 to [`MAX_SG`](crate::MAX_SG)).
    #[inline(always)]
    fn nbufs(self) -> u8 {
        (self.0 >> 32) as u8
    }

    /// The size class (that of the head's metadata), carried here so that the release's
    /// magazine lookup does not wait for a load from the metadata.
    #[inline(always)]
    fn class(self) -> u8 {
        (self.0 >> 40) as u8
    }
}

// SAFETY: a message owns its element exclusively; the pool is `Sync` and accepts releases from
// any thread, and the buffers are plain bytes.
unsafe impl Send for Message {}
// SAFETY: `&Message` gives only shared access to the descriptor and the bytes.
unsafe impl Sync for Message {}

/// A message lent out as a plain value, for code that must carry it where a [`Message`] cannot
/// go (a slab entry, an integer field through [`to_bits`](Self::to_bits)). Redeem it with
/// [`MessagePool::from_raw`](crate::MessagePool::from_raw).
///
/// It names its pool, its element and the element's generation, so redeeming it anywhere but in
/// its own pool is refused ([`Error::ForeignPool`](crate::Error::ForeignPool)), and a stale or
/// doubled raw message is refused too: never a second owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawMessage {
    pool: u32,
    index: u32,
    generation: u32,
}

impl RawMessage {
    pub(crate) fn new(pool: u32, index: u32, generation: u32) -> Self {
        RawMessage {
            pool,
            index,
            generation,
        }
    }

    /// The id of the pool that lent it ([`MessagePool::id`](crate::MessagePool::id)).
    pub fn pool(self) -> u32 {
        self.pool
    }

    pub(crate) fn index(self) -> u32 {
        self.index
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }

    /// The raw message as a number: the pool id in bits 64..96, the element in bits 32..64 and
    /// its generation in bits 0..32.
    pub fn to_bits(self) -> u128 {
        (u128::from(self.pool) << 64) | u128::from(self.element_word())
    }

    /// The inverse of [`to_bits`](Self::to_bits): `None` if a bit above the 96th is set. Any
    /// other number makes a raw message, which `from_raw` rejects unless it names a message
    /// that pool has lent.
    pub fn from_bits(bits: u128) -> Option<RawMessage> {
        if bits >> 96 != 0 {
            return None;
        }
        Some(RawMessage::from_element_word(
            (bits >> 64) as u32,
            bits as u64,
        ))
    }

    /// The element and generation in one word, for a pool's own parking words, which know their
    /// pool (see [`crate::feed`]).
    pub(crate) fn element_word(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    /// The raw message of `pool` whose [`element_word`](Self::element_word) is `word`.
    pub(crate) fn from_element_word(pool: u32, word: u64) -> RawMessage {
        RawMessage::new(pool, (word >> 32) as u32, word as u32)
    }
}

impl Message {
    /// Wraps the head element `head` (of size class `class`), already activated with
    /// generation `generation`, heading `nbufs` buffers.
    #[inline]
    pub(crate) fn from_parts(head: &ElemMeta, generation: u32, nbufs: u8, class: u8) -> Message {
        debug_assert_eq!(class, head.class);
        Message {
            head: NonNull::from(head),
            tag: Tag::new(generation, nbufs, class),
        }
    }

    fn meta(&self) -> &ElemMeta {
        // SAFETY: the message counts as a user of the pool, so the metadata is alive.
        unsafe { self.head.as_ref() }
    }

    fn pool(&self) -> &Inner {
        // SAFETY: the message counts as a user of the pool, so it is alive.
        unsafe { self.meta().pool.as_ref() }
    }

    fn group(&self) -> &Group {
        // SAFETY: the message holds its head element, and only `activate_group` (before the
        // message existed) and the message's own drop write the group.
        unsafe { &*self.meta().group.get() }
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        // SAFETY: the message holds its head element exclusively; `&self` excludes `&mut`.
        unsafe { &*self.meta().desc.get() }
    }

    /// The descriptor, to fill in.
    pub fn descriptor_mut(&mut self) -> &mut Descriptor {
        let meta = self.meta();
        // SAFETY: as above, and `&mut self` makes the access exclusive; the flag belongs to the
        // holder like the descriptor (see `ElemMeta::desc_dirty`).
        unsafe {
            *meta.desc_dirty.get() = true;
            &mut *meta.desc.get()
        }
    }

    /// The handle the descriptor is stamped with.
    pub fn handle(&self) -> ElemRef {
        ElemRef {
            pool: self.pool().uid,
            index: self.meta().index,
            generation: self.tag.generation(),
        }
    }

    /// The number of buffers.
    pub fn buf_count(&self) -> usize {
        usize::from(self.tag.nbufs())
    }

    /// The size class of the buffers.
    pub fn class(&self) -> usize {
        usize::from(self.tag.class())
    }

    fn member(&self, i: usize) -> &ElemMeta {
        assert!(i < self.buf_count(), "buffer {i} of {}", self.buf_count());
        if i == 0 {
            return self.meta();
        }
        self.pool().dir.held(self.group().elems[i])
    }

    /// The key of the first buffer, whole.
    pub fn key(&self) -> BufKey {
        self.meta().key
    }

    /// The keys of all buffers, whole, in scatter order.
    pub fn keys(&self) -> impl Iterator<Item = BufKey> + '_ {
        (0..self.buf_count()).map(|i| self.member(i).key)
    }

    /// The key of buffer `i`.
    ///
    /// # Panics
    ///
    /// If `i >= buf_count()`.
    pub fn key_of(&self, i: usize) -> BufKey {
        self.member(i).key
    }

    /// The address of the first buffer, for building an SQE.
    pub fn as_ptr(&self) -> *mut u8 {
        self.meta().data.as_ptr()
    }

    /// The address of buffer `i`.
    ///
    /// # Panics
    ///
    /// If `i >= buf_count()`.
    pub fn ptr_of(&self, i: usize) -> *mut u8 {
        self.member(i).data.as_ptr()
    }

    /// The bytes of the first buffer.
    pub fn as_slice(&self) -> &[u8] {
        let m = self.meta();
        // SAFETY: the buffer belongs to this message alone and is `key.len` bytes long; `&self`
        // excludes writers.
        unsafe { std::slice::from_raw_parts(m.data.as_ptr(), m.key.len as usize) }
    }

    /// The bytes of the first buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let m = self.meta();
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(m.data.as_ptr(), m.key.len as usize) }
    }

    /// The bytes of buffer `i`.
    ///
    /// # Panics
    ///
    /// If `i >= buf_count()`.
    pub fn buf(&self, i: usize) -> &[u8] {
        let m = self.member(i);
        // SAFETY: as in `as_slice`: every member buffer belongs to this message alone.
        unsafe { std::slice::from_raw_parts(m.data.as_ptr(), m.key.len as usize) }
    }

    /// The bytes of buffer `i`, writable.
    ///
    /// # Panics
    ///
    /// If `i >= buf_count()`.
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        let m = self.member(i);
        // SAFETY: as in `as_mut_slice`.
        unsafe { std::slice::from_raw_parts_mut(m.data.as_ptr(), m.key.len as usize) }
    }

    /// Whether `key` lies inside one of this message's buffers: the check an adapter makes
    /// before it lets a descriptor's slice reach the kernel.
    ///
    /// Inlined whole for a single-buffer message, and with no reference to the message passed
    /// on, so that a caller holding the message in registers keeps it there.
    #[inline(always)]
    pub fn owns(&self, key: BufKey) -> bool {
        if self.tag.nbufs() == 1 {
            return key_inside(key, self.meta().key);
        }
        group_owns(self.meta().pool, self.head, key)
    }

    /// The total size of the buffers.
    pub fn capacity(&self) -> usize {
        self.keys().map(|k| k.len as usize).sum()
    }

    /// Lends the message out as a number. Until it is redeemed, the element stays out of the
    /// pool (and keeps the pool alive).
    pub fn into_raw(self) -> RawMessage {
        let this = ManuallyDrop::new(self);
        let g = generations::next(this.tag.generation(), generations::RAW);
        // Release: pairs with the Acquire CAS in `from_raw`, possibly on another thread, so
        // that whatever was written to the message is visible to its next holder.
        this.meta().generation.store(g, Ordering::Release);
        RawMessage::new(this.pool().uid, this.meta().index, g)
    }
}

impl Drop for Message {
    #[inline(always)]
    fn drop(&mut self) {
        if self.tag.nbufs() == 1 {
            let meta = self.meta();
            let next = free(meta, self.tag.generation());
            // SAFETY: a message's elements belong to its pool, it still holds `meta`, and
            // `class` is the element's class.
            if unsafe {
                self.pool()
                    .put_cached(meta, usize::from(self.tag.class()), next)
            } {
                return;
            }
            self.put_uncached(next);
        } else {
            self.release_group();
        }
    }
}

impl Message {
    /// The rest of a single-buffer message's drop when its element does not go into this
    /// thread's magazine at once. `next` is the generation [`free`] gave it.
    #[cold]
    #[inline(never)]
    fn put_uncached(&mut self, next: u32) {
        let pool = self.meta().pool.as_ptr().cast_const();
        // SAFETY: the element belongs to the pool, and the message still holds it.
        let users = unsafe { self.pool().put_slow(self.meta(), next) };
        // SAFETY: `pool` came from `create` (messages point at live pools); the message held
        // its element as a user, and `users` elements went back to the stores; nothing touches
        // the pool after this.
        unsafe { Inner::unref(pool, users) };
    }

    /// Releases every buffer of a scatter message, and resets the head's group and the
    /// members' head links (see `ElemMeta::head`).
    #[cold]
    #[inline(never)]
    fn release_group(&mut self) {
        let pool = self.meta().pool.as_ptr().cast_const();
        let inner = self.pool();
        let group = *self.group();
        // SAFETY: the message holds its head element exclusively until the release below.
        unsafe { (*self.meta().group.get()).len = 1 };
        let mut users = 0;
        for &elem in &group.elems[1..usize::from(group.len)] {
            let meta = inner.dir.held(elem);
            // Relaxed: the member is still held by this message; see `free`.
            meta.head.store(regio_sync::NIL, Ordering::Relaxed);
            // Relaxed: the member is still held by this message, which stamped it.
            let next = free(meta, meta.generation.load(Ordering::Relaxed));
            // SAFETY: the members belong to the message's pool, and it still holds them.
            users += unsafe { inner.put(meta, next) };
        }
        let next = free(self.meta(), self.tag.generation());
        // SAFETY: as above.
        users += unsafe { inner.put(self.meta(), next) };
        // SAFETY: as in `put_uncached`.
        unsafe { Inner::unref(pool, users) };
    }
}

/// Marks the held element `meta`, whose generation is `held`, free (poisoning its buffer in
/// debug builds), ready to go back to the pool. Returns its new generation, the one its next
/// holder gets (see [`generations`]).
#[inline(always)]
fn free(meta: &ElemMeta, held: u32) -> u32 {
    #[cfg(debug_assertions)]
    // SAFETY: the message still holds the buffer, which is `key.len` bytes long.
    unsafe {
        std::ptr::write_bytes(meta.data.as_ptr(), POISON, meta.key.len as usize);
    }
    debug_assert_eq!(generations::state(held), generations::HELD);
    // Relaxed: a check of the caller's copy; only this message writes the generation.
    debug_assert_eq!(meta.generation.load(Ordering::Relaxed), held);
    // No handle has this generation yet.
    let next = generations::after_held(held);
    // Relaxed: the message holds the element exclusively; the store or magazine hand-off that
    // follows orders this store before the next holder's accesses.
    meta.generation.store(next, Ordering::Relaxed);
    next
}

/// Whether `key` lies inside `own`.
#[inline(always)]
fn key_inside(key: BufKey, own: BufKey) -> bool {
    key.region == own.region && key.offset >= own.offset && key.end() <= own.end()
}

/// [`Message::owns`] for a scatter message headed by `head` in `pool`, given by value so that
/// the message's own address is not taken.
#[cold]
#[inline(never)]
fn group_owns(pool: NonNull<Inner>, head: NonNull<ElemMeta>, key: BufKey) -> bool {
    // SAFETY: called by `Message::owns`, whose `&self` keeps the message, and so its pool and
    // its head element's metadata, alive for the call; the message holds its head, so only its
    // own drop writes the group.
    let (inner, group) = unsafe { (pool.as_ref(), *head.as_ref().group.get()) };
    group.elems[..usize::from(group.len)]
        .iter()
        .any(|&elem| key_inside(key, inner.dir.held(elem).key))
}

/// The byte that returned buffers are filled with in debug builds, so that a use after release
/// shows up as garbage rather than as plausible old data.
pub const POISON: u8 = 0xA5;

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("handle", &self.handle())
            .field("descriptor", self.descriptor())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Tag;

    #[test]
    fn a_tag_keeps_its_three_fields_apart() {
        for (generation, nbufs, class) in [(u32::MAX, 1, 0), (0, u8::MAX, u8::MAX), (7, 4, 3)] {
            let tag = Tag::new(generation, nbufs, class);
            assert_eq!(
                (tag.generation(), tag.nbufs(), tag.class()),
                (generation, nbufs, class)
            );
        }
    }
}
