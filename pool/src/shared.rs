//! The shared state behind a pool's handles and messages: size classes, the shared stores, the caches and growth.
//!
//! # Synchronization
//!
//! - **Two levels.** Elements live in a per-class [`IndexStack`] (lock-free, bulk transfers)
//!   with a depot of whole batches in front of it ([`crate::depot`]), and in per-thread
//!   magazines ([`crate::magazine`]). The fast path touches only the caller's magazine; the
//!   shared side is used in batches of half a magazine.
//! - **Hand-off to waiters.** When a class has waiters, releases bypass the magazines and go
//!   through [`Waiters`], whose Dekker pair (SeqCst fences on both sides) rules out a lost
//!   wake-up; see [`crate::waiters`]. A thread that releases or acquires while others wait also
//!   hands over what its magazine holds.
//! - **Lifetime by counting users.** `users` counts pool handles plus elements off the stacks
//!   (in magazines, in messages, granted to waiters, and in depot bins). Elements move on and
//!   off the stacks in batches, so the count moves in batches too, off the fast path. Increments
//!   are Relaxed (the caller already holds a counted reference, as with `Arc::clone`); the
//!   decrement that reaches zero is Release and is followed by an Acquire fence before the pool
//!   is freed, as in `Arc::drop`.
//! - **The depot's batches stay counted.** A batch that goes from one thread's magazine through
//!   a depot bin to another thread's magazine, the cross-thread flow, so changes no count: the
//!   two threads write no shared counter for it (two read-modify-writes on a line both threads
//!   write, per batch, before). In exchange the depot is emptied onto the stacks wherever a
//!   pool could otherwise be kept alive by elements nobody can reach: when a handle drops
//!   ([`MessagePool`](crate::MessagePool)'s drop flushes) and when a thread with a cache exits.
//!   After the last handle has dropped, only a thread with a cache can put a batch in a bin,
//!   through a magazine overflow, which leaves that magazine holding elements; with no handle
//!   left to acquire them, they stay until the thread exits, and its exit empties the depot.
//! - **Growth** is serialised by a mutex and publishes each new segment before its elements
//!   reach a store; see [`crate::segment`].
//! - **The low-watermark callback runs with no lock held.** A take that finds the store below
//!   the limit claims the one-shot event (a swap of `armed`) wherever it happens, even under
//!   the wait-list lock; whoever called it delivers the event ([`Inner::notify_low`]) after
//!   letting go of every lock and with no magazine half-changed, so the callback may acquire,
//!   release and grow.
//! - **A take that spills a depot batch onto the stack serves the waiters.** A take from the
//!   shared side that finds the stack empty takes a whole depot batch and pushes all but one of
//!   its elements onto the stack: a release, for the waiters. A waiter whose look at the store
//!   ran while the batch was in that take's hands saw neither the bin nor the stack, and sleeps.
//!   So the take then makes the releaser's half of the Dekker pair (see [`crate::waiters`]), as
//!   `give_back` does; under the wait-list lock it cannot, and leaves it to its caller
//!   ([`Owed`], settled by [`Inner::settle`]).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use regio_loom_shim::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

use crate::depot::{Depot, BIN_CAP};
use crate::descriptor::{Descriptor, MAX_SG};
use crate::error::{Error, Result};
use crate::key::{ElemRef, RegionId};
use crate::keytable::KeyTable;
use crate::local;
use crate::magazine::{CacheSlot, Cached, MAG_CAP};
use crate::region::{Region, RegionOptions};
use crate::registrar::{PoolRegion, Registrar};
use crate::segment::{Directory, ElemMeta, Segment, MAX_PER_REGION};
use crate::waiters::{Ticket, Waiters};
use regio_sync::IndexStack;

/// What a low-watermark notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowWatermark {
    /// The size class that ran low.
    pub class: usize,
    /// How many elements its shared store held when the event fired.
    pub available: usize,
}

/// The notification callback for [`LowWatermark`] events.
pub type WatermarkFn = Box<dyn Fn(LowWatermark) + Send + Sync>;

/// What a take from the shared side, which may run under the wait-list lock, leaves its caller
/// to do once it holds no lock ([`Inner::settle`]).
#[derive(Debug, Default)]
#[must_use = "a take's debts are paid only by Inner::settle"]
pub(crate) struct Owed {
    /// The low-watermark event the take claimed.
    low: Option<LowWatermark>,
    /// The take pushed the rest of a depot batch onto the stack: waiters may need serving.
    spilled: bool,
}

pub(crate) struct Watermark {
    limit: usize,
    armed: AtomicBool,
    notify: WatermarkFn,
}

/// One size class.
pub(crate) struct Class {
    pub(crate) buf_size: u32,
    pub(crate) store: IndexStack,
    /// Whole batches, in front of `store` (see [`crate::depot`]). Only magazine overflows
    /// fill it, so a bin never holds more than one batch.
    depot: Depot,
    capacity: AtomicUsize,
    watermark: Option<Watermark>,
}

