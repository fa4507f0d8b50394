//! RIO-style adapters on io_uring (being built by the adapters issue).
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod probe;
