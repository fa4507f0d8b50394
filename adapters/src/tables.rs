//! The adapter's shared tables: registered regions, fixed files and work queues.
//!
//! Every table sits behind a [`regio_sync::Rcu`]: posting and reaping threads read them with no
//! lock while one writer at a time (serialised by `writer`) publishes a new version and waits for
//! a grace period before the old one is dropped.
//!
//! # Synchronization
//!
//! - Table versions: published and read through [`Rcu`] (its own docs give the orderings);
//!   writers are serialised by the `writer` mutex, and old versions are handed to the domain
//!   with `defer`, so no writer ever waits on a reader that is itself inside a batch.
//! - Work-queue credits: read-modify-writes on one counter per side. A credit is a count, not a
//!   publication: the RMW alone keeps the count exact, and the operation's data travels through
//!   the ring lock and the kernel, not through the credit.
//! - A removed work queue keeps its file (a plain fd's duplicate) until its last operation's
//!   final completion, since the kernel looks the fd up when it issues an operation, which can
//!   be long after the post. So the file goes when the queue is both closed and drained (every
//!   credit back), decided by a Dekker pair in SeqCst: `close` stores `open = false`, then reads
//!   the credits; a reservation or a credit return changes the credits, then reads `open`. In
//!   the single total order of SeqCst operations, either the closer sees the last credit come
//!   back, or the returner (or a poster that reserved just before the close) sees the queue
//!   closed; whoever sees both lets the file go (under the queue's lock, once). A poster that
//!   reserves after the close gives its credits back and is refused, so nothing is posted on a
//!   released file. On x86 these SeqCst accesses cost what Relaxed ones would (RMWs are locked
//!   anyway, and loads are plain), except the one store in `close`.
//! - A work queue's `open` flag is also read Relaxed, for an early refusal only.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use regio_sync::{Domain, Rcu, ReadSide};

use crate::buf::{BufKey, BufSlice, IoBuf};
use crate::error::DescriptorError;
use crate::ops::{Resolved, Side, Target};

/// A registered region as the adapter knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub base: usize,
    pub size: u64,
    /// Unique across the process: a key must carry it to name a region registered with
    /// [`Adapter::register_region`](crate::Adapter::register_region).
    pub generation: u32,
    pub owner: Owner,
}

/// Who registered a region, and so how buffers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// [`Adapter::register_region`](crate::Adapter::register_region): buffers name the index and
    /// the generation.
    Caller,
    /// Region `id` of pool `pool`, attached through the adapter's registrar: buffers name the
    /// pool and the pool's region id, and the adapter finds the index.
    Pool { pool: u32, id: u16 },
}

/// One fixed-buffer index of the adapter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Free,
    Live(Region),
    /// Out of the table, but the kernel's entry has yet to be removed: only the owner thread of
    /// a single-issuer ring may do that, and the region's pool was freed on another thread.
    /// The next registration on a permitted thread removes it or registers over it.
    Removing,
}

/// The fixed-buffer indices of an adapter and what holds each, plus, for every attached pool,
/// where its regions are.
#[derive(Debug, Clone)]
pub(crate) struct RegionTable {
    slots: Vec<Slot>,
    /// `(pool id, fixed-buffer index of each of its regions)`, one entry per attached pool.
    pools: Vec<(u32, Vec<Option<u16>>)>,
}

impl RegionTable {
    fn new(max_regions: u32) -> Self {
        Self {
            slots: vec![Slot::Free; max_regions as usize],
            pools: Vec::new(),
        }
    }

    /// The region at fixed-buffer index `index`, if one is live there.
    #[inline]
    pub fn live(&self, index: u16) -> Option<&Region> {
        match self.slots.get(usize::from(index)) {
            Some(Slot::Live(r)) => Some(r),
            _ => None,
        }
    }

    /// The fixed-buffer index of region `id` of pool `pool`, if that pool is attached.
    #[inline]
    pub fn pool_index(&self, pool: u32, id: u16) -> Option<u16> {
        let (_, ids) = self.pools.iter().find(|(p, _)| *p == pool)?;
        ids.get(usize::from(id)).copied().flatten()
    }