impl Class {
    /// About how many free elements the shared side holds: the stack and the depot.
    fn shared_len(&self) -> usize {
        self.store.len() + self.depot.len()
    }
}

/// The shared state behind [`MessagePool`](crate::MessagePool) handles and messages.
pub(crate) struct Inner {
    pub(crate) uid: u32,
    users: AtomicUsize,
    pub(crate) classes: Box<[Class]>,
    pub(crate) dir: Directory,
    slots: Box<[CacheSlot]>,
    /// The magazines that threads without a slot of their own see (see
    /// [`CacheSlot::stand_in`]).
    stand_in: CacheSlot,
    pub(crate) waiters: Waiters,
    pub(crate) keys: KeyTable,
    registrars: Mutex<Vec<Arc<dyn Registrar>>>,
    options: RegionOptions,
    cache_size: usize,
    batch: usize,
}

/// How a pool is built; see [`PoolBuilder`](crate::PoolBuilder).
pub(crate) struct Config {
    pub(crate) classes: Vec<(u32, u32)>,
    pub(crate) watermarks: Vec<(usize, usize, WatermarkFn)>,
    pub(crate) options: RegionOptions,
    pub(crate) cache_size: usize,
    pub(crate) max_threads: usize,
    pub(crate) max_regions: usize,
    pub(crate) max_waiters: usize,
    pub(crate) domain: Option<regio_sync::Domain>,
}

/// The id of the next pool (0 is [`ElemRef::NONE`]'s). A plain std atomic: it is not part of
/// any loom model, and loom atomics cannot be statics.
static NEXT_UID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// The most threads with a cache in one pool ([`PoolBuilder::max_threads`]).
///
/// [`PoolBuilder::max_threads`]: crate::PoolBuilder::max_threads
const MAX_THREADS: usize = 1024;

/// The most waiters a pool reserves room for up front ([`PoolBuilder::max_waiters`]).
///
/// [`PoolBuilder::max_waiters`]: crate::PoolBuilder::max_waiters
const MAX_WAITERS: usize = 1 << 16;

/// Takes the next pool id from `counter`. Ids are never reused, so that a descriptor or raw
/// message of one pool can never pass for another's: once they run out (after 2^32 - 2 pools),
/// no pool can be built.
fn next_uid(counter: &std::sync::atomic::AtomicU32) -> Option<u32> {
    // Relaxed: only uniqueness matters, which the read-modify-write gives by itself.
    let order = std::sync::atomic::Ordering::Relaxed;
    counter
        .fetch_update(order, order, |id| id.checked_add(1))
        .ok()
}

impl Inner {
    /// Builds the pool and returns it with one user (the first handle), as a raw pointer that
    /// owns one strong count of its `Arc`.
    pub(crate) fn create(mut config: Config) -> Result<*const Inner> {
        if config.classes.is_empty() {
            return Err(Error::Config("a pool needs at least one size class".into()));
        }
        if config.classes.len() > usize::from(u8::MAX) {
            return Err(Error::Config("at most 255 size classes".into()));
        }
        if config.cache_size > MAG_CAP {
            return Err(Error::Config(format!(
                "cache size {} is above the maximum of {MAG_CAP}",
                config.cache_size
            )));
        }
        if config.max_regions == 0 || config.max_regions > crate::segment::MAX_REGIONS {
            return Err(Error::Config(format!(
                "max_regions must be in 1..={}",
                crate::segment::MAX_REGIONS
            )));
        }
        if config.max_threads > MAX_THREADS {
            return Err(Error::Config(format!(
                "max_threads {} is above the maximum of {MAX_THREADS}; more threads use the \
                 shared store without a cache",
                config.max_threads
            )));
        }
        if config.max_waiters > MAX_WAITERS {
            return Err(Error::Config(format!(
                "max_waiters {} is above the maximum of {MAX_WAITERS}; it is only reserved \
                 up front, and more waiters still queue",
                config.max_waiters
            )));
        }
        let uid = next_uid(&NEXT_UID).ok_or_else(|| {
            Error::Config("this process has used up the pool ids (2^32 - 2 pools)".into())
        })?;
        let mut watermarks: Vec<Option<Watermark>> = config.classes.iter().map(|_| None).collect();
        for (class, limit, notify) in config.watermarks.drain(..) {
            let slot = watermarks
                .get_mut(class)
                .ok_or_else(|| Error::Config(format!("low watermark for unknown class {class}")))?;
            *slot = Some(Watermark {
                limit,
                armed: AtomicBool::new(true),
                notify,
            });
        }
        let classes = config
            .classes
            .iter()
            .zip(watermarks)
            .map(|(&(buf_size, _), watermark)| Class {
                buf_size,
                store: IndexStack::new(),
                depot: Depot::new(config.max_threads.clamp(1, 8)),
                capacity: AtomicUsize::new(0),
                watermark,
            })
            .collect();
        let domain = config.domain.take().unwrap_or_default();
        let inner = Arc::new(Inner {
            uid,
            users: AtomicUsize::new(1),
            classes,
            dir: Directory::new(config.max_regions),
            slots: (0..config.max_threads)
                .map(|_| CacheSlot::new(config.classes.len(), config.cache_size))
                .collect(),
            stand_in: CacheSlot::stand_in(config.classes.len()),
            waiters: Waiters::new(config.classes.len(), config.max_waiters),
            keys: KeyTable::new(&domain),
            registrars: Mutex::new(Vec::new()),
            options: config.options,
            cache_size: config.cache_size,
            batch: config.cache_size.div_ceil(2),
        });
        for (class, &(_, count)) in config.classes.iter().enumerate() {
            inner.grow(class, count)?;
        }
        Ok(Arc::into_raw(inner))
    }

