//! How an operation names registered memory.
//!
//! The contract is written once, in the crate docs ("Buffer identity"); this module and the
//! `tables` module enforce it.

use regio_pool::Message;
pub use regio_pool::{BufKey, RegionId};

use crate::error::DescriptorError;

/// Which registered memory a buffer covers: what [`IoBuf::slice`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufSlice {
    /// A slice of a pool's region, named by the pool's id and the region's id in the pool (the
    /// adapter finds the fixed-buffer index it gave that region).
    Pool {
        /// The pool's id ([`MessagePool::id`](regio_pool::MessagePool::id)).
        pool: u32,
        /// The slice; `key.region` is the region's id in its pool.
        key: BufKey,
    },
    /// A slice of a region registered with
    /// [`Adapter::register_region`](crate::Adapter::register_region): `key.region` is the index
    /// it returned, and `generation` the generation it returned with it.
    Registered {
        /// The slice.
        key: BufKey,
        /// The registration's generation.
        generation: u32,
    },
}

/// An owned handle to a slice of registered memory: what an operation holds until its final
/// completion, and hands back then.
///
/// # Safety
///
/// While a value exists, the memory [`slice`](Self::slice) names must stay allocated and must
/// not be handed to anyone else (the kernel may write to it until the operation's final
/// completion, when the value comes back), and `slice` must return the same answer for the life
/// of the value.
pub unsafe trait IoBuf: Send + 'static {
    /// The registered memory this buffer covers, or why it may not be posted.
    ///
    /// # Errors
    ///
    /// A [`DescriptorError`], which becomes the operation's error completion.
    fn slice(&self) -> Result<BufSlice, DescriptorError>;
}

// SAFETY: a `Message` owns its elements until it drops, the pool keeps their regions mapped
// while any message lives, and `slice` only ever names memory inside the message's own buffers
// (their keys are fixed for the element's life). The descriptor cannot change while an
// operation holds the message: the operation owns it.
unsafe impl IoBuf for Message {
    /// The descriptor's slice (the whole first buffer if the descriptor names none), which must
    /// lie inside one of the message's own buffers.
    ///
    /// # Errors
    ///
    /// [`DescriptorError::Scatter`] for a descriptor of more than one slice (the adapters post
    /// no vectored operations), [`DescriptorError::NotOwned`] for a slice outside the message's
    /// buffers.
    #[inline(always)]
    fn slice(&self) -> Result<BufSlice, DescriptorError> {
        let key = match self.descriptor().slices() {
            [] => Message::key(self),
            &[key] => {
                if !self.owns(key) {
                    return Err(DescriptorError::NotOwned {
                        region: key.region.0,
                        offset: key.offset,
                        len: key.len,
                    });
                }
                key
            }
            many => {
                return Err(DescriptorError::Scatter {
                    slices: many.len() as u8,
                })
            }
        };
        Ok(BufSlice::Pool {
            pool: self.handle().pool,
            key,
        })
    }
}
