//! [`Buffers`]: the pool messages of a request, and the server's rules for taking them so that
//! an exhausted pool means waiting, never a deadlock.
//!
//! The pool's smallest class is for **control buffers**: each connection holds two (one to
//! receive request headers, one to write reply headers), taken together when it starts (under
//! a gate of their own), so a connection never waits for a buffer it needs to make progress;
//! too many connections wait in their handshake for a pair. The other classes carry
//! **data**: a request takes the smallest buffer that holds its data, or, when none does,
//! enough buffers of the largest class. A request that needs several buffers takes them
//! while it holds the **gate**, one request at a time: every other holder of data buffers has
//! all it needs and gives them back when its reply is sent, so a waiter always gets its turn
//! (two requests that each held half of what they need would otherwise wait for each other
//! forever). Each connection may hold a **share** of the data buffers at most (a quarter, or
//! one largest request), taken before the gate, so a client that stops reading its replies
//! cannot hold them all (a few such clients can, which is why the writer cuts a connection
//! whose send stalls: [`STALL_TIMEOUT`](super::STALL_TIMEOUT)). This holds only if every free buffer can be reached: the pool must keep no
//! per-thread caches (see [`runtime_builder`](super::runtime_builder)).
//!
//! Two uses borrow a buffer of the largest class beside the requests, only when one is free
//! (they never wait for one): a writer gathers a batch of small replies in one, and a reader
//! reads ahead in one through a run of small WRITEs. Read-ahead buffers are a quarter of the
//! class at most, and a request takes half of it at most, so neither keeps a request waiting
//! for good while clients send the payloads they announced. A client that stops in the middle
//! of a WRITE's payload holds what its reader holds meanwhile (the request's data buffers, and
//! the read-ahead buffer if the rest was small) until it sends more, closes, or the stall
//! timeout passes with nothing received ([`STALL_TIMEOUT`](super::STALL_TIMEOUT)): then its
//! connection is closed. In a class of four buffers, one client stopped in the middle of a
//! largest request (two) and one in the middle of a small WRITE (one) leave one free: a largest
//! request of a third client waits until one of them goes, the stall timeout at most.

use std::sync::Arc;

use regio_pool::{Message, MessagePool};

use super::sync::{Permit, Semaphore};
use super::ServeError;

/// The unit a connection's share of the data buffers is counted in.
const SHARE_UNIT: usize = 4096;

/// Requests are cut to at most this many bytes however large the pool is (the NBD default
/// maximum payload).
const PROTOCOL_MAX_PAYLOAD: usize = 32 << 20;

/// How a server takes buffers from its runtime's pool.
#[derive(Debug, Clone)]
pub(crate) struct Buffers {
    pool: MessagePool,
    control: usize,
    /// Data classes by increasing size: (class, buffer size).
    data: Vec<(usize, usize)>,
    gate: Arc<Semaphore>,
    /// The gate of control pairs: a connection waiting for its pair (too many connections)
    /// must not hold up the data requests of the others.
    control_gate: Arc<Semaphore>,
    /// The buffers of the largest class that readers may hold to read ahead in
    /// ([`try_read_ahead`](Self::try_read_ahead)).
    read_ahead: Arc<Semaphore>,
    max_payload: usize,
}

impl Buffers {
    /// The rules for `pool`: its smallest class for control buffers, the others for data.
    ///
    /// # Errors
    ///
    /// [`ServeError::Pool`] if the pool has fewer than two classes, or data buffers of less
    /// than 4 KiB in all.
    pub(crate) fn new(pool: MessagePool) -> Result<Self, ServeError> {
        let mut classes: Vec<(usize, usize)> = (0..pool.classes())
            .map(|class| (class, pool.buf_size(class)))
            .collect();
        classes.sort_by_key(|&(_, size)| size);
        if classes.len() < 2 {
            return Err(ServeError::Pool(
                "the NBD server needs a pool of at least two size classes: the smallest for \
                 control buffers, the others for data",
            ));
        }
        let control = classes.remove(0).0;
        let &(largest, largest_size) = classes.last().expect("two classes or more");
        // Half the largest class at most, so that one request never waits for all of it.
        let by_pool = largest_size * (pool.capacity(largest) / 2).max(1);
        let max_payload = by_pool.min(PROTOCOL_MAX_PAYLOAD);
        if max_payload < 4096 {
            return Err(ServeError::Pool(
                "the NBD server needs data buffers of at least 4 KiB per request",
            ));
        }
        // A quarter of the largest class: a request takes half of it at most (see
        // `max_payload`), so the buffers readers hold to read ahead never keep one waiting
        // for good (none below four).
        let read_ahead = Semaphore::new(pool.capacity(largest) / 4);
        Ok(Self {
            pool,
            control,
            data: classes,
            gate: Semaphore::new(1),
            control_gate: Semaphore::new(1),
            read_ahead,
            max_payload,
        })
    }

