//! The message resource pool (being built by the pool issue).
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
