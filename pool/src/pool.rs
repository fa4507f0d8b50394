//! `MessagePool` and `PoolBuilder`: the public face of the pool.
//!
//! # Synchronization
//!
//! The lock-free work happens in [`crate::shared`] (stores, magazines, user counting) and
//! [`crate::waiters`] (the hand-off). This module adds two patterns:
//! - **Redeeming a raw message** checks the pool id it carries, then is a CAS from the lent
//!   generation to a new held one (Acquire, pairing with the Release in `into_raw`): of two
//!   redeemers of one raw message, one wins.
//! - **Validation reads generations with Relaxed loads.** The validating thread holds the message
//!   (or received it through a synchronising hand-off), so it sees the generation it was stamped
//!   with; a different value means the handle is stale.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regio_loom_shim::sync::atomic::Ordering;

use crate::acquire::Acquire;
use crate::descriptor::{Descriptor, MAX_SG};
use crate::error::{Error, Result};
use crate::key::{ElemRef, RegionId};
use crate::keytable::KeyTable;
use crate::message::{Message, RawMessage};
use crate::region::RegionOptions;
use crate::registrar::Registrar;
use crate::segment::{generations, ElemMeta, LOCAL_BITS};
use crate::shared::{Config, Inner, LowWatermark};

/// Builds a [`MessagePool`].
///
/// ```
/// use regio_pool::PoolBuilder;
///
/// let pool = PoolBuilder::new()
///     .class(4096, 256)   // class 0: 256 buffers of 4 KiB
///     .class(65536, 16)   // class 1: 16 buffers of 64 KiB
///     .cache_size(32)
///     .build()
///     .unwrap();
/// assert_eq!(pool.capacity(0), 256);
/// ```
pub struct PoolBuilder {
    config: Config,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("classes", &self.config.classes)
            .field("options", &self.config.options)
            .field("cache_size", &self.config.cache_size)
            .finish_non_exhaustive()
    }
}

impl PoolBuilder {
    /// A builder with no size class, 64-element caches, room for 64 caching threads and 64
    /// regions.
    pub fn new() -> Self {
        Self {
            config: Config {
                classes: Vec::new(),
                watermarks: Vec::new(),
                options: RegionOptions::default(),
                cache_size: 64,
                max_threads: 64,
                max_regions: 64,
                max_waiters: 64,
                domain: None,
            },
        }
    }

    /// Adds a size class of `count` buffers of `buf_size` bytes, in a region of its own. Class
    /// numbers follow the order of the calls, from 0.
    pub fn class(mut self, buf_size: u32, count: u32) -> Self {
        self.config.classes.push((buf_size, count));
        self
    }

    /// Maps regions on 2 MiB huge pages when the system has them reserved.
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.config.options.huge_pages = on;
        self
    }

    /// Locks regions in memory (`mlock`).
    pub fn mlock(mut self, on: bool) -> Self {
        self.config.options.mlock = on;
        self
    }

    /// The most elements a thread caches per class (at most 128; 0 turns caching off). A
    /// thread moves half of this between its cache and the shared store at a time.
    ///
    /// Elements in a thread's cache are that thread's until it releases while others wait,
    /// flushes ([`MessagePool::flush_local`]) or exits, so size the pool for
    /// `threads * cache_size` elements more than the working set, as with DPDK's mempool caches.
    pub fn cache_size(mut self, size: usize) -> Self {
        self.config.cache_size = size;
        self
    }

    /// How many threads may have a cache at once (at most 1024); more threads use the shared
    /// store directly.
    pub fn max_threads(mut self, n: usize) -> Self {
        self.config.max_threads = n;
        self
    }

    /// The most regions the pool may ever have (at most 256), growth included.
    pub fn max_regions(mut self, n: usize) -> Self {
        self.config.max_regions = n;
        self
    }

    /// How many waiters the wait list has room for before it must allocate (at most 65536).
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.config.max_waiters = n;
        self
    }

    /// Calls `notify` once when the shared store of `class` drops below `limit` free elements,
    /// like an SRQ limit event; re-arm with [`MessagePool::arm_low_watermark`].
    ///
    /// The count is the shared store's, not the threads' caches: it is what other threads can
    /// still get. `notify` runs on the thread that took the store below the limit, once that
    /// thread holds none of the pool's locks, so it may use the pool: acquire and release
    /// messages, grow the pool, re-arm the event. The pool call that crossed the limit (an
    /// acquire, a release, a growth) returns only after `notify` does, so keep it short and do
    /// not block in it; to shed load, or for growth that can wait, let it wake a task instead.
    pub fn low_watermark(
        mut self,
        class: usize,
        limit: usize,
        notify: impl Fn(LowWatermark) + Send + Sync + 'static,
    ) -> Self {
        self.config
            .watermarks
            .push((class, limit, Box::new(notify)));
        self
    }

    /// Uses `domain` for the key table's RCU, so that executor threads already registered there
    /// translate with a plain load. A [`Domain`](regio_sync::Domain) is a handle: pass a clone.
    pub fn rcu_domain(mut self, domain: regio_sync::Domain) -> Self {
        self.config.domain = Some(domain);
        self
    }

    /// Maps the regions and builds the pool.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an impossible configuration, and [`Error::Map`] or [`Error::Lock`]
    /// when the memory cannot be had.
    pub fn build(self) -> Result<MessagePool> {
        let inner = Inner::create(self.config)?;
        Ok(MessagePool {
            inner: NonNull::new(inner.cast_mut()).expect("Arc::into_raw is never null"),
        })
    }
}