    /// Adds a region of `count` buffers to `class`, registers it everywhere, and puts its
    /// elements in the class's store.
    pub(crate) fn grow(&self, class: usize, count: u32) -> Result<RegionId> {
        let buf_size = self
            .classes
            .get(class)
            .ok_or_else(|| Error::Config(format!("unknown size class {class}")))?
            .buf_size;
        if count == 0 || count as usize > MAX_PER_REGION {
            return Err(Error::Config(format!(
                "a region holds 1..={MAX_PER_REGION} buffers, not {count}"
            )));
        }
        let len = u64::from(count) * u64::from(buf_size);
        if len > u64::from(u32::MAX) {
            return Err(Error::Config(format!(
                "a region of {len} bytes is too large: keys address at most 4 GiB per region"
            )));
        }
        let mut registrars = lock(&self.registrars);
        registrars.retain(|r| !r.is_detached());
        let next = self.dir.len();
        if next >= self.dir.capacity() {
            return Err(Error::TooManyRegions {
                max: self.dir.capacity(),
            });
        }
        let id = RegionId(next as u16);
        let region = Region::map(len as usize, self.options)?;
        register_all(&registrars, self.region_of(id, &region))?;
        let (base, region_len) = (region.base(), region.len());
        let published =
            self.dir
                .publish(Segment::new(self, id, class as u8, region, buf_size, count));
        debug_assert_eq!(published, id);
        self.keys.insert(id, base, region_len);
        let c = &self.classes[class];
        // Relaxed: a statistic.
        c.capacity.fetch_add(count as usize, Ordering::Relaxed);
        let first = u32::from(id.0) << crate::segment::LOCAL_BITS;
        let mut chunk = [0u32; 256];
        for start in (0..count).step_by(chunk.len()) {
            let n = (count - start).min(chunk.len() as u32) as usize;
            for (k, slot) in chunk[..n].iter_mut().enumerate() {
                *slot = first + start + k as u32;
            }
            c.store.push_slice(&self.dir, &chunk[..n]);
        }
        // The growth is done. Serving waiters can deliver the low-watermark event, whose
        // callback may grow the pool again, so the growth lock goes first.
        drop(registrars);
        if self.waiters.any_after_publish(class) {
            self.serve_waiters(class);
        }
        Ok(id)
    }

    /// Attaches a registrar: registers every region now, and every later one as it is added.
    pub(crate) fn attach(&self, registrar: Arc<dyn Registrar>) -> Result<()> {
        let mut registrars = lock(&self.registrars);
        registrars.retain(|r| !r.is_detached());
        if registrars.iter().any(|r| Arc::ptr_eq(r, &registrar)) {
            return Err(Error::Config("this registrar is attached already".into()));
        }
        for (id, seg) in self.dir.iter() {
            // SAFETY: the region is this pool's own mapping, named by this pool's id and its
            // id; the pool keeps it mapped until it unregisters it from every registrar it was
            // registered with (`detach`, `Drop`, the failure path just below).
            let registered = unsafe { registrar.register(self.region_of(id, &seg.region)) };
            if let Err(source) = registered {
                for (done, _) in self.dir.iter().take(usize::from(id.0)) {
                    registrar.unregister(self.uid, done);
                }
                return Err(Error::Register { region: id, source });
            }
        }
        registrars.push(registrar);
        Ok(())
    }

    /// Detaches a registrar: unregisters every region from it and forgets it. Returns false if
    /// it was not attached.
    pub(crate) fn detach(&self, registrar: &Arc<dyn Registrar>) -> bool {
        let mut registrars = lock(&self.registrars);
        let Some(at) = registrars.iter().position(|r| Arc::ptr_eq(r, registrar)) else {
            return false;
        };
        let registrar = registrars.remove(at);
        drop(registrars);
        for (id, _) in self.dir.iter() {
            registrar.unregister(self.uid, id);
        }
        true
    }

