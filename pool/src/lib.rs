//! The message resource pool of regio: registered memory, descriptors and fixed-file slots,
//! handed out and taken back without locks on the hot path.
//!
//! - **Regions** ([`Region`]) are page-aligned anonymous mappings, optionally on 2 MiB huge pages
//!   and optionally mlocked. Region `i` of a pool has id [`RegionId(i)`](RegionId); adapters
//!   register it through the [`Registrar`] trait, which names it by pool and id
//!   ([`PoolRegion`]), and choose its fixed-buffer index themselves, so regions of different
//!   pools never share one. The pool grows by adding regions while it is in use
//!   ([`MessagePool::grow`]).
//! - **Messages** ([`Message`]) are the pool's elements: one [`Descriptor`] plus one or more
//!   buffers of a size class. Everything is allocated up front; acquiring and releasing never
//!   allocate. A message returns to the pool when dropped, on any thread.
//! - **Two modes.** Synchronous: [`MessagePool::try_acquire`] (an [`Error::Exhausted`]
//!   would-block) and [`MessagePool::acquire_blocking`]. Asynchronous:
//!   [`MessagePool::acquire`]`.await`, FIFO, with no lost wake-up, and a dropped future never
//!   loses an element. A low-watermark event ([`PoolBuilder::low_watermark`]) tells the owner
//!   when a class runs low, like an SRQ limit event.
//! - **Speed.** Each thread caches elements in magazines in front of a shared lock-free store
//!   ([`IndexStack`](regio_sync::IndexStack), with a depot of whole batches in front of it) and moves them in batches, as
//!   DPDK's mempool does; acquiring and releasing from the cache take no atomic read-modify-write.
//!   Measurements and how to take them: `docs/performance.md`.
//! - **Integrity.** [`MessagePool::validate`] checks a descriptor before it becomes an SQE;
//!   generation counters turn stale handles and double frees into errors. Returned buffers are
//!   poisoned with [`POISON`] in debug builds.
//! - **Translation.** The [`KeyTable`] maps any address inside the pool to its [`BufKey`], under
//!   RCU so that it can grow while other threads translate.
//! - **Descriptors and rings.** [`FileSlots`] hands out fixed-file slots; [`BufFeed`] lends
//!   buffers to an io_uring provided-buffer ring through [`BufRingSink`].
//!
//! ```
//! use std::time::Duration;
//! use regio_pool::{MessagePool, Opcode};
//!
//! let pool = MessagePool::builder().class(4096, 64).build()?;
//!
//! let mut msg = pool.try_acquire()?;
//! msg.as_mut_slice()[..5].copy_from_slice(b"hello");
//! let desc = msg.descriptor_mut();
//! desc.opcode = Opcode::Send;
//! desc.truncate(5);
//! pool.validate(msg.descriptor())?; // what an adapter does before building the SQE
//! assert_eq!(msg.descriptor().slices()[0].len, 5);
//! drop(msg); // back to the pool
//!
//! let again = pool.acquire_blocking(Duration::from_millis(10))?;
//! assert_eq!(again.key().len, 4096);
//! # Ok::<(), regio_pool::Error>(())
//! ```
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod acquire;
mod depot;
mod descriptor;
mod error;
mod feed;
mod key;
mod keytable;
mod local;
mod magazine;
mod memlock;
mod message;
mod pool;
mod region;
mod registrar;
mod segment;
mod shared;
mod slots;
mod waiters;

pub use acquire::Acquire;
pub use descriptor::{DescFlags, Descriptor, Opcode, MAX_SG};
pub use error::{Error, Result};
pub use feed::{BufFeed, BufRingSink, Received};
pub use key::{BufKey, ElemRef, RegionId};
pub use keytable::KeyTable;
pub use memlock::MemlockLimit;
pub use message::{Message, RawMessage, POISON};
pub use pool::{MessagePool, PoolBuilder};
pub use region::{page_size, Region, RegionOptions, HUGE_PAGE};
pub use registrar::{PoolRegion, Registrar};
pub use shared::{LowWatermark, WatermarkFn};
pub use slots::{FileSlot, FileSlots, OwnedFileSlot};