/// The message resource pool: registered buffers with their descriptors, handed out as
/// [`Message`]s and taken back when they drop.
///
/// A handle is cheap to clone; the pool lives until the last handle and the last message are
/// gone (elements cached by threads that are still running count too: see
/// [`flush_local`](Self::flush_local)).
///
/// Each thread keeps a small cache of elements per class (see [`PoolBuilder::cache_size`]):
/// acquiring and releasing touch only that cache, and move half of it to or from the shared
/// lock-free store when it runs empty or full. While tasks wait for a class, releases skip the
/// caches and go to the oldest waiter, and a thread that releases or acquires also hands over
/// what it has cached. Only a thread that stays idle keeps its cache (see
/// [`PoolBuilder::cache_size`]).
pub struct MessagePool {
    inner: NonNull<Inner>,
}

// SAFETY: the handle is a counted reference to `Inner`, which is shared by design: every
// operation through `&Inner` is thread-safe (atomics, the lock-free store, mutexes).
unsafe impl Send for MessagePool {}
// SAFETY: as above.
unsafe impl Sync for MessagePool {}

impl Clone for MessagePool {
    fn clone(&self) -> Self {
        self.inner().add_user();
        MessagePool { inner: self.inner }
    }
}

impl Drop for MessagePool {
    fn drop(&mut self) {
        let users = self.inner().flush_local() + 1;
        // SAFETY: the handle held one user, and the flushed elements were counted as users; the
        // handle is not used after this.
        unsafe { Inner::unref(self.inner.as_ptr(), users) };
    }
}

impl fmt::Debug for MessagePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        let mut d = f.debug_struct("MessagePool");
        d.field("id", &inner.uid);
        for class in 0..inner.classes.len() {
            d.field("available", &(class, inner.available(class)));
        }
        d.finish_non_exhaustive()
    }
}