    /// How a registrar sees region `id`, mapped at `region`.
    fn region_of(&self, id: RegionId, region: &Region) -> PoolRegion {
        PoolRegion {
            pool: self.uid,
            id,
            base: region.base(),
            len: region.len(),
        }
    }

    /// The magazines of the stand-in slot, for a thread without a slot of its own.
    pub(crate) fn stand_in_mags(&self) -> NonNull<crate::magazine::Magazine<Cached>> {
        self.stand_in.first_mag()
    }

    /// Claims a free cache slot for the calling thread.
    pub(crate) fn claim_slot(&self) -> Option<&CacheSlot> {
        if self.cache_size == 0 {
            return None;
        }
        self.slots.iter().find(|s| s.try_claim())
    }

    /// Takes one element of `class` for the caller: from its magazine, else a batch from the
    /// store. The element is counted as a user. Returns it with its generation (the one the
    /// caller stamps it with; see [`generations`](crate::segment::generation)).
    ///
    /// # Safety
    ///
    /// `class` is one of the pool's size classes (`class < self.classes.len()`).
    #[inline(always)]
    pub(crate) unsafe fn take(&self, class: usize) -> Option<(&ElemMeta, u32)> {
        if let Some(mags) = local::cached_mags(self) {
            // SAFETY: these are the magazines of this thread's slot, and `class` is one of the
            // pool's classes (the caller's contract).
            if let Some(free) = unsafe { mags.get(class).pop() } {
                if self.waiters.any_class() {
                    self.share_cache(class);
                }
                // SAFETY: magazines hold pointers to this pool's metadata, which lives as long
                // as the pool.
                return Some((unsafe { free.meta.as_ref() }, free.generation));
            }
        }
        self.take_slow(class)
    }

    /// [`take`](Self::take) when the shortcut names another pool, or the magazine is empty,
    /// or the thread has no cache.
    #[cold]
    #[inline(never)]
    fn take_slow(&self, class: usize) -> Option<(&ElemMeta, u32)> {
        let Some(slot) = local::slot(self) else {
            let mut owed = Owed::default();
            let elem = self.take_shared(class, &mut owed);
            self.settle(class, owed);
            return elem.map(|elem| self.free_elem(elem));
        };
        // SAFETY: this thread claimed `slot`.
        if let Some(free) = unsafe { slot.mag(class).pop() } {
            if self.waiters.any(class) {
                self.share_cache(class);
            }
            // SAFETY: as in `take`.
            return Some((unsafe { free.meta.as_ref() }, free.generation));
        }
        self.refill(class, slot)
    }

    /// The metadata and generation of the free element `elem`, which the caller holds (it
    /// came out of a store or a grant, whose hand-off ordered the releaser's store of the
    /// generation before this load).
    pub(crate) fn free_elem(&self, elem: u32) -> (&ElemMeta, u32) {
        let meta = self.dir.held(elem);
        // Relaxed: as above.
        (meta, meta.generation.load(Ordering::Relaxed))
    }

    /// Others may wait for `class` while this thread has some cached: hand them over if so.
    #[cold]
    fn share_cache(&self, class: usize) {
        if !self.waiters.any(class) {
            return;
        }
        let Some(slot) = local::existing_slot(self) else {
            return;
        };
        let mut batch = [0u32; MAG_CAP];
        let n = self.drain_mag(slot, class, MAG_CAP, &mut batch);
        let users = self.give_back(class, &batch[..n]);
        // SAFETY: the caller reached this through a pool handle, which is a user itself, so the
        // count cannot reach zero here.
        unsafe { Inner::unref(self, users) };
    }

    /// Refills the empty magazine of `class` in `slot` (this thread's) with a batch: a depot
    /// bin's entries, copied as they are, else elements popped from the stack. Returns one of
    /// them for the caller.
    #[cold]
    fn refill(&self, class: usize, slot: &CacheSlot) -> Option<(&ElemMeta, u32)> {
        let c = &self.classes[class];
        let mag = slot.mag(class);
        let n = match c.depot.take_with(|items| {
            // SAFETY: this thread claimed `slot`; the magazine was empty, and a bin holds at
            // most `BIN_CAP < MAG_CAP` entries.
            unsafe { mag.fill(items) };
            items.len()
        }) {
            Some(n) => {
                debug_assert!(n <= self.batch, "only overflows fill bins, one batch each");
                // Depot elements are counted already (see "Lifetime by counting users").
                n
            }
            None => {
                let mut batch = [0u32; BIN_CAP];
                let n = c.store.pop_into(&self.dir, &mut batch[..self.batch]);
                for &elem in &batch[..n] {
                    let (meta, generation) = self.free_elem(elem);
                    let free = Cached {
                        meta: NonNull::from(meta),
                        generation,
                    };
                    // SAFETY: this thread claimed `slot`; the magazine was empty, and
                    // `n <= batch <= cache_size`, its capacity.
                    let cached = unsafe { mag.push(free) };
                    debug_assert!(cached);
                }
                // Relaxed: see "Lifetime by counting users".
                self.users.fetch_add(n, Ordering::Relaxed);
                n
            }
        };
        if n == 0 {
            return None;
        }
        // SAFETY: this thread claimed `slot`; the magazine holds the `n` entries just put in.
        let free = unsafe { mag.pop() }.expect("the magazine was just filled");
        let low = self.low_watermark(class);
        // After the fill: the callback may use this thread's magazine.
        self.notify_low(low);
        // SAFETY: magazines hold pointers to this pool's metadata.
        Some((unsafe { free.meta.as_ref() }, free.generation))
    }

