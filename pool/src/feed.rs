//! The provided-buffer feed: pool buffers lent to an io_uring provided-buffer ring.
//!
//! A multishot receive picks its buffer from a `PBUF_RING` and reports the buffer id in the
//! completion. [`BufFeed`] fills such a ring with buffers of the pool through a sink that the
//! adapter implements ([`BufRingSink`]), turns a completed buffer id back into a message
//! ([`BufFeed::take`]), and puts the buffer back into the ring when that message drops.
//!
//! Each ring slot parks its message as a [`RawMessage`] in an atomic word (its element and
//! generation: the feed knows the pool), so a duplicate or stale buffer id is reported as
//! [`Error::NotInRing`] and the generation check catches the rest.
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

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use regio_sync::primitive::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::handle::MessagePool;
use crate::message::{Message, RawMessage};

/// The adapter's side of a provided-buffer ring: makes one buffer available to the kernel
/// (`io_uring_buf_ring_add` and the tail advance).
pub trait BufRingSink: Send + Sync {
    /// Adds `len` bytes at `addr` to the ring under buffer id `bid`.
    fn push(&self, addr: NonNull<u8>, len: u32, bid: u16);
}

/// The value of an empty parking word (no valid raw message is 0: its state bits say RAW).
const EMPTY: u64 = 0;

struct Shared {
    pool: MessagePool,
    sink: Box<dyn BufRingSink>,
    parked: Box<[AtomicU64]>,
}

impl Shared {
    /// The raw message that the parking word `word` holds (the feed's own pool lent it).
    fn raw(&self, word: u64) -> RawMessage {
        RawMessage::from_element_word(self.pool.id(), word)
    }

    fn park(&self, bid: u16, msg: Message) {
        let (addr, len) = (msg.as_ptr(), msg.key().len);
        let raw = msg.into_raw();
        // Release: the raw message (and the buffer's state) is published to the thread that
        // takes this bid next, which swaps with Acquire.
        self.parked[usize::from(bid)].store(raw.element_word(), Ordering::Release);
        self.sink.push(
            NonNull::new(addr).expect("buffers are never null"),
            len,
            bid,
        );
    }
}

/// Lends `count` buffers of one class to a provided-buffer ring. See the module docs.
///
/// Drop the feed only after the ring is unregistered: dropping it gives the buffers that are
/// still in the ring back to the pool.
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
    /// [`Error::Exhausted`] if the pool lacks `count` free elements (none is kept then).
    pub fn new(
        pool: &MessagePool,
        class: usize,
        count: u16,
        sink: impl BufRingSink + 'static,
    ) -> Result<BufFeed> {
        let mut msgs = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            msgs.push(pool.try_acquire_class(class)?);
        }
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            sink: Box::new(sink),
            parked: (0..count).map(|_| AtomicU64::new(EMPTY)).collect(),
        });
        for (bid, msg) in msgs.into_iter().enumerate() {
            shared.park(bid as u16, msg);
        }
        Ok(BufFeed { shared })
    }

    /// Turns the buffer id `bid` of a completion that received `len` bytes into a message. The
    /// descriptor's slice is cut to `len`. Dropping the message puts the buffer back into the
    /// ring.
    ///
    /// # Errors
    ///
    /// [`Error::NotInRing`] if `bid` is not in the ring (a duplicate or stale completion), or
    /// [`Error::StaleHandle`] if its parked message is not what was lent.
    pub fn take(&self, bid: u16, len: u32) -> Result<Received> {
        let slot = self
            .shared
            .parked
            .get(usize::from(bid))
            .ok_or(Error::NotInRing { bid })?;
        // Acquire: pairs with the Release store in `park`.
        let raw = slot.swap(EMPTY, Ordering::Acquire);
        if raw == EMPTY {
            return Err(Error::NotInRing { bid });
        }
        let mut msg = self.shared.pool.from_raw(self.shared.raw(raw))?;
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
        for slot in self.parked.iter() {
            // Acquire: as in `take`.
            let raw = slot.swap(EMPTY, Ordering::Acquire);
            if raw != EMPTY {
                // A parked message that fails to redeem was never ours to give back.
                let _ = self.pool.release_raw(self.raw(raw));
            }
        }
    }
}

/// A message made from a received buffer. It derefs to the [`Message`]; dropping it puts the
/// buffer back into the provided-buffer ring under the same id.
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
}

impl Deref for Received {
    type Target = Message;
    fn deref(&self) -> &Message {
        self.msg.as_ref().expect("present until drop")
    }
}

impl DerefMut for Received {
    fn deref_mut(&mut self) -> &mut Message {
        self.msg.as_mut().expect("present until drop")
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            self.shared.park(self.bid, msg);
        }
    }
}
