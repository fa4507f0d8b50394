//! The crate's one error type.

use std::io;
use std::time::Duration;

use crate::memlock::MemlockLimit;

use crate::key::{BufKey, RegionId};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the pool. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No element of the class is free right now (the `WouldBlock` of the synchronous mode).
    #[error("pool class {class} is exhausted: no free element now; retry, wait with `acquire`, or grow the pool")]
    Exhausted {
        /// The size class that ran dry.
        class: usize,
    },
    /// `acquire_blocking` waited for its whole timeout.
    #[error("no element of pool class {class} became free within {waited:?}; grow the pool or release messages sooner")]
    Timeout {
        /// The size class waited on.
        class: usize,
        /// How long the caller waited.
        waited: Duration,
    },
    /// `mmap` of a region failed.
    #[error("mmap of a {len}-byte region failed: {source}; {memlock} (locked or huge-page regions count against it)")]
    Map {
        /// The length asked for.
        len: usize,
        /// The kernel's answer.
        source: io::Error,
        /// RLIMIT_MEMLOCK at the time of the failure.
        memlock: MemlockLimit,
    },
    /// `mlock` of a region failed.
    #[error("mlock of a {len}-byte region failed: {source}; {memlock}: raise it (`ulimit -l`, LimitMEMLOCK= in systemd) or grant CAP_IPC_LOCK")]
    Lock {
        /// The length asked for.
        len: usize,
        /// The kernel's answer.
        source: io::Error,
        /// RLIMIT_MEMLOCK at the time of the failure.
        memlock: MemlockLimit,
    },
    /// A configuration that cannot be built.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// The pool already has as many regions as element indices can name.
    #[error(
        "the pool already has the maximum of {max} regions; use larger regions instead of more"
    )]
    TooManyRegions {
        /// The limit.
        max: usize,
    },
    /// A [`Registrar`](crate::Registrar) refused a region.
    #[error("registering region {region} failed: {source}")]
    Register {
        /// The region being registered.
        region: RegionId,
        /// The registrar's error.
        source: io::Error,
    },
    /// A handle names an element whose generation has moved on: stale, or already released.
    #[error("stale handle for element {index}: generation {expected:#x} expected, element is at {found:#x} (used after release, or released twice)")]
    StaleHandle {
        /// The element index.
        index: u32,
        /// The generation the handle carries.
        expected: u32,
        /// The element's generation now.
        found: u32,
    },
    /// A descriptor or raw message from another pool.
    #[error("the descriptor or raw message belongs to pool {found}, not to this pool ({expected}); hand it to the pool it came from")]
    ForeignPool {
        /// This pool's id.
        expected: u32,
        /// The id the descriptor carries.
        found: u32,
    },
    /// A key names a region this pool does not have.
    #[error("unknown region {0}: the key does not come from this pool")]
    UnknownRegion(RegionId),
    /// A slice goes past its region or its buffer.
    #[error("slice {key:?} is out of bounds: {why}")]
    OutOfBounds {
        /// The offending slice.
        key: BufKey,
        /// Which bound it crosses.
        why: &'static str,
    },
    /// A slice lies in a buffer the descriptor's message does not hold.
    #[error("slice {key:?} lies in a buffer that this message does not hold")]
    NotOwned {
        /// The offending slice.
        key: BufKey,
    },
    /// An opcode that moves data has no buffer.
    #[error("opcode {0:?} needs at least one buffer slice")]
    NoBuffers(crate::Opcode),
    /// More slices than a descriptor holds.
    #[error("a descriptor holds at most {max} slices")]
    TooManySlices {
        /// The limit.
        max: usize,
    },
    /// An address that no region of the pool contains.
    #[error("address {addr:#x} (+{len}) is not inside a region of this pool")]
    Unmapped {
        /// The address.
        addr: usize,
        /// The length asked for.
        len: usize,
    },
    /// The fixed-file slot table is full.
    #[error("all {capacity} fixed-file slots are in use; close files or register a larger table")]
    SlotsExhausted {
        /// The table size.
        capacity: u32,
    },
    /// A [`BufFeed`](crate::BufFeed) with more buffers than its provided-buffer ring has slots:
    /// the ring would hand the kernel one buffer twice.
    #[error("a feed of {count} buffers does not fit a provided-buffer ring of {entries} slots; register a ring with at least {count} entries, or lend fewer buffers")]
    FeedTooLarge {
        /// The buffers asked for.
        count: u16,
        /// The ring's slots.
        entries: u16,
    },
    /// A size class the pool does not have.
    #[error("the pool has no size class {class}: it has {classes}, numbered from 0 in the order of the `PoolBuilder::class` calls")]
    NoSuchClass {
        /// The class asked for.
        class: usize,
        /// How many classes the pool has.
        classes: usize,
    },
    /// A provided-buffer id that is not in the ring.
    #[error("buffer id {bid} is not in the provided-buffer ring (duplicate or stale completion)")]
    NotInRing {
        /// The buffer id.
        bid: u16,
    },
}

impl Error {
    /// Whether the operation would have had to wait: retry later or use an async or blocking
    /// acquire.
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::Exhausted { .. } | Error::SlotsExhausted { .. })
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Exhausted { .. } | Error::SlotsExhausted { .. } => io::ErrorKind::WouldBlock,
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Map { source, .. } | Error::Lock { source, .. } => source.kind(),
            Error::Register { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}
