//! The provided-buffer feed: pool buffers lent to an io_uring provided-buffer ring.
//!
//! A multishot receive picks its buffer from a `PBUF_RING` and reports the buffer id in the
//! completion. [`BufFeed`] fills such a ring with buffers of the pool through a sink that the
//! adapter implements ([`BufRingSink`]), turns a completed buffer id back into a message
//! ([`BufFeed::take`]), and puts the buffer back into the ring when that message drops.
//!
//! Each buffer id parks its message as a [`RawMessage`] in an atomic word (its element and
//! generation: the feed knows the pool), so a duplicate or stale buffer id is reported as
//! [`Error::NotInRing`] and the generation check catches the rest.
//!
//! The contract between the feed, its sink and the kernel is in [`BufFeed`]'s docs, where the
//! public API shows it.
//!
//! # Synchronization
//!
//! - **One parking word per buffer id.** [`park`](Shared::park) turns the message into a raw
//!   message and stores it with Release; [`BufFeed::take`] swaps it out with Acquire. The swap
//!   gives the parked message to exactly one taker, and the pair orders the previous holder's
//!   writes before the taker's reads.
//! - **Generations back it up.** Redeeming goes through
//!   [`MessagePool::from_raw`](crate::MessagePool::from_raw), whose CAS rejects a raw message that
//!   is stale, so even a corrupted word cannot make two owners.
//! - **Retiring needs no ordering of its own.** The feed is dropped by the last owner of its
//!   shared state (`Arc`'s own Release/Acquire pair orders every earlier park and take before
//!   it), and nothing else can touch the parking words by then.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use regio_loom_shim::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::message::{Message, RawMessage};
use crate::pool::MessagePool;

/// The adapter's side of a provided-buffer ring: makes buffers available to the kernel
/// (`io_uring_buf_ring_add` and the tail advance), and takes the ring away from it in the end.
///
/// # Safety
///
/// A [`BufFeed`] lends pool memory to the kernel through its sink and relies on the sink for its
/// part of the [ring's contract](BufFeed#the-rings-contract). An implementation promises that:
///
/// - [`entries`](Self::entries) is the ring's number of slots, the same on every call, and a
///   ring that never holds more buffers than that never overwrites an entry the kernel has not
///   consumed;
/// - nothing but this sink's [`push`](Self::push) adds buffers to the ring (so one ring never
///   serves two feeds);
/// - [`retire`](Self::retire) returns true only if the kernel will never again hand out or
///   write into a buffer pushed into the ring.
///
/// Safe code can neither push into a sink (the kernel would write wherever the address points):
///
/// ```compile_fail,E0133
/// fn lend(sink: &dyn regio_pool::BufRingSink, anywhere: std::ptr::NonNull<u8>) {
///     sink.push(anywhere, 4096, 0);
/// }
/// ```
///
/// nor make one (say, a second sink over a ring that a feed already fills):
///
/// ```compile_fail,E0200
/// struct Shared;
/// impl regio_pool::BufRingSink for Shared {
///     fn entries(&self) -> u16 {
///         8
///     }
///     unsafe fn push(&self, _: std::ptr::NonNull<u8>, _: u32, _: u16) {}
///     fn retire(self: Box<Self>) -> bool {
///         true
///     }
/// }
/// ```
pub unsafe trait BufRingSink: Send + Sync {
    /// The number of slots in the ring.
    fn entries(&self) -> u16;

    /// Adds `len` bytes at `addr` to the ring under buffer id `bid`.
    ///
    /// # Safety
    ///
    /// The `len` bytes at `addr` are writable memory that stays allocated and that nobody else
    /// reads or writes until the kernel reports the buffer in a completion, or until
    /// [`retire`](Self::retire) returns true. `bid` is not in the ring already, and with this
    /// buffer the ring holds at most [`entries`](Self::entries) buffers.
    unsafe fn push(&self, addr: NonNull<u8>, len: u32, bid: u16);

    /// Takes the ring away from the kernel for good (unregisters it). Returns whether the kernel
    /// let go: true only if it will never again hand out or write into a buffer pushed into the
    /// ring, and false if it may (the ring is then leaked, with its buffers).
    fn retire(self: Box<Self>) -> bool;
}

/// The value of an empty parking word (no valid raw message is 0: its state bits say RAW).
const EMPTY: u64 = 0;

/// The pools of feeds whose ring the kernel did not let go of. Their handles stay here for the
/// rest of the process, so the pools, and the buffers still lent to those rings, stay mapped (and
/// reachable, which leak checkers see as intended) and are never reused.
static KEPT: Mutex<Vec<MessagePool>> = Mutex::new(Vec::new());

