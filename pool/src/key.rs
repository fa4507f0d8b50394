//! The names the kernel and the application share: region ids and buffer keys.

use std::fmt;

/// A region's id: in a pool, the region's number in that pool; in an adapter's own
/// registrations, the fixed-buffer index the adapter chose. A pool region's fixed-buffer index
/// is the adapter's business (see [`PoolRegion`](crate::PoolRegion)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId(pub u16);

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A slice of registered memory: `len` bytes at `offset` into region `region`. This is what a
/// `READ_FIXED`/`WRITE_FIXED` names, once the adapter has turned the region into its
/// fixed-buffer index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufKey {
    /// The region.
    pub region: RegionId,
    /// The byte offset of the slice inside the region.
    pub offset: u32,
    /// The slice's length in bytes.
    pub len: u32,
}

impl BufKey {
    /// The offset one past the slice's last byte.
    #[inline]
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.len)
    }
}

/// Which message a descriptor belongs to: the pool, the head element and its generation.
///
/// The pool stamps it on a message's descriptor when the message is acquired, and
/// [`MessagePool::validate`](crate::MessagePool::validate) checks it before the descriptor may
/// become an SQE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElemRef {
    /// The pool's id.
    pub pool: u32,
    /// The head element's index.
    pub index: u32,
    /// The head element's generation when the message was acquired.
    pub generation: u32,
}

impl ElemRef {
    /// The stamp of a descriptor that belongs to no message (it may carry no buffer slices).
    pub const NONE: ElemRef = ElemRef {
        pool: 0,
        index: u32::MAX,
        generation: 0,
    };
}