    /// Takes one element straight from the shared store (the stack, else a depot batch whose
    /// rest goes to the stack).
    ///
    /// It may run under the wait-list lock, so it neither calls the low-watermark callback nor
    /// serves waiters: what it owes goes into `owed` (an event claimed, unless one is there
    /// already; a batch spilled onto the stack), and the caller settles it with
    /// [`settle`](Self::settle) once it holds no lock.
    fn take_shared(&self, class: usize, owed: &mut Owed) -> Option<u32> {
        let c = &self.classes[class];
        let elem = match c.store.pop(&self.dir) {
            Some(elem) => {
                // Relaxed: see "Lifetime by counting users".
                self.users.fetch_add(1, Ordering::Relaxed);
                elem
            }
            None => {
                let mut batch = [0u32; BIN_CAP];
                let n = self.take_depot_batch(class, &mut batch)?;
                c.store.push_slice(&self.dir, &batch[1..n]);
                owed.spilled |= n > 1;
                // The batch was counted in the depot. The element taken stays counted, so this
                // cannot drop the last user. Release: as every decrement (see `drop_users`).
                self.users.fetch_sub(n - 1, Ordering::Release);
                batch[0]
            }
        };
        // With an event already claimed, leave the flag alone: a second claim (after a re-arm
        // on another thread) would have nowhere to go, and stays for a later take instead.
        if owed.low.is_none() {
            owed.low = self.low_watermark(class);
        }
        Some(elem)
    }

    /// Takes a batch out of the depot of `class` into `out`, as element indices, and returns its
    /// size; `None` if the depot holds no batch. The elements stay counted as users.
    fn take_depot_batch(&self, class: usize, out: &mut [u32; BIN_CAP]) -> Option<usize> {
        self.classes[class].depot.take_with(|items| {
            for (elem, free) in out.iter_mut().zip(items) {
                // SAFETY: depot entries point at this pool's live metadata.
                *elem = unsafe { free.meta.as_ref() }.index;
            }
            items.len()
        })
    }

    /// Claims the low-watermark event of `class` if it is armed and the shared store is below
    /// the limit. The caller must pass it to [`notify_low`](Self::notify_low).
    #[must_use = "a claimed event is delivered only by notify_low"]
    fn low_watermark(&self, class: usize) -> Option<LowWatermark> {
        let c = &self.classes[class];
        let w = c.watermark.as_ref()?;
        // Relaxed: `armed` guards only the one-shot callback; no data is published through it.
        if w.armed.load(Ordering::Relaxed) && c.shared_len() < w.limit {
            // Relaxed: as above; the swap makes exactly one thread claim the event.
            if w.armed.swap(false, Ordering::Relaxed) {
                return Some(LowWatermark {
                    class,
                    available: c.shared_len(),
                });
            }
        }
        None
    }

    /// Queues the calling thread as a waiter for `class`, after handing what it has cached to
    /// the waiters before it, unless the recheck of the store finds an element first. What the
    /// recheck owes comes back with the outcome: the caller settles it once the element or the
    /// ticket is in safe hands.
    pub(crate) fn queue_waiter(
        &self,
        class: usize,
        waker: Option<&Waker>,
    ) -> (Result<u32, Ticket>, Owed) {
        self.share_cache(class);
        let mut owed = Owed::default();
        let queued = self
            .waiters
            .enqueue(class, waker, || self.take_shared(class, &mut owed));
        (queued, owed)
    }

    /// Pays what takes from the shared side of `class` left owing: serves the waiters if a take
    /// spilled a depot batch onto the stack (the releaser's half of the Dekker pair, module
    /// docs), then delivers the low-watermark event. The caller holds no lock of the pool.
    pub(crate) fn settle(&self, class: usize, owed: Owed) {
        if owed.spilled && self.waiters.any_after_publish(class) {
            self.serve_waiters(class);
        }
        self.notify_low(owed.low);
    }