    /// An index to register at: a free one, else one whose kernel entry waits for removal (a
    /// registration there replaces it).
    pub fn vacant(&self) -> Option<u16> {
        let free = |s: &Slot| matches!(s, Slot::Free);
        let removing = |s: &Slot| matches!(s, Slot::Removing);
        let at = self
            .slots
            .iter()
            .position(free)
            .or_else(|| self.slots.iter().position(removing))?;
        Some(at as u16)
    }

    /// The indices whose kernel entries wait for removal.
    pub fn removing(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..)
            .zip(&self.slots)
            .filter_map(|(i, s)| matches!(s, Slot::Removing).then_some(i))
    }

    /// Every live region, with its index.
    pub fn iter_live(&self) -> impl Iterator<Item = (u16, &Region)> + '_ {
        (0u16..).zip(&self.slots).filter_map(|(i, s)| match s {
            Slot::Live(r) => Some((i, r)),
            _ => None,
        })
    }

    /// Puts `region` at `index`.
    pub fn insert(&mut self, index: u16, region: Region) {
        self.slots[usize::from(index)] = Slot::Live(region);
        if let Owner::Pool { pool, id } = region.owner {
            let at = match self.pools.iter().position(|(p, _)| *p == pool) {
                Some(at) => at,
                None => {
                    self.pools.push((pool, Vec::new()));
                    self.pools.len() - 1
                }
            };
            let ids = &mut self.pools[at].1;
            if ids.len() <= usize::from(id) {
                ids.resize(usize::from(id) + 1, None);
            }
            ids[usize::from(id)] = Some(index);
        }
    }

    /// Takes the region at `index` out of the table, leaving the slot `then` (free, or waiting
    /// for its kernel entry to be removed). Returns the region, if one was live there.
    pub fn remove(&mut self, index: u16, then: Slot) -> Option<Region> {
        let slot = self.slots.get_mut(usize::from(index))?;
        let Slot::Live(region) = *slot else {
            if matches!(then, Slot::Free) {
                *slot = Slot::Free;
            }
            return None;
        };
        *slot = then;
        if let Owner::Pool { pool, id } = region.owner {
            if let Some(at) = self.pools.iter().position(|(p, _)| *p == pool) {
                let ids = &mut self.pools[at].1;
                ids[usize::from(id)] = None;
                if ids.iter().all(Option::is_none) {
                    self.pools.swap_remove(at);
                }
            }
        }
        Some(region)
    }
}

/// A work queue's identity: its index in the table and the generation of that entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WqId {
    /// The slot in the adapter's work-queue table.
    pub index: u32,
    /// Bumped each time the slot is reused, so a stale handle is told apart.
    pub generation: u32,
}

impl WqId {
    /// The identity as one number (index in the low half).
    #[inline(always)]
    pub(crate) fn key(self) -> u64 {
        u64::from(self.index) | u64::from(self.generation) << 32
    }

    /// The identity [`key`](Self::key) made.
    pub(crate) fn from_key(key: u64) -> Self {
        Self {
            index: key as u32,
            generation: (key >> 32) as u32,
        }
    }
}

/// What the tables hold for one work queue.
#[derive(Debug)]
pub(crate) struct WqShared {
    pub id: WqId,
    pub target: Target,
    /// Depth minus operations in flight; negative after a shrink until completions catch up.
    send_credit: AtomicI64,
    recv_credit: AtomicI64,
    /// Cleared when the queue is removed; posts then fail with `Closed`.
    open: AtomicBool,
    /// The depths, and the queue's own file until it is let go of (module docs).
    life: Mutex<Life>,
}

/// The parts of a work queue that change rarely, under one lock.
#[derive(Debug)]
struct Life {
    /// `(send, receive)` depth.
    depth: (u32, u32),
    /// The work queue's own duplicate of a [`Target::Fd`]: the number in its SQEs names this
    /// file until the queue is removed and its last operation has completed.
    file: Option<OwnedFd>,
    /// The queue is closed and drained: its file is closed, and its table entry may go.
    released: bool,
}

