//! How an operation names registered memory.
//!
//! The contract is written once, in the crate docs ("Buffer identity"); this module and the
//! `tables` module enforce it.

use std::any::Any;
use std::sync::Arc;

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

/// A slice of a region registered with [`Adapter::register_region`](crate::Adapter::register_region),
/// with a value that keeps the region registered and its memory alive: what
/// [`Op::send_zc_region`](crate::Op::send_zc_region) carries beside (not instead of) the
/// adapter's buffer type, and drops only with the operation's final completion.
pub struct RegionSlice {
    key: BufKey,
    generation: u32,
    /// Dropped with the operation, after its final completion.
    _keep: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for RegionSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionSlice")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .finish()
    }
}

impl RegionSlice {
    /// `key` of the registration whose generation is `generation`, kept by `keep`.
    ///
    /// # Safety
    ///
    /// As long as `keep` lives, the region at `key.region` must stay registered with that
    /// generation (or be unregistered, which the post's check reports) and its memory must stay
    /// allocated; the bytes `key` names may be read by the kernel until the operation's final
    /// completion. The post checks the generation and the bounds against the adapter's table.
    pub unsafe fn new(key: BufKey, generation: u32, keep: Arc<dyn Any + Send + Sync>) -> Self {
        Self {
            key,
            generation,
            _keep: keep,
        }
    }

    /// The slice.
    pub fn key(&self) -> BufKey {
        self.key
    }
}

// SAFETY: `new`'s caller promised that `keep` keeps the region registered and its memory
// allocated for as long as this value lives; `slice` always answers the same.
unsafe impl IoBuf for RegionSlice {
    fn slice(&self) -> Result<BufSlice, DescriptorError> {
        Ok(BufSlice::Registered {
            key: self.key,
            generation: self.generation,
        })
    }
}
