//! How an operation names registered memory.
//!
//! A buffer is a slice of a registered region, named by a [`BufKey`] `{region, offset, len}` and
//! the region's generation, as Registered I/O names a buffer by `{BufferId, Offset, Length}`. The
//! adapter turns the key into an address from its own region table, after checking it, so a
//! corrupt key can never make the kernel touch memory outside the region.

use regio_pool::Message;
pub use regio_pool::{BufKey, RegionId};

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
    /// The generation of the region registration the key was issued under (returned by
    /// [`Adapter::register_region`](crate::Adapter::register_region)), if the buffer tracks it;
    /// the adapter then rejects a key from an older registration or another adapter. `None`
    /// skips that check (a pool [`Message`] is a live owner by construction).
    fn generation(&self) -> Option<u32>;
}

// SAFETY: a `Message` owns its elements until it drops, the pool keeps their region mapped while
// any message lives, and its key is fixed at acquisition.
unsafe impl IoBuf for Message {
    /// The descriptor's first slice (the whole first buffer if the descriptor names none).
    fn key(&self) -> BufKey {
        self.descriptor()
            .slices()
            .first()
            .copied()
            .unwrap_or_else(|| Message::key(self))
    }

    fn generation(&self) -> Option<u32> {
        None
    }
}