impl WqShared {
    pub fn new(id: WqId, target: Target, file: Option<OwnedFd>, send: u32, recv: u32) -> Self {
        Self {
            id,
            target,
            send_credit: AtomicI64::new(i64::from(send)),
            recv_credit: AtomicI64::new(i64::from(recv)),
            open: AtomicBool::new(true),
            life: Mutex::new(Life {
                depth: (send, recv),
                file,
                released: false,
            }),
        }
    }

    fn life(&self) -> MutexGuard<'_, Life> {
        // The fields change by whole stores, so a panic elsewhere cannot leave them torn.
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the queue still takes posts: a cheap early test (the reservation makes the
    /// decisive one, see [`reserve`](Self::reserve)).
    #[inline]
    pub fn is_open(&self) -> bool {
        // Relaxed: an early refusal only; `reserve` checks again in the total order.
        self.open.load(Ordering::Relaxed)
    }

    /// Refuses every later post (the queue is being removed), and lets go of the queue's file
    /// at once if nothing is in flight (else the last completion does).
    pub fn close(&self) {
        // SeqCst: one side of the Dekker pair with the credit changes (module docs).
        self.open.store(false, Ordering::SeqCst);
        self.release_if_drained();
    }

    /// Whether the queue is closed and drained, its file closed: its table entry may go.
    pub fn is_released(&self) -> bool {
        self.life().released
    }

    /// Lets go of the queue's file if the queue is closed and every credit is back (nothing of
    /// it is staged or in flight).
    fn release_if_drained(&self) {
        let mut life = self.life();
        // SeqCst (all three): the other side of the Dekker pair in `close`/`reserve`/`adjust`.
        let drained = !self.open.load(Ordering::SeqCst)
            && self.send_credit.load(Ordering::SeqCst) == i64::from(life.depth.0)
            && self.recv_credit.load(Ordering::SeqCst) == i64::from(life.depth.1);
        if drained && !life.released {
            life.released = true;
            life.file = None;
        }
    }

    fn credit(&self, side: Side) -> &AtomicI64 {
        match side {
            Side::Send => &self.send_credit,
            Side::Recv => &self.recv_credit,
        }
    }

    /// Takes up to `max` credits of `side` at once and returns how many it took (0 when none is
    /// left, or the queue is closed). A [`Batch`](crate::Batch) reserves this way so that each
    /// post does not pay for an atomic read-modify-write.
    #[inline]
    pub fn reserve(&self, side: Side, max: i64) -> i64 {
        let mut taken = 0;
        // SeqCst: the reservation and the `open` load below are one side of the Dekker pair
        // with `close` (module docs); on x86 both cost what Relaxed ones do (a locked
        // instruction and a plain load).
        let _ = self
            .credit(side)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                taken = c.min(max);
                (taken > 0).then(|| c - taken)
            });
        // SeqCst: as above. A queue closed meanwhile gets the credits back, and may be let go.
        if taken > 0 && !self.open.load(Ordering::SeqCst) {
            self.adjust(side, taken);
            return 0;
        }
        taken.max(0)
    }

    /// Takes one credit of `side` even when none is left (the count goes below zero, and the
    /// operation's completion brings it back as any other): for a cancel, which must never wait
    /// for credit behind the very operations it cancels (they may hold every credit and never
    /// complete on their own: sends to a peer that does not read). False if the queue is
    /// closed.
    pub fn overdraw(&self, side: Side) -> bool {
        // SeqCst: as in `reserve`, one side of the Dekker pair with `close`.
        self.credit(side).fetch_sub(1, Ordering::SeqCst);
        // SeqCst: as above.
        if !self.open.load(Ordering::SeqCst) {
            self.adjust(side, 1);
            return false;
        }
        true
    }

    /// Adds `delta` credits to `side`: returned credits, or a depth change (a shrink takes
    /// effect as operations complete). Credits coming back to a closed queue may let its file
    /// go.
    pub fn adjust(&self, side: Side, delta: i64) {
        // SeqCst: one side of the Dekker pair with `close` (module docs).
        self.credit(side).fetch_add(delta, Ordering::SeqCst);
        // SeqCst: as above.
        if delta > 0 && !self.open.load(Ordering::SeqCst) {
            self.release_if_drained();
        }
    }

    /// Sets the depths; returns the changes to apply to the credits, `(send, receive)`.
    pub fn set_depth(&self, send: u32, recv: u32) -> (i64, i64) {
        let mut life = self.life();
        let old = std::mem::replace(&mut life.depth, (send, recv));
        (
            i64::from(send) - i64::from(old.0),
            i64::from(recv) - i64::from(old.1),
        )
    }

    /// Credits left, `(send, receive)`; 0 while a shrink is still catching up.
    pub fn credits(&self) -> (u32, u32) {
        // Relaxed: a snapshot.
        let get = |c: &AtomicI64| c.load(Ordering::Relaxed).clamp(0, i64::from(u32::MAX)) as u32;
        (get(&self.send_credit), get(&self.recv_credit))
    }
}

