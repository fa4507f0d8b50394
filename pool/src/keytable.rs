//! The KeyTable: translates addresses the application holds into registered keys.
//!
//! It is the "application table" of extended-memory user-mode I/O: given any pointer and length
//! inside the pool's memory, it returns the `(region, offset, len)` that the kernel knows the
//! memory by, with bounds checks, and with no help from the kernel. The table is a sorted array
//! behind [`regio_sync::Rcu`]: the pool grows it by publishing a new version, while other threads
//! keep translating with a plain load.

use std::ptr::NonNull;

use regio_sync::{Domain, Rcu, ReadSide};

use crate::error::{Error, Result};
use crate::key::{BufKey, RegionId};

#[derive(Debug, Clone, Copy)]
struct Span {
    base: usize,
    len: usize,
    region: RegionId,
}

/// Address-to-key translation for one pool's regions. Get it from
/// [`MessagePool::key_table`](crate::MessagePool::key_table).
///
/// ```
/// let pool = regio_pool::PoolBuilder::new().class(4096, 8).build().unwrap();
/// let msg = pool.try_acquire().unwrap();
/// let inside = msg.as_slice()[100..].as_ptr();
/// let key = pool.key_table().translate_guarded(inside, 50).unwrap();
/// assert_eq!(key.region, msg.key().region);
/// assert_eq!(key.offset, msg.key().offset + 100);
/// assert_eq!(key.len, 50);
/// ```
pub struct KeyTable {
    spans: Rcu<Vec<Span>>,
    domain: Domain,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable").finish_non_exhaustive()
    }
}

impl KeyTable {
    pub(crate) fn new(domain: &Domain) -> Self {
        Self {
            spans: Rcu::new(domain, Vec::new()),
            domain: domain.clone(),
        }
    }

    /// The RCU domain that protects the table: register executor threads with it to translate
    /// through a [`QsbrReader`](regio_sync::QsbrReader) at the cost of one load.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Translates `len` bytes at `addr` into a key, reading through `reader`.
    ///
    /// # Errors
    ///
    /// [`Error::Unmapped`] if the range is not wholly inside one region of the pool.
    ///
    /// # Panics
    ///
    /// If `reader` belongs to another RCU domain than [`domain`](Self::domain), whose grace
    /// periods would not protect the read.
    pub fn translate(&self, reader: &impl ReadSide, addr: *const u8, len: usize) -> Result<BufKey> {
        let spans = self.spans.read(reader);
        let a = addr as usize;
        let unmapped = || Error::Unmapped { addr: a, len };
        let idx = spans.partition_point(|s| s.base <= a);
        let span = idx
            .checked_sub(1)
            .and_then(|i| spans.get(i))
            .ok_or_else(unmapped)?;
        let offset = a - span.base;
        if offset.checked_add(len).is_none_or(|end| end > span.len) {
            return Err(unmapped());
        }
        Ok(BufKey {
            region: span.region,
            offset: u32::try_from(offset).map_err(|_| unmapped())?,
            len: u32::try_from(len).map_err(|_| unmapped())?,
        })
    }

    /// [`translate`](Self::translate) from a thread that is not a registered reader: takes a
    /// short guard read.
    pub fn translate_guarded(&self, addr: *const u8, len: usize) -> Result<BufKey> {
        let guard = self.domain.guard();
        self.translate(&guard, addr, len)
    }

    /// The number of regions in the table.
    pub fn regions(&self) -> usize {
        let guard = self.domain.guard();
        self.spans.read(&guard).len()
    }

    /// Adds a region. Only the pool's grower calls this, one at a time.
    pub(crate) fn insert(&self, region: RegionId, base: NonNull<u8>, len: usize) {
        let span = Span {
            base: base.as_ptr() as usize,
            len,
            region,
        };
        self.spans
            .update(|old| {
                let mut next = Vec::with_capacity(old.len() + 1);
                next.extend_from_slice(old);
                let at = next.partition_point(|s| s.base < span.base);
                next.insert(at, span);
                next
            })
            .defer();
    }
}
