//! The regio executor: futures over adapter work queues, with `net`, `fs` and `time` types.
//!
//! This crate is a placeholder in the layout of `DESIGN.md` §2. It exports nothing yet; the
//! executor is built on `regio-adapters` by a later issue.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