struct Shared {
    pool: MessagePool,
    /// `None` only while the feed drops, once the sink is retired.
    sink: Option<Box<dyn BufRingSink>>,
    parked: Box<[AtomicU64]>,
}

impl Shared {
    /// The raw message that the parking word `word` holds (the feed's own pool lent it).
    fn raw(&self, word: u64) -> RawMessage {
        RawMessage::from_element_word(self.pool.id(), word)
    }

    /// Lends `msg` to the ring under `bid`, which is not in the ring (see the module docs).
    fn park(&self, bid: u16, msg: Message) {
        let (addr, len) = (msg.as_ptr(), msg.key().len);
        let raw = msg.into_raw();
        // Release: the raw message (and the buffer's state) is published to the thread that
        // takes this bid next, which swaps with Acquire.
        self.parked[usize::from(bid)].store(raw.element_word(), Ordering::Release);
        let sink = self
            .sink
            .as_deref()
            .expect("the sink is retired only as the feed drops");
        // SAFETY: the buffer is `len` bytes of pool memory that the raw message just parked owns
        // alone; only a take (whose caller vouches that the kernel picked the buffer) or the
        // feed's drop (after the sink is retired) redeems it. `bid` is not in the ring: it is
        // either new or came back from a take. Ids run below `count <= entries`, so with this
        // one the ring holds at most `entries` buffers.
        unsafe {
            sink.push(
                NonNull::new(addr).expect("buffers are never null"),
                len,
                bid,
            );
        }
    }
}

/// Lends `count` buffers of one class to a provided-buffer ring.
///
/// Dropping the feed retires the ring first (a receive still armed on its group then ends for
/// lack of buffers) and gives the buffers back to the pool afterwards; a [`Received`] still
/// alive keeps the ring until it drops too.
///
/// # The ring's contract
///
/// The kernel writes into whatever buffer the ring offers it, whoever holds that buffer by then.
/// The feed and its sink therefore keep one contract, stated here and enforced by the feed:
///
/// 1. **One producer, never more buffers than slots.** A feed owns its sink (it takes it by
///    value) and is the only one to push into its ring: [`BufRingSink`] is an `unsafe trait`
///    whose implementor promises that nothing else pushes into the ring, and
///    [`push`](BufRingSink::push) is an `unsafe fn`, so safe code can neither share a ring
///    between feeds nor put other memory in it. [`BufFeed::new`] refuses more buffers than the
///    ring has slots ([`Error::FeedTooLarge`]), and each buffer id is in the ring at most once
///    (it is pushed only while its parking word holds it, and the word is emptied only by a
///    take). So the ring never holds more buffers than slots, and the producer never overwrites
///    an entry that the kernel has not consumed yet.
/// 2. **A buffer leaves the ring only once the kernel picked it.** The feed cannot see the
///    kernel's head, so [`BufFeed::take`] is an `unsafe fn`: its caller vouches that a
///    completion reported the buffer id, and uses each such completion once.
/// 3. **The ring is retired before its buffers go back to the pool.** When the feed and the
///    last [`Received`] are gone, the feed retires its sink ([`BufRingSink::retire`]: the ring
///    is unregistered, so a receive still armed on the group can pick nothing from it) and only
///    then returns the parked buffers to the pool. If the kernel did not let go of the ring, the
///    buffers stay lent for the rest of the process, and their pool stays mapped with them: they
///    are never handed to anyone else while the kernel may still write to them.
///
pub struct BufFeed {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BufFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufFeed")
            .field("count", &self.shared.parked.len())
            .finish_non_exhaustive()
    }
}

