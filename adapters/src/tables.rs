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
//! - Work-queue credits: Relaxed read-modify-writes on one counter per side. A credit is a
//!   count, not a publication: the RMW alone keeps the count exact, and the operation's data
//!   travels through the ring lock and the kernel, not through the credit.
//! - A work queue's `open` flag: Relaxed. A post racing with the removal may go either way
//!   (both outcomes are correct: an accepted post completes normally); a post that comes after
//!   the removal in any happens-before order sees the flag clear.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use regio_sync::{Domain, Rcu, ReadSide};

use crate::buf::{BufKey, IoBuf};
use crate::error::DescriptorError;
use crate::ops::{Resolved, Side, Target};

/// A registered region as the adapter knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub base: usize,
    pub size: u64,
    pub generation: u32,
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
    /// `(send, receive)` depth; changed only by the table writer.
    pub depth: Mutex<(u32, u32)>,
    /// Depth minus operations in flight; negative after a shrink until completions catch up.
    send_credit: AtomicI64,
    recv_credit: AtomicI64,
    /// Cleared when the queue is removed from the table; posts then fail with `Closed`.
    open: AtomicBool,
}

impl WqShared {
    pub fn new(id: WqId, target: Target, send: u32, recv: u32) -> Self {
        Self {
            id,
            target,
            depth: Mutex::new((send, recv)),
            send_credit: AtomicI64::new(i64::from(send)),
            recv_credit: AtomicI64::new(i64::from(recv)),
            open: AtomicBool::new(true),
        }
    }

    /// Whether the queue still takes posts.
    #[inline]
    pub fn is_open(&self) -> bool {
        // Relaxed: see the module docs; the flag publishes nothing.
        self.open.load(Ordering::Relaxed)
    }

    /// Refuses every later post (the queue is being removed).
    pub fn close(&self) {
        // Relaxed: see the module docs.
        self.open.store(false, Ordering::Relaxed);
    }

    fn credit(&self, side: Side) -> &AtomicI64 {
        match side {
            Side::Send => &self.send_credit,
            Side::Recv => &self.recv_credit,
        }
    }

    /// Takes up to `max` credits of `side` at once and returns how many it took (0 when none is
    /// left). A [`Batch`](crate::Batch) reserves this way so that each post does not pay for an
    /// atomic read-modify-write.
    #[inline]
    pub fn reserve(&self, side: Side, max: i64) -> i64 {
        let mut taken = 0;
        // Relaxed: a credit is a count, not a publication; the RMW alone keeps it from going
        // below zero, and the operation's data is ordered by the ring lock and the kernel.
        let _ = self
            .credit(side)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                taken = c.min(max);
                (taken > 0).then(|| c - taken)
            });
        taken.max(0)
    }

    /// Adds `delta` credits to `side`: returned credits, or a depth change (a shrink takes
    /// effect as operations complete).
    pub fn adjust(&self, side: Side, delta: i64) {
        // Relaxed: as in `reserve`.
        self.credit(side).fetch_add(delta, Ordering::Relaxed);
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
    pub domain: Arc<Domain>,
    pub regions: Rcu<Vec<Option<Region>>>,
    pub files: Rcu<Vec<bool>>,
    pub wqs: Rcu<Vec<Option<Arc<WqShared>>>>,
    writer: Mutex<()>,
}

impl Tables {
    pub fn new(domain: Arc<Domain>, max_regions: u32, max_files: u32) -> Self {
        Self {
            regions: Rcu::new(&domain, vec![None; max_regions as usize]),
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

    /// Checks a buffer against the region table and turns its key into an address.
    pub fn resolve<B: IoBuf>(
        &self,
        reader: &impl ReadSide,
        buf: &B,
    ) -> Result<Resolved, DescriptorError> {
        let BufKey {
            region,
            offset,
            len,
        } = buf.key();
        let regions = self.regions.read(reader);
        let r = regions
            .get(region.0 as usize)
            .copied()
            .flatten()
            .ok_or(DescriptorError::UnknownRegion(region.0))?;
        match buf.generation() {
            Some(found) if found != r.generation => {
                return Err(DescriptorError::StaleGeneration {
                    expected: r.generation,
                    found,
                });
            }
            _ => {}
        }
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
            index: region.0,
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
