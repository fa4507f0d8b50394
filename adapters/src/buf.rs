//! How an operation names registered memory.
//!
//! A buffer is a slice of a registered region, named by a [`BufKey`] `{region, offset, len}` and
//! the region's generation, as Registered I/O names a buffer by `{BufferId, Offset, Length}`. The
//! adapter turns the key into an address from its own region table, after checking it, so a
//! corrupt key can never make the kernel touch memory outside the region.

/// The index of a registered region; also its fixed-buffer index on every ring of an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u16);

/// A slice of a registered region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufKey {
    /// The region.
    pub region: RegionId,
    /// Byte offset of the slice in the region.
    pub offset: u32,
    /// Length of the slice in bytes.
    pub len: u32,
}

/// An owned handle to a slice of registered memory: what an operation holds until its final
/// completion, and hands back then.
///
/// # Safety
///
/// While a value exists, the memory its key names must stay allocated and must not be handed to
/// anyone else (the kernel may write to it until the operation's final completion, when the
/// value comes back). [`key`](Self::key) and [`generation`](Self::generation) must return the
/// same values for the life of the value.
pub unsafe trait IoBuf: Send + 'static {
    /// The slice this buffer covers.
    fn key(&self) -> BufKey;
    /// The generation of the region registration the key belongs to.
    fn generation(&self) -> u32;
}