impl MessagePool {
    /// A builder.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    pub(crate) fn inner(&self) -> &Inner {
        // SAFETY: the handle counts as a user, so the pool is alive.
        unsafe { self.inner.as_ref() }
    }

    /// This pool's id, stamped on its descriptors.
    pub fn id(&self) -> u32 {
        self.inner().uid
    }

    /// The number of size classes.
    pub fn classes(&self) -> usize {
        self.inner().classes.len()
    }

    /// The buffer size of `class`.
    ///
    /// # Panics
    ///
    /// If the class does not exist.
    pub fn buf_size(&self, class: usize) -> usize {
        self.inner().classes[class].buf_size as usize
    }

    /// How many elements `class` has in all, growth included.
    ///
    /// # Panics
    ///
    /// If the class does not exist.
    pub fn capacity(&self, class: usize) -> usize {
        self.inner().capacity(class)
    }

    /// How many elements of `class` are free: in the shared store and in every thread's cache.
    /// Exact when no other thread is acquiring or releasing.
    ///
    /// # Panics
    ///
    /// If the class does not exist.
    pub fn available(&self, class: usize) -> usize {
        self.inner().available(class)
    }

    /// Takes a message of class 0, or fails at once.
    ///
    /// # Errors
    ///
    /// [`Error::Exhausted`] (a would-block) when no element is free.
    #[inline(always)]
    pub fn try_acquire(&self) -> Result<Message> {
        // SAFETY: every pool has class 0.
        unsafe { self.take_existing(0) }
    }

    /// Takes a message of `class`, or fails at once.
    ///
    /// # Errors
    ///
    /// [`Error::Exhausted`] when no element is free, and [`Error::NoSuchClass`] if the class
    /// does not exist.
    #[inline(always)]
    pub fn try_acquire_class(&self, class: usize) -> Result<Message> {
        self.check_class(class)?;
        // SAFETY: the class exists (checked just above).
        unsafe { self.take_existing(class) }
    }

    /// [`Error::NoSuchClass`] unless the pool has `class`.
    #[inline(always)]
    fn check_class(&self, class: usize) -> Result<()> {
        let classes = self.classes();
        if class >= classes {
            return Err(Error::NoSuchClass { class, classes });
        }
        Ok(())
    }

    /// [`try_acquire_class`](Self::try_acquire_class) of a class that exists.
    ///
    /// # Safety
    ///
    /// `class` is one of the pool's size classes.
    #[inline(always)]
    unsafe fn take_existing(&self, class: usize) -> Result<Message> {
        let inner = self.inner();
        // SAFETY: the class exists (the caller's contract).
        match unsafe { inner.take(class) } {
            Some((meta, generation)) => Ok(self.wrap_meta(meta, generation, class)),
            None => Err(Error::Exhausted { class }),
        }
    }

    /// Takes a message of at least `len` bytes: one buffer of the smallest class that fits, or
    /// else a scatter list of buffers of the largest class.
    ///
    /// # Errors
    ///
    /// [`Error::Exhausted`] when not enough elements are free (none is taken then), and
    /// [`Error::TooManySlices`] when `len` needs more than [`MAX_SG`] buffers.
    pub fn try_acquire_len(&self, len: usize) -> Result<Message> {
        let inner = self.inner();
        let classes = &inner.classes;
        let fit = (0..classes.len())
            .filter(|&c| classes[c].buf_size as usize >= len)
            .min_by_key(|&c| classes[c].buf_size);
        if let Some(class) = fit {
            return self.try_acquire_class(class);
        }
        let class = (0..classes.len())
            .max_by_key(|&c| classes[c].buf_size)
            .expect("a pool has at least one class");
        let n = len.div_ceil(classes[class].buf_size as usize);
        if n > MAX_SG {
            return Err(Error::TooManySlices { max: MAX_SG });
        }
        let mut elems = [0u32; MAX_SG];
        for k in 0..n {
            // SAFETY: `class` was picked from the pool's classes.
            match unsafe { inner.take(class) } {
                Some((meta, _)) => elems[k] = meta.index,
                None => {
                    let mut users = 0;
                    for &e in &elems[..k] {
                        let (meta, generation) = inner.free_elem(e);
                        // SAFETY: `e` is an element of this pool that this call took, still
                        // free (never activated).
                        users += unsafe { inner.put(meta, generation) };
                    }
                    // SAFETY: the handle keeps the pool alive, so this never frees it; the
                    // `users` dropped were counted by the elements just put back.
                    unsafe { Inner::unref(self.inner.as_ptr(), users) };
                    return Err(Error::Exhausted { class });
                }
            }
        }
        let (meta, generation) = inner.activate_group(&elems[..n]);
        Ok(Message::from_parts(meta, generation, n as u8, class as u8))
    }

    /// Waits for a message of class 0. See [`acquire_class`](Self::acquire_class).
    #[inline]
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_class(0)
    }

    /// Waits for a message of `class`. Waiters are served in FIFO order; dropping the future
    /// gives back an element that was already handed to it, so nothing is ever lost.
    ///
    /// # Panics
    ///
    /// If the class does not exist.
    #[inline]
    pub fn acquire_class(&self, class: usize) -> Acquire<'_> {
        assert!(class < self.classes(), "no size class {class}");
        // SAFETY: the class exists (asserted just above).
        unsafe { Acquire::new(self, class) }
    }

    /// Waits up to `timeout` for a message of class 0, blocking the thread.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none came in time.
    pub fn acquire_blocking(&self, timeout: Duration) -> Result<Message> {
        self.acquire_class_blocking(0, timeout)
    }

    /// Waits up to `timeout` for a message of `class`, blocking the thread, in FIFO order with
    /// the other waiters. A timeout too long to add to the current time waits for as long as it
    /// takes.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none came in time, and [`Error::NoSuchClass`] if the class does
    /// not exist.
    pub fn acquire_class_blocking(&self, class: usize, timeout: Duration) -> Result<Message> {
        self.check_class(class)?;
        let inner = self.inner();
        let start = Instant::now();
        if !inner.waiters.any(class) {
            // SAFETY: the class exists (checked above).
            if let Some((meta, generation)) = unsafe { inner.take(class) } {
                return Ok(self.wrap_meta(meta, generation, class));
            }
        }
        let (queued, owed) = inner.queue_waiter(class, None);
        let queued = queued.map(|elem| self.wrap(elem));
        // Settled before this thread waits.
        inner.settle(class, owed);
        let ticket = match queued {
            Ok(msg) => return Ok(msg),
            Err(ticket) => ticket,
        };
        if let Some(elem) = inner.waiters.wait(&ticket, start.checked_add(timeout)) {
            return Ok(self.wrap(elem));
        }
        match inner.waiters.cancel(class, ticket) {
            Some(elem) => Ok(self.wrap(elem)),
            None => Err(Error::Timeout {
                class,
                waited: start.elapsed(),
            }),
        }
    }

    /// Makes a single-buffer message of the element `elem`, which the caller holds (counted
    /// as a user).
    pub(crate) fn wrap(&self, elem: u32) -> Message {
        let (meta, generation) = self.inner().free_elem(elem);
        self.wrap_meta(meta, generation, usize::from(meta.class))
    }

    /// [`wrap`](Self::wrap), given the element's metadata, generation and size class.
    #[inline(always)]
    pub(crate) fn wrap_meta(&self, meta: &ElemMeta, generation: u32, class: usize) -> Message {
        let inner = self.inner();
        inner.activate_one(meta, generation);
        Message::from_parts(meta, generation, 1, class as u8)
    }

    /// Gives an element that a cancelled waiter held back to the pool.
    pub(crate) fn give_back_one(&self, class: usize, elem: u32) {
        let users = self.inner().give_back(class, &[elem]);
        // SAFETY: the handle keeps the pool alive; the element was counted as a user.
        unsafe { Inner::unref(self.inner.as_ptr(), users) };
    }

    /// Redeems a message lent out by [`Message::into_raw`].
    ///
    /// # Errors
    ///
    /// [`Error::ForeignPool`] if another pool lent `raw` (nothing is touched then), and
    /// [`Error::StaleHandle`] if `raw` was already redeemed, or is from an earlier life of the
    /// element, or names no element of this pool.
    pub fn from_raw(&self, raw: RawMessage) -> Result<Message> {
        let inner = self.inner();
        if raw.pool() != inner.uid {
            return Err(Error::ForeignPool {
                expected: inner.uid,
                found: raw.pool(),
            });
        }
        let (index, expected) = (raw.index(), raw.generation());
        let stale = |found| Error::StaleHandle {
            index,
            expected,
            found,
        };
        let meta = inner.dir.meta(index).ok_or_else(|| stale(0))?;
        if generations::state(expected) != generations::RAW {
            // Relaxed: only for the error report.
            return Err(stale(meta.generation.load(Ordering::Relaxed)));
        }
        let held = generations::next(expected, generations::HELD);
        // Acquire on success: pairs with the Release store in `into_raw`, so the previous
        // holder's writes are visible. Relaxed on failure: only reported.
        meta.generation
            .compare_exchange(expected, held, Ordering::Acquire, Ordering::Relaxed)
            .map_err(stale)?;
        // SAFETY: the CAS made this call the element's only holder.
        let desc = unsafe { &mut *meta.desc.get() };
        desc.restamp(ElemRef {
            pool: inner.uid,
            index,
            generation: held,
        });
        // SAFETY: as above; the group's length is accurate while the element is held or lent
        // (see `ElemMeta::group`).
        let nbufs = unsafe { (*meta.group.get()).len };
        Ok(Message::from_parts(meta, held, nbufs, meta.class))
    }

    /// Returns a raw message to the pool: [`from_raw`](Self::from_raw) and drop. A second
    /// release of the same raw message is reported, not obeyed.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignPool`] or [`Error::StaleHandle`], as for `from_raw`.
    pub fn release_raw(&self, raw: RawMessage) -> Result<()> {
        self.from_raw(raw).map(drop)
    }

    /// Checks a descriptor before it becomes an SQE: it belongs to a live message of this pool,
    /// and every slice lies inside a registered region, inside one buffer that this message
    /// holds.
    ///
    /// # Errors
    ///
    /// [`Error::NoBuffers`], [`Error::ForeignPool`], [`Error::StaleHandle`],
    /// [`Error::UnknownRegion`], [`Error::OutOfBounds`] or [`Error::NotOwned`].
    pub fn validate(&self, desc: &Descriptor) -> Result<()> {
        let inner = self.inner();
        let slices = desc.slices();
        if slices.is_empty() {
            return if desc.opcode.needs_buffers() {
                Err(Error::NoBuffers(desc.opcode))
            } else {
                Ok(())
            };
        }
        let owner = desc.owner();
        if owner.pool != inner.uid {
            return Err(Error::ForeignPool {
                expected: inner.uid,
                found: owner.pool,
            });
        }
        let stale = |found| Error::StaleHandle {
            index: owner.index,
            expected: owner.generation,
            found,
        };
        let head = inner.dir.meta(owner.index).ok_or_else(|| stale(0))?;
        // Relaxed: the validating thread holds the message, or got it through a synchronising
        // hand-off, so it sees the generation the message was stamped with.
        let found = head.generation.load(Ordering::Relaxed);
        if found != owner.generation {
            return Err(stale(found));
        }
        for &key in slices {
            let seg = inner
                .dir
                .get(key.region.0)
                .ok_or(Error::UnknownRegion(key.region))?;
            if key.len == 0 {
                return Err(Error::OutOfBounds {
                    key,
                    why: "the slice is empty",
                });
            }
            if key.end() > seg.carved_len() {
                return Err(Error::OutOfBounds {
                    key,
                    why: "it ends past the region's buffers",
                });
            }
            let size = u64::from(seg.buf_size);
            let local = u64::from(key.offset) / size;
            if (key.end() - 1) / size != local {
                return Err(Error::OutOfBounds {
                    key,
                    why: "it crosses a buffer boundary",
                });
            }
            let elem = (u32::from(key.region.0) << LOCAL_BITS) | local as u32;
            let meta = &seg.metas[local as usize];
            // The head's own buffer is covered by the generation check above; any other buffer
            // must be a held member of this scatter message.
            // Relaxed: as for the head's generation above.
            let held = elem == owner.index
                || (generations::state(meta.generation.load(Ordering::Relaxed)) == generations::HELD
                    // Relaxed: as above.
                    && meta.head.load(Ordering::Relaxed) == owner.index);
            if !held {
                return Err(Error::NotOwned { key });
            }
        }
        Ok(())
    }

    /// The address-to-key table of this pool's regions.
    pub fn key_table(&self) -> &KeyTable {
        &self.inner().keys
    }

    /// Attaches a registrar (an adapter): every region is registered now, and every region
    /// added later is registered before its buffers are handed out. Registrars whose adapter is
    /// gone ([`Registrar::is_detached`]) are forgotten first.
    ///
    /// # Errors
    ///
    /// [`Error::Register`] if the registrar refuses a region (it is not attached then, and the
    /// regions it took are unregistered again); [`Error::Config`] if it is attached already.
    pub fn attach(&self, registrar: Arc<dyn Registrar>) -> Result<()> {
        self.inner().attach(registrar)
    }

    /// Detaches a registrar that [`attach`](Self::attach) attached: every region is unregistered
    /// from it, and later growth no longer registers with it. Returns false if it was not
    /// attached.
    pub fn detach(&self, registrar: &Arc<dyn Registrar>) -> bool {
        self.inner().detach(registrar)
    }

    /// Adds a region of `count` buffers to `class` while the pool is in use. Waiters of the
    /// class are served from it at once.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyRegions`], [`Error::Map`], [`Error::Lock`], [`Error::Register`] or
    /// [`Error::Config`].
    pub fn grow(&self, class: usize, count: u32) -> Result<RegionId> {
        self.inner().grow(class, count)
    }

    /// The number of regions.
    pub fn regions(&self) -> usize {
        self.inner().dir.len()
    }

    /// Gives the calling thread's cached elements back to the shared stores, where any thread
    /// can take them. A thread's caches are also flushed when it exits.
    pub fn flush_local(&self) {
        let users = self.inner().flush_local();
        // SAFETY: the handle keeps the pool alive; the flushed elements were counted as users.
        unsafe { Inner::unref(self.inner.as_ptr(), users) };
    }

    /// Re-arms the low-watermark event of `class`. Returns false if the class has none.
    pub fn arm_low_watermark(&self, class: usize) -> bool {
        self.inner().arm_watermark(class)
    }

    /// How many users keep the pool alive: handles plus elements off the shared stacks (held
    /// as messages, cached by threads, or parked in the batches that pass between threads'
    /// caches). Meant for tests and diagnostics.
    pub fn users(&self) -> usize {
        self.inner().users()
    }
}