    /// The largest request payload the pool serves (the `maximum` block size advertised).
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// A connection's two control buffers (request headers in, reply headers out).
    pub(crate) async fn control_pair(&self) -> (Message, Message) {
        let _gate = self.control_gate.acquire().await;
        let first = self.pool.acquire_class(self.control).await;
        let second = self.pool.acquire_class(self.control).await;
        (first, second)
    }

    /// A connection's two control buffers if two are free now and no connection waits for a
    /// pair ([`control_pair`](Self::control_pair) holds the gate while it waits: the pairs
    /// that free up go to the waiters in turn).
    pub(crate) fn try_control_pair(&self) -> Option<(Message, Message)> {
        let _gate = self.control_gate.try_acquire()?;
        let first = self.pool.try_acquire_class(self.control).ok()?;
        let second = self.pool.try_acquire_class(self.control).ok()?;
        Some((first, second))
    }

    /// One data buffer of at least `len` bytes where a class has them, else of the largest
    /// class; its descriptor covers `len` bytes at most.
    pub(crate) async fn one(&self, len: usize) -> Message {
        let class = self.class_for(len);
        let mut msg = self.pool.acquire_class(class).await;
        msg.descriptor_mut().truncate(len.max(1));
        msg
    }

    /// A buffer of the largest class if one is free now, to gather small replies in.
    pub(crate) fn try_staging(&self) -> Option<Message> {
        self.pool.try_acquire_class(self.largest().0).ok()
    }

    /// A buffer of the largest class for a reader to read ahead in, through a run of small
    /// WRITEs, if the class holds `room` bytes a buffer, one is free now, and fewer than a
    /// quarter of the class are read-ahead buffers already; the permit counts it until it is
    /// given back.
    pub(crate) fn try_read_ahead(&self, room: usize) -> Option<(Message, Permit)> {
        if room > self.largest().1 {
            return None;
        }
        let permit = self.read_ahead.try_acquire()?;
        let buf = self.pool.try_acquire_class(self.largest().0).ok()?;
        Some((buf, permit))
    }

    /// A new connection's share of the data buffers: a quarter of them, or one request of
    /// the maximum payload if that is more. A client that stops reading its replies holds at
    /// most its share; the others go on.
    pub(crate) fn share(&self) -> Arc<Semaphore> {
        let data: usize = self
            .data
            .iter()
            .map(|&(class, size)| size * self.pool.capacity(class))
            .sum();
        Semaphore::new((data / 4).max(self.max_payload) / SHARE_UNIT)
    }

    /// Buffers for `len` bytes (`len` at most [`max_payload`](Self::max_payload)), each with
    /// its descriptor cut to the bytes it carries, in order, and the part of the connection's
    /// `share` they take (keep it as long as the buffers). Nothing for zero bytes.
    pub(crate) async fn for_len(
        &self,
        len: usize,
        share: &Arc<Semaphore>,
    ) -> (Vec<Message>, Permit) {
        debug_assert!(len <= self.max_payload);
        let chunk = self.chunk_size(len);
        let count = len.div_ceil(chunk);
        let class = self.class_for(len);
        // The connection's share first: a request waiting for it holds nothing.
        let part = share
            .acquire_many((count * self.pool.buf_size(class)).div_ceil(SHARE_UNIT))
            .await;
        let mut bufs = Vec::with_capacity(count);
        let _gate = if count > 1 {
            Some(self.gate.acquire().await)
        } else {
            None
        };
        for i in 0..count {
            let mut msg = self.pool.acquire_class(class).await;
            msg.descriptor_mut().truncate(chunk.min(len - i * chunk));
            bufs.push(msg);
        }
        (bufs, part)
    }

    /// The bytes each buffer of a `len`-byte request carries (the last may carry fewer).
    pub(crate) fn chunk_size(&self, len: usize) -> usize {
        self.data
            .iter()
            .find(|&&(_, size)| size >= len)
            .map_or(self.largest().1, |&(_, size)| size)
    }

    fn class_for(&self, len: usize) -> usize {
        self.data
            .iter()
            .find(|&&(_, size)| size >= len)
            .map_or(self.largest().0, |&(class, _)| class)
    }

    fn largest(&self) -> (usize, usize) {
        *self.data.last().expect("at least one data class")
    }

    /// Control and data buffers in use, and the pool's capacity: (in use, capacity).
    pub(crate) fn use_of_pool(&self) -> (usize, usize) {
        (0..self.pool.classes()).fold((0, 0), |(used, cap), class| {
            let capacity = self.pool.capacity(class);
            (
                used + capacity - self.pool.available(class).min(capacity),
                cap + capacity,
            )
        })
    }
}