impl BufFeed {
    /// Takes `count` messages of `class` from `pool` and pushes their buffers into `sink` with
    /// ids `0..count`.
    ///
    /// # Errors
    ///
    /// [`Error::FeedTooLarge`] if the ring has fewer than `count` slots, [`Error::NoSuchClass`]
    /// if the pool has no `class`, and [`Error::Exhausted`] if the pool lacks `count` free
    /// elements. Nothing is kept and nothing is pushed then.
    pub fn new(
        pool: &MessagePool,
        class: usize,
        count: u16,
        sink: impl BufRingSink + 'static,
    ) -> Result<BufFeed> {
        let entries = sink.entries();
        if count > entries {
            return Err(Error::FeedTooLarge { count, entries });
        }
        let mut msgs = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            msgs.push(pool.try_acquire_class(class)?);
        }
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            sink: Some(Box::new(sink)),
            parked: (0..count).map(|_| AtomicU64::new(EMPTY)).collect(),
        });
        for (bid, msg) in (0..count).zip(msgs) {
            shared.park(bid, msg);
        }
        Ok(BufFeed { shared })
    }

    /// Turns the buffer id `bid` of a completion that received `len` bytes into a message. The
    /// descriptor's slice is cut to `len`. Dropping the message puts the buffer back into the
    /// ring.
    ///
    /// # Safety
    ///
    /// If `bid` is in this feed's ring, the kernel picked it since it was last pushed: `bid` is
    /// what a completion of a receive on this feed's buffer group reported, and no earlier take
    /// used that completion. (An id that is not in the ring, out of range or held by a
    /// [`Received`], is refused and needs no promise.) A buffer the kernel has not picked is still
    /// in the ring, and the kernel may write into it while the `Received` holds it:
    ///
    /// ```compile_fail,E0133
    /// fn early(feed: &regio_pool::BufFeed) {
    ///     let _received = feed.take(0, 64); // no completion reported buffer 0
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotInRing`] if `bid` is not in the ring (a duplicate or stale completion), or
    /// [`Error::StaleHandle`] if its parked message is not what was lent.
    pub unsafe fn take(&self, bid: u16, len: u32) -> Result<Received> {
        let slot = self
            .shared
            .parked
            .get(usize::from(bid))
            .ok_or(Error::NotInRing { bid })?;
        // Acquire: pairs with the Release store in `park`.
        let word = slot.swap(EMPTY, Ordering::Acquire);
        if word == EMPTY {
            return Err(Error::NotInRing { bid });
        }
        let mut msg = self.shared.pool.from_raw(self.shared.raw(word))?;
        msg.descriptor_mut().truncate(len as usize);
        Ok(Received {
            msg: Some(msg),
            bid,
            shared: Arc::clone(&self.shared),
        })
    }

    /// The number of buffer ids.
    pub fn count(&self) -> u16 {
        self.shared.parked.len() as u16
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let sink = self.sink.take().expect("the sink is retired only here");
        if !sink.retire() {
            let lent = self.parked.iter().filter(|w| {
                // Relaxed: `&mut self`: no other thread can reach the words (module docs).
                w.load(Ordering::Relaxed) != EMPTY
            });
            tracing::error!(
                pool = self.pool.id(),
                buffers = lent.count(),
                "the kernel did not let go of a provided-buffer ring; its buffers stay lent, and \
                 their pool mapped, for the rest of the process"
            );
            KEPT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.pool.clone());
            return;
        }
        for slot in self.parked.iter() {
            // Acquire: as in `take`.
            let word = slot.swap(EMPTY, Ordering::Acquire);
            if word != EMPTY {
                // A parked message that fails to redeem was never ours to give back.
                let _ = self.pool.release_raw(self.raw(word));
            }
        }
    }
}

/// A message made from a received buffer. It derefs to the [`Message`], read-only: the message
/// stays the feed's, and dropping the `Received` puts its buffer back into the provided-buffer
/// ring under the same id. [`data_mut`](Self::data_mut) gives the bytes to work on in place.
///
/// The message cannot be swapped for another one, which would then go into the ring under this
/// id (a message of another pool would be redeemed as whatever element of the feed's pool has
/// its number):
///
/// ```compile_fail,E0596
/// fn swap(mut received: regio_pool::Received, mut other: regio_pool::Message) {
///     std::mem::swap(&mut *received, &mut other);
/// }
/// ```
pub struct Received {
    msg: Option<Message>,
    bid: u16,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("bid", &self.bid)
            .field("msg", &self.msg)
            .finish()
    }
}

impl Received {
    /// The buffer id.
    pub fn bid(&self) -> u16 {
        self.bid
    }

    /// The received bytes: the buffer, cut to the length the descriptor's slices cover.
    pub fn data(&self) -> &[u8] {
        let buf = self.as_slice();
        &buf[..self.descriptor().len().min(buf.len())]
    }

    /// The received bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let msg = self.msg.as_mut().expect("present until drop");
        let len = msg.descriptor().len();
        let buf = msg.as_mut_slice();
        let len = len.min(buf.len());
        &mut buf[..len]
    }
}

impl Deref for Received {
    type Target = Message;
    fn deref(&self) -> &Message {
        self.msg.as_ref().expect("present until drop")
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            self.shared.park(self.bid, msg);
        }
    }
}
