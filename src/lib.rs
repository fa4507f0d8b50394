//! regio: an io_uring I/O runtime in the style of Registered I/O.
//!
//! This facade re-exports the member crates:
//! - [`sync`]: the QSBR RCU domain that lets threads keep working on shared tables while one
//!   thread updates them;
//! - [`pool`]: the message resource pool of pre-registered buffers and descriptors;
//! - [`adapters`]: SQPOLL rings, work queues, coalescing completion queues and CQ sets.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub use regio_adapters as adapters;
pub use regio_pool as pool;
pub use regio_sync as sync;