    /// Runs the low-watermark callback for `event`, if there is one. The caller holds no lock
    /// of the pool and has no magazine half-changed, so the callback may acquire, release and
    /// grow.
    pub(crate) fn notify_low(&self, event: Option<LowWatermark>) {
        let Some(event) = event else {
            return;
        };
        if let Some(w) = &self.classes[event.class].watermark {
            (w.notify)(event);
        }
    }

    /// Re-arms the low watermark of `class`.
    pub(crate) fn arm_watermark(&self, class: usize) -> bool {
        match self.classes.get(class).and_then(|c| c.watermark.as_ref()) {
            Some(w) => {
                // Relaxed: see `low_watermark`.
                w.armed.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Returns a free element, whose generation (already stored in it) is `generation`, to the pool.
    /// Returns how many users to drop with [`Inner::unref`] once the caller is done with `self`.
    ///
    /// # Safety
    ///
    /// `meta` is an element of this pool (so its class is one of the pool's), held by the
    /// caller.
    #[inline(always)]
    pub(crate) unsafe fn put(&self, meta: &ElemMeta, generation: u32) -> usize {
        // SAFETY: the caller's contract; the class is the element's.
        if unsafe { self.put_cached(meta, usize::from(meta.class), generation) } {
            return 0;
        }
        // SAFETY: as above.
        unsafe { self.put_slow(meta, generation) }
    }

    /// The hot half of [`put`](Self::put): puts the element, of size class `class`, in this
    /// thread's magazine if the shortcut names this pool, nobody waits and there is room.
    /// Returns false, having done nothing, otherwise; then the caller goes on with
    /// [`put_slow`](Self::put_slow).
    ///
    /// # Safety
    ///
    /// As for `put`, and `class` is the element's class (`meta.class`).
    #[inline(always)]
    pub(crate) unsafe fn put_cached(&self, meta: &ElemMeta, class: usize, generation: u32) -> bool {
        debug_assert_eq!(class, usize::from(meta.class));
        if self.waiters.any_class() {
            return false;
        }
        let Some(mags) = local::cached_mags(self) else {
            return false;
        };
        let free = Cached {
            meta: NonNull::from(meta),
            generation,
        };
        // SAFETY: these are the magazines of this thread's slot (or the stand-in); the class is
        // the pool's, as above.
        unsafe { mags.get(class).push(free) }
    }

    /// [`put`](Self::put) when the shortcut names another pool, the magazine is full, others
    /// wait, or the thread has no cache.
    ///
    /// # Safety
    ///
    /// As for `put`.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn put_slow(&self, meta: &ElemMeta, generation: u32) -> usize {
        let class = usize::from(meta.class);
        let free = Cached {
            meta: NonNull::from(meta),
            generation,
        };
        match local::slot(self) {
            Some(slot) if !self.waiters.any(class) => {
                // SAFETY: this thread claimed `slot`.
                if unsafe { slot.mag(class).push(free) } {
                    return 0;
                }
                self.overflow(class, slot, free)
            }
            slot => {
                // Waiters, or no cache: this thread's cached elements of the class go too, so
                // that they reach the waiters rather than idle here.
                let mut batch = [0u32; MAG_CAP + 1];
                let n = slot.map_or(0, |slot| self.drain_mag(slot, class, MAG_CAP, &mut batch));
                batch[n] = meta.index;
                self.give_back(class, &batch[..=n])
            }
        }
    }

    /// Makes room in the full magazine of `class` in `slot` (this thread's) by moving its
    /// oldest batch out, into an empty depot bin as it is, else onto the stack, then caches
    /// `free`. Returns how many users to drop.
    fn overflow(&self, class: usize, slot: &CacheSlot, free: Cached) -> usize {
        let mag = slot.mag(class);
        // Caches `free` once a drain has made room, before anything that may run the
        // low-watermark callback, which may use the magazine.
        let cache = || {
            // SAFETY: this thread claimed `slot`.
            let cached = unsafe { mag.push(free) };
            debug_assert!(cached, "the drain made room");
        };
        let deposited = if self.waiters.any(class) {
            None
        } else {
            // SAFETY: this thread claimed `slot`.
            self.classes[class]
                .depot
                .put_with(|bin| unsafe { mag.drain_oldest(self.batch, bin) })
        };
        if let Some(n) = deposited {
            cache();
            // The batch is in the depot, on the store's side: the same Dekker half as in
            // `give_back` applies to it.
            if n > 0 && self.waiters.any_after_publish(class) {
                self.serve_waiters(class);
            }
            // Depot elements stay counted (see "Lifetime by counting users").
            return 0;
        }
        let mut batch = [0u32; MAG_CAP];
        let n = self.drain_mag(slot, class, self.batch, &mut batch);
        cache();
        self.give_back(class, &batch[..n])
    }

    /// Moves up to `count` of the oldest elements of `slot`'s magazine for `class` into `out`,
    /// as indices. The calling thread must own `slot` (or be its exiting owner).
    fn drain_mag(&self, slot: &CacheSlot, class: usize, count: usize, out: &mut [u32]) -> usize {
        // SAFETY: the caller owns `slot`; magazines hold pointers to this pool's live metadata.
        unsafe {
            slot.mag(class)
                .drain_oldest_map(count, out, |free| free.meta.as_ref().index)
        }
    }

    /// Gives `items` (free, counted elements) to waiters, then to the shared store. Returns how
    /// many users to drop: the elements that went into the store.
    pub(crate) fn give_back(&self, class: usize, items: &[u32]) -> usize {
        let mut rest = items;
        if self.waiters.any(class) {
            while let Some((&first, tail)) = rest.split_first() {
                if self.waiters.grant(class, first).is_err() {
                    break;
                }
                rest = tail;
            }
        }
        if rest.is_empty() {
            return 0;
        }
        self.classes[class].store.push_slice(&self.dir, rest);
        if self.waiters.any_after_publish(class) {
            self.serve_waiters(class);
        }
        rest.len()
    }

    /// Hands elements from the store to the queued waiters of `class`.
    #[cold]
    fn serve_waiters(&self, class: usize) {
        let mut owed = Owed::default();
        // The takes run under the wait-list lock: the event they claim waits until it is free.
        // What one of them spills onto the stack, the loop itself hands on while anyone waits.
        self.waiters
            .grant_from(class, || self.take_shared(class, &mut owed));
        self.notify_low(owed.low);
    }

    /// Empties a cache slot that this thread owns into the shared stores, and drops the users
    /// it counted.
    pub(crate) fn flush_slot(self: &Arc<Self>, slot: &CacheSlot) {
        let users = self.drain_slot(slot);
        // SAFETY: the caller's `Arc` keeps the allocation alive past a drop to zero.
        unsafe { Inner::unref(Arc::as_ptr(self), users) };
    }

    /// Empties the calling thread's cache slot in this pool, if it has one, and the depots.
    /// Returns the users to drop.
    pub(crate) fn flush_local(&self) -> usize {
        match local::existing_slot(self) {
            Some(slot) => self.drain_slot(slot),
            None => self.empty_depots(),
        }
    }

    /// Empties `slot`, which this thread owns, and the depots: see "Lifetime by counting
    /// users". Returns the users to drop.
    fn drain_slot(&self, slot: &CacheSlot) -> usize {
        let mut users = 0;
        let mut batch = [0u32; MAG_CAP];
        for class in 0..slot.mags().len() {
            let n = self.drain_mag(slot, class, MAG_CAP, &mut batch);
            users += self.give_back(class, &batch[..n]);
        }
        users + self.empty_depots()
    }

    /// Moves every batch in the depots to waiters or to the stacks. Returns the users to drop:
    /// the elements that went onto a stack, which counts none (a depot counts its own).
    fn empty_depots(&self) -> usize {
        let mut users = 0;
        let mut batch = [0u32; BIN_CAP];
        for class in 0..self.classes.len() {
            while let Some(n) = self.take_depot_batch(class, &mut batch) {
                users += self.give_back(class, &batch[..n]);
            }
        }
        users
    }

    /// Adds one user (a new handle). The caller already holds one.
    pub(crate) fn add_user(&self) {
        // Relaxed: see "Lifetime by counting users".
        self.users.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops `n` users and frees the pool if they were the last.
    ///
    /// # Safety
    ///
    /// `this` came from [`Inner::create`], the caller holds the `n` users it drops, and it does
    /// not touch the pool afterwards unless it keeps another strong `Arc`.
    #[inline(always)]
    pub(crate) unsafe fn unref(this: *const Inner, n: usize) {
        if n != 0 {
            // SAFETY: the caller's contract.
            unsafe { Inner::drop_users(this, n) };
        }
    }

    /// [`unref`](Self::unref) of at least one user: out of line, as the fast paths drop none.
    ///
    /// # Safety
    ///
    /// As for `unref`.
    #[cold]
    #[inline(never)]
    unsafe fn drop_users(this: *const Inner, n: usize) {
        // SAFETY: the caller holds `n` users, so the pool is alive here.
        let users = unsafe { &(*this).users };
        // Release: everything this thread did with the pool happens-before the free below,
        // on whichever thread drops the last user.
        if users.fetch_sub(n, Ordering::Release) == n {
            // Acquire: pairs with every other user's Release decrement.
            fence(Ordering::Acquire);
            // SAFETY: the users together owned the strong count that `create` leaked into the
            // raw pointer; the last one gives it back.
            drop(unsafe { Arc::from_raw(this) });
        }
    }

    /// The number of users: handles plus elements outside the stores.
    pub(crate) fn users(&self) -> usize {
        // Acquire: pairs with the Release decrements in `unref`, so a caller that sees the count
        // fall also sees the stores and magazines as the decrementing thread left them.
        self.users.load(Ordering::Acquire)
    }

    /// Turns the free element `meta`, held by the caller, into a single-buffer message stamped
    /// with generation `generation`, the element's own (see [`generations`](crate::segment::generation)).
    #[inline(always)]
    pub(crate) fn activate_one(&self, meta: &ElemMeta, generation: u32) {
        // Relaxed: the caller holds the element exclusively (it came out of a store, a
        // magazine or a grant, each of which ordered the previous holder's accesses first).
        debug_assert_eq!(meta.generation.load(Ordering::Relaxed), generation);
        // SAFETY: the caller holds the element exclusively, so nobody else touches its
        // descriptor or its flag.
        unsafe {
            let desc = &mut *meta.desc.get();
            if *meta.desc_dirty.get() {
                self.reset_desc(meta, desc, generation);
            } else {
                desc.restamp_gen(generation);
            }
        }
    }

    /// Resets the descriptor `desc` of `meta`, whose new generation is `g`, and marks it clean.
    #[cold]
    #[inline(never)]
    fn reset_desc(&self, meta: &ElemMeta, desc: &mut Descriptor, g: u32) {
        let owner = ElemRef {
            pool: self.uid,
            index: meta.index,
            generation: g,
        };
        desc.reset(owner, std::slice::from_ref(&meta.key));
        // SAFETY: the caller holds the element exclusively (see `activate_one`).
        unsafe { *meta.desc_dirty.get() = false };
    }

    /// Turns the free elements `members`, held by the caller, into one scatter message headed
    /// by `members[0]`. Returns the head's metadata and generation.
    pub(crate) fn activate_group(&self, members: &[u32]) -> (&ElemMeta, u32) {
        debug_assert!(members.len() > 1 && members.len() <= MAX_SG);
        let head = members[0];
        let mut keys = [self.dir.held(head).key; MAX_SG];
        for (k, &elem) in members.iter().enumerate().skip(1) {
            let meta = self.dir.held(elem);
            // Relaxed: as in `activate_one`; the members keep the generation they have.
            meta.head.store(head, Ordering::Relaxed);
            keys[k] = meta.key;
        }
        let (meta, g) = self.free_elem(head);
        // SAFETY: the caller holds `head` exclusively, so nobody else touches its cells.
        unsafe {
            // Its slices are the group's: the next single-buffer acquire resets it whole.
            *meta.desc_dirty.get() = true;
            let group = &mut *meta.group.get();
            group.len = members.len() as u8;
            group.elems[..members.len()].copy_from_slice(members);
            (*meta.desc.get()).reset(
                ElemRef {
                    pool: self.uid,
                    index: head,
                    generation: g,
                },
                &keys[..members.len()],
            );
        }
        (meta, g)
    }

    /// The number of elements free in `class`: in its store and in every thread's magazine.
    pub(crate) fn available(&self, class: usize) -> usize {
        self.classes[class].shared_len()
            + self.slots.iter().map(|s| s.mag(class).len()).sum::<usize>()
    }

    /// The number of elements `class` has in all.
    pub(crate) fn capacity(&self, class: usize) -> usize {
        // Relaxed: a statistic.
        self.classes[class].capacity.load(Ordering::Relaxed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let registrars = self.registrars.get_mut().unwrap_or_else(|e| e.into_inner());
        for (id, _) in self.dir.iter() {
            for r in registrars.iter() {
                r.unregister(self.uid, id);
            }
        }
    }
}

fn register_all(registrars: &[Arc<dyn Registrar>], region: PoolRegion) -> Result<()> {
    for (k, r) in registrars.iter().enumerate() {
        // SAFETY: `grow` passes a region of its own pool, mapped until the pool unregisters it
        // from every registrar (`Inner::drop`, `detach`, or the failure path below and in `grow`,
        // which drops the mapping only after those unregisters).
        if let Err(source) = unsafe { r.register(region) } {
            for done in &registrars[..k] {
                done.unregister(region.pool, region.id);
            }
            return Err(Error::Register {
                region: region.id,
                source,
            });
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The registrar list changes by whole pushes, removals and retains, so a panic elsewhere
    // cannot leave it torn.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::next_uid;

    #[test]
    fn pool_ids_are_never_reused() {
        let counter = AtomicU32::new(u32::MAX - 2);
        assert_eq!(next_uid(&counter), Some(u32::MAX - 2));
        assert_eq!(next_uid(&counter), Some(u32::MAX - 1));
        assert_eq!(next_uid(&counter), None, "no wrap back to 0 or 1");
        assert_eq!(next_uid(&counter), None);
    }
}
