//! The NBD target behind `regio serve`: a pure protocol codec and a server on the regio runtime.
//!
//! This crate is a placeholder in the layout of `DESIGN.md` §2. It exports nothing yet; the codec
//! and the target are built by a later issue.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
