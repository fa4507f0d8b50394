//! RIO-style adapters on io_uring.
//!
//! This crate is the Registered I/O / InfiniBand-verbs layer of regio, usable without any
//! executor:
//!
//! - An [`Adapter`] owns N io_uring rings that share one SQPOLL kernel thread
//!   (`IORING_SETUP_ATTACH_WQ`), a sparse registered-buffer table (regions registered on ring 0
//!   and cloned to the others with `IORING_REGISTER_CLONE_BUFFERS`) and a sparse fixed-file table.
//! - Each ring is one [`CompletionQueue`]. It coalesces the completions of every [`WorkQueue`]
//!   bound to it; reaping reads the shared CQ with no system call.
//! - A [`WorkQueue`] is a request queue for one socket or file, with send and receive depth
//!   credits. Any thread may post to it: the thread that owns the ring at that moment pushes
//!   straight into the SQ, the others leave the post in the ring's inbox and the owner pushes it
//!   before letting go. Every descriptor is validated first; a bad one becomes an error
//!   completion on its own work queue.
//! - A [`CqSet`] reaps many CQs, from one thread or several, with each CQ held by at most one
//!   reaper at a time, and idle reapers asleep in one epoll on the CQs' eventfds.
//! - The tables (regions, files, work queues) sit behind [`regio_sync::Rcu`].
//!
//! An operation owns its buffer until its *final* completion (for send_zc the `F_NOTIF` one, for
//! multishot the one without `F_MORE`), and the [`Completion`] hands the buffer back. Failed posts
//! hand the operation back ([`PostError`]).
//!
//! ```no_run
//! use regio_adapters::{Adapter, BufKey, Config, IoBuf, Op, RegionId, Target};
//!
//! // A buffer type: here a whole 4 KiB region. (regio-pool's messages play this role.)
//! struct Page { generation: u32 }
//! // SAFETY: the region outlives every `Page` in this example and each `Page` is used once.
//! unsafe impl IoBuf for Page {
//!     fn key(&self) -> BufKey { BufKey { region: RegionId(0), offset: 0, len: 4096 } }
//!     fn generation(&self) -> u32 { self.generation }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let adapter = Adapter::<Page>::new(Config::default())?;
//! let memory = Box::leak(vec![0u8; 4096].into_boxed_slice());
//! // SAFETY: `memory` is leaked, so it stays valid for the adapter's life.
//! let generation = unsafe { adapter.register_region(RegionId(0), memory.as_mut_ptr(), 4096)? };
//! let file = std::fs::File::open("/etc/hostname")?;
//! use std::os::fd::AsRawFd;
//! let wq = adapter.work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)?;
//! wq.post(Op::read_fixed(Page { generation }, 0, 7)).map_err(|e| e.to_string())?;
//! let cq = adapter.completion_queue(0).unwrap();
//! let mut done = Vec::new();
//! cq.wait(&mut done, 16, None)?;
//! assert_eq!(done[0].cookie, 7);
//! assert!(done[0].buf.is_some()); // the buffer is back
//! # Ok(()) }
//! ```
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod adapter;
mod buf;
#[cfg(loom)]
#[doc(hidden)]
pub mod combiner;
#[cfg(not(loom))]
mod combiner;
mod cq;
mod cqset;
mod error;
pub mod ops;
mod ring;
mod stats;
mod sys;
mod tables;
mod wq;

pub use adapter::{Adapter, Config, SqPoll};
pub use buf::{BufKey, IoBuf, RegionId};
pub use cq::{Batch, Completion, CompletionQueue};
pub use cqset::CqSet;
pub use error::{DescriptorError, Error, PostError};
pub use ops::{FileSlot, Op, Side, Target};
pub use stats::Stats;
pub use tables::WqId;
pub use wq::WorkQueue;