/// The tables of one adapter.
pub(crate) struct Tables {
    pub domain: Domain,
    pub regions: Rcu<RegionTable>,
    pub files: Rcu<Vec<bool>>,
    pub wqs: Rcu<Vec<Option<Arc<WqShared>>>>,
    writer: Mutex<()>,
}

impl Tables {
    pub fn new(domain: Domain, max_regions: u32, max_files: u32) -> Self {
        Self {
            regions: Rcu::new(&domain, RegionTable::new(max_regions)),
            files: Rcu::new(&domain, vec![false; max_files as usize]),
            wqs: Rcu::new(&domain, Vec::new()),
            writer: Mutex::new(()),
            domain,
        }
    }

    /// Serialises the writers of all three tables.
    pub fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a buffer against the region table and turns its slice into an address and a
    /// fixed-buffer index.
    #[inline(always)]
    pub fn resolve<B: IoBuf>(
        &self,
        reader: &impl ReadSide,
        buf: &B,
    ) -> Result<Resolved, DescriptorError> {
        let slice = buf.slice()?;
        let regions = self.regions.read(reader);
        let (index, key) = match slice {
            BufSlice::Pool { pool, key } => {
                let index = regions
                    .pool_index(pool, key.region.0)
                    .ok_or(DescriptorError::NotAttached { pool })?;
                (index, key)
            }
            BufSlice::Registered { key, generation } => {
                let r = regions
                    .live(key.region.0)
                    .filter(|r| r.owner == Owner::Caller)
                    .ok_or(DescriptorError::UnknownRegion(key.region.0))?;
                if r.generation != generation {
                    return Err(DescriptorError::StaleGeneration {
                        expected: r.generation,
                        found: generation,
                    });
                }
                (key.region.0, key)
            }
        };
        let r = regions
            .live(index)
            .ok_or(DescriptorError::UnknownRegion(index))?;
        let BufKey { offset, len, .. } = key;
        if len == 0 || u64::from(offset) + u64::from(len) > r.size {
            return Err(DescriptorError::OutOfBounds {
                offset,
                len,
                size: r.size,
            });
        }
        Ok(Resolved {
            addr: (r.base + offset as usize) as *mut u8,
            len,
            index,
        })
    }

    /// Checks that a fixed-file slot is inside the table.
    pub fn check_target(&self, reader: &impl ReadSide, t: Target) -> Result<(), DescriptorError> {
        match t {
            Target::Fd(_) => Ok(()),
            Target::Fixed(slot) if (slot.0 as usize) < self.files.read(reader).len() => Ok(()),
            Target::Fixed(slot) => Err(DescriptorError::BadFileSlot(slot.0)),
        }
    }

    /// The live work queue at `id`, if `id` is current.
    pub fn wq<'a>(&'a self, reader: &'a impl ReadSide, id: WqId) -> Option<&'a WqShared> {
        self.wqs
            .read(reader)
            .get(id.index as usize)
            .and_then(|s| s.as_deref())
            .filter(|w| w.id == id)
    }
}
