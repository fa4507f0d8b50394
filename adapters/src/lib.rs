//! RIO-style adapters on io_uring.
//!
//! This crate is the Registered I/O / InfiniBand-verbs layer of regio, usable without any
//! executor:
//!
//! - An [`Adapter`] owns N io_uring rings that share one SQPOLL kernel thread
//!   (`IORING_SETUP_ATTACH_WQ`), a sparse registered-buffer table (regions registered on ring 0
//!   and cloned to the others with `IORING_REGISTER_CLONE_BUFFERS`) and a sparse fixed-file table.
//! - Each ring is one [`Ring`]. It coalesces the completions of every [`WorkQueue`]
//!   bound to it; reaping reads the shared CQ with no system call.
//! - A [`WorkQueue`] is a request queue for one socket or file, with send and receive depth
//!   credits (a cancel may overdraw them by one: it never waits behind what it cancels). Any
//!   thread may post to it: the thread that owns the ring at that moment pushes
//!   straight into the SQ, the others leave the post in the ring's inbox and the owner pushes it
//!   before letting go. Every descriptor is validated first; a bad one becomes an error
//!   completion on its own work queue.
//! - A [`CqSet`] reaps many CQs, from one thread or several, with each CQ held by at most one
//!   reaper at a time, and idle reapers asleep in one epoll on the CQs' eventfds.
//! - The tables (regions, files, work queues) sit behind [`regio_sync::Rcu`].
//! - A CQ can be resized ([`Adapter::resize_completion_queue`]) while threads post and reap: a
//!   new io_uring with the new CQ size, set up like the old one (shared SQPOLL thread, cloned
//!   buffers, the same eventfd), takes over under the same [`Ring`], and the old one
//!   is reaped through it until its last operation's final CQE, then closed. The old ring's
//!   fixed files are carried into the new one first.
//! - Fixed files are per ring: [`Adapter::set_file`] installs one on every ring, an accept
//!   ([`Op::accept_direct`], [`Op::accept_multishot`]) on its own ring only, and
//!   [`Op::share_file`] copies a slot into another ring's table (`IORING_MSG_SEND_FD`), for
//!   work queues on that ring's completion queue.
//!
//! # Ownership until the final completion
//!
//! This is the contract every layer above relies on (the runtime's futures, the NBD target),
//! and this crate is where it is enforced: the in-flight table keeps an entry per operation from
//! its SQE to its final CQE, and only the reap that sees the final CQE frees the entry.
//!
//! - **From the post to the final completion, the adapter owns the operation's buffer**, and
//!   the [`Completion`] carrying the final CQE hands it back. Nothing else can reach the buffer
//!   meanwhile, so the kernel never writes into memory that went back to a pool or to its user.
//! - **The final completion** is the only CQE of a plain operation; for `send_zc`, the
//!   `F_NOTIF` CQE that follows the result (the kernel reads the pages until then); for a
//!   multishot operation, the first CQE without `F_MORE`. A cancelled operation still ends with
//!   its final CQE (`-ECANCELED` or what it did before the cancel reached it).
//! - **Memory the kernel reads late is held too**: a timeout's timespec, an address buffer for
//!   accept or recvmsg, the duplicate fd of a work queue on a plain fd, the target ring's fd of
//!   a msg_ring or share_file, all kept with the entry.
//! - **A refused post gives everything back**: a post the adapter cannot take returns the
//!   operation with its buffer in [`PostError`]; a post whose descriptor fails a check becomes
//!   an error completion with its buffer ([`Completion::rejected`]).
//! - **Teardown waits**: dropping an adapter (or its last handle to a ring) cancels what is in
//!   flight and reaps until every final CQE arrived before buffers go back to their pool; a
//!   retired ring after a resize is reaped the same way before it closes.
//!
//! The runtime's cancel-on-drop (the `op` module of `regio-runtime`) is built on these rules.
//! Provided buffers picked by the kernel follow a contract of their own, kept by
//! [`BufFeed`](regio_pool::BufFeed).
//!
//! # Threading
//!
//! By default, each ring has one owner at a time: the thread that takes its lock (a `try_lock`,
//! never a wait) to post, reap or register. A post from another thread goes into the ring's
//! inbox, and the owner pushes it into the SQ before it lets go; the hand-off is a fence-based
//! Dekker pair ([`regio_sync::Combiner`], whose loom models check it), so no post is stranded and nobody has to be
//! woken. Owners never block while they own a ring; sleeping is done on the CQ eventfds
//! ([`Ring::wait`], [`CqSet::wait`]). A waiter that finds a ring owned by another
//! thread (a poster, a [`Batch`]) asks the owner, through a second Dekker pair, to signal the
//! eventfd when it lets go if the CQ holds completions (a loom model in `wait.rs`); completions
//! made in user space (rejections) signal it too. A post the full SQ refused stays in the inbox
//! until there is room (with SQPOLL, once the kernel thread has taken SQEs): the owner that
//! leaves it signals the eventfd, and waiters look again at short intervals until it is pushed.
//!
//! Because any thread may submit and reap, the rings are not set up with `SINGLE_ISSUER` or
//! `DEFER_TASKRUN` (both would tie the ring to one task). Without SQPOLL the rings use the
//! kernel's default task-work notification, or `COOP_TASKRUN` when [`Config::coop_taskrun`]
//! says the posting threads also reap.
//!
//! ## Single-issuer mode
//!
//! [`Config::single_issuer`] (off by default, and only without SQPOLL) ties each ring to one
//! owner thread instead, so the kernel can skip its cross-task machinery: the rings are set up
//! with `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them (else `SINGLE_ISSUER |
//! COOP_TASKRUN`, else neither; [`Adapter::single_issuer`] says which), and disabled until a
//! thread binds them ([`Ring::bind_owner`], [`Adapter::bind_owner`]):
//! `IORING_REGISTER_ENABLE_RINGS` makes the binding thread the kernel's submitter task.
//!
//! - The owner's posts go straight into the SQ. Another thread's post goes into the ring's
//!   inbox, never takes the ring, and writes the CQ eventfd to wake the owner, which sleeps on
//!   it in [`Ring::wait`] or [`CqSet::wait`]. The owner drains the eventfd before it
//!   looks at the inbox and sleeps only after, so no post is left behind (a loom model in
//!   `tests/loom.rs`).
//! - Only the owner reaps ([`Ring::reap`] returns 0 and [`Ring::batch`]
//!   `None` elsewhere, [`Ring::wait`] returns [`Error::NotOwner`]). Each reap runs the
//!   task work the kernel deferred to the owner when `IORING_SQ_TASKRUN` says there is some;
//!   with `DEFER_TASKRUN` that is what moves most completions into the CQ. The kernel signals
//!   the CQ eventfd when it queues such work, so a sleeping owner wakes for it.
//! - The kernel refuses `io_uring_register` on a bound ring from any thread but its owner, so
//!   registration (a pool's [`Adapter::registrar`] included) must happen before binding or on
//!   the owner (one thread owning every ring); elsewhere it returns [`Error::NotOwner`] and
//!   changes nothing. Resizing a CQ is refused.
//! - Drop the last handle to a ring (adapter, `Ring`, work queue) on its owner thread:
//!   only the owner can cancel what is in flight and wait for it; dropped elsewhere, the buffers
//!   of operations in flight are leaked (the kernel cancels the operations when the ring
//!   closes). Keep the owner thread alive while its ring is in use: the kernel ties the ring to
//!   that thread.
//! - [`Adapter::new`] refuses single-issuer mode with SQPOLL ([`Error::Invalid`]): the kernel
//!   takes `SINGLE_ISSUER` with SQPOLL but not `DEFER_TASKRUN`, and the kernel thread submits
//!   anyway.
//!
//! The default mode pays for this one `bool` test per post, reap and batch.
//!
//! # Buffer identity
//!
//! The kernel checks nothing about a fixed buffer but its index and bounds, so the adapter
//! makes sure that an operation can only name memory its buffer owns:
//!
//! - **The adapter picks every fixed-buffer index.** A pool's regions are registered through
//!   [`Adapter::registrar`] under the pool's id and their ids in the pool; the adapter gives
//!   each a free index and remembers which pool region it holds. Regions registered by hand
//!   ([`Adapter::register_region`]) get an index too, and a generation unique in the process.
//!   No two regions, of one pool or of several, ever share an index.
//! - **A buffer names its memory through [`IoBuf::slice`].** A pool [`Message`](regio_pool::Message)
//!   names its pool and the slice its descriptor describes, and only if that slice lies inside
//!   one of the message's own buffers: a descriptor aimed anywhere else (with
//!   [`Descriptor::set_slices`](regio_pool::Descriptor::set_slices), or copied from another
//!   message) is rejected with [`DescriptorError::NotOwned`], a descriptor of several slices with
//!   [`DescriptorError::Scatter`], and a message of a pool not attached to this adapter with
//!   [`DescriptorError::NotAttached`]. Other buffer types implement the unsafe [`IoBuf`] trait
//!   and answer for themselves.
//! - **The post path resolves and bounds-checks in O(1)**: the attached pool's index table (one
//!   entry per attached pool), or the index and its generation, then the region's bounds. The
//!   adapter computes the address itself; nothing the caller wrote becomes a pointer.
//! - **File numbers stay put.** A work queue on a plain fd holds its own duplicate, and
//!   msg_ring and share_file hold one of their target ring's fd until their final completion,
//!   so the number in an SQE never names a file that took a closed one's number.
//! - **No registration waits for a ring.** Registration changes are system calls on the rings'
//!   fds under the tables' write lock, which nobody holds while waiting for a ring: a thread that
//!   owns a ring (reaping, or in a [`Batch`]) may grow a pool, drop its last message or run a
//!   low-watermark callback without waiting for itself. A registration that fails on one ring is
//!   taken back from the others.
//!
//! A failed check completes the operation with an error on its own work queue
//! ([`Completion::rejected`]), with its buffer, and reaches neither the kernel nor any other
//! queue.
//!
//! # Integrity and kernel support
//!
//! - Fixed-file slots are bounds-checked; a failed check is an error completion on the poster's
//!   own work queue. Slots are not owned: any work queue of the adapter may name any slot, and an
//!   accept or share_file into an occupied slot replaces its file (hand slots out with
//!   [`FileSlots`](regio_pool::FileSlots)).
//! - CQ overflow: every reap that finds the CQ empty reads the kernel's overflow flag (the
//!   kernel may have judged the CQ full against an older head than the reaper's), its overflow
//!   list is flushed, and each event is counted in [`Stats::cq_overflows`]; a completion the
//!   kernel dropped is reported as [`Error::CompletionsLost`].
//! - Operations are checked against `IORING_REGISTER_PROBE`; one the kernel lacks completes with
//!   [`DescriptorError::Unsupported`], naming the kernel version that brings it. Setup errors
//!   name their cause: [`Error::IoUringDisabled`], [`Error::MemlockTooLow`] (with RLIMIT_MEMLOCK's
//!   value), [`Error::Unsupported`]. A refused SQPOLL falls back to interrupt-driven submission
//!   ([`Config::sqpoll_fallback`]); a kernel without buffer cloning registers on each ring.
//! - [`Op::send`] and [`Op::recv`] use the buffer's registration: with
//!   `IORING_RECVSEND_FIXED_BUF` where the kernel takes it on plain send and recv (Linux 7.2,
//!   tried once per process), else, for flags 0, as `WRITE_FIXED`/`READ_FIXED` on the socket (a
//!   send then can raise `SIGPIPE` on a broken stream, as `write(2)` does); a send or recv with
//!   flags on an older kernel does not use the registration. See
//!   [`ops::net`](ops::net#send-and-recv-on-registered-buffers).
//!
//! # Observability
//!
//! Each adapter has a `tracing` span (`adapter`) and each CQ a child span (`cq`); setup,
//! registration, queue changes, overflows and reaps are events in them. [`Adapter::stats`] and
//! [`Ring::stats`] count submissions, completions, `io_uring_enter` calls, SQ-full
//! events, CQ overflows, rejections and the inbox depth.
//!
//! # The hot path
//!
//! - An [`Op`] carries its SQE, built with the io-uring crate's builders when the op is made;
//!   posting only fills in the file, the buffer and `user_data`, in place in the ring's
//!   staging area, with no per-opcode dispatch. Staged SQEs reach the SQ with one copy and one
//!   tail store at submit (with SQPOLL, optionally also every few posts of a batch, so that the
//!   kernel thread works while the batch stages the next: [`Config::sqpoll_publish_every`]).
//! - A [`Batch`] owns its ring for its life and takes work-queue credits in blocks, so a post
//!   costs no atomic read-modify-write; the in-flight table is a slab of one cache line per
//!   operation with its free list running through the entries.
//! - CQEs are routed straight from the CQ into the caller's `Vec`, one field at a time.
//! - Structs freshly built with narrow stores are never copied with wide loads (the copy would
//!   wait for the stores to retire: no store-to-load forwarding); the SQE copy goes eight bytes
//!   at a time and entries and completions are written field by field. On this machine such
//!   stalls were the largest costs of a NOP round trip before they were removed.
//!
//! ```
//! use std::os::fd::AsRawFd;
//! use regio_adapters::{Adapter, Config, Op, PostError, Target};
//! use regio_pool::{Message, MessagePool};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let adapter = Adapter::<Message>::new(Config::default())?;
//! let pool = MessagePool::builder().class(4096, 64).build()?;
//! pool.attach(adapter.registrar())?; // each pool region becomes a fixed buffer on every ring
//!
//! let path = std::env::temp_dir().join(format!("regio-doc-{}", std::process::id()));
//! std::fs::write(&path, b"hello, registered I/O")?;
//! let file = std::fs::File::open(&path)?;
//! let wq = adapter.work_queue(0, Target::Fd(file.as_raw_fd()), 1, 1)?; // depths: send, receive
//!
//! wq.post(Op::read_fixed(pool.try_acquire()?, 0, 7))?;
//! // A refused post hands the operation back, with its buffer. This queue takes one read at a
//! // time, so a second one is refused until the first completes:
//! let refused = wq.post(Op::read_fixed(pool.try_acquire()?, 0, 8)).unwrap_err();
//! let (op, why) = refused.split();
//! assert!(matches!(why, PostError::NoCredit(())));
//! drop(op); // or post it again once a completion has given the credit back
//!
//! let cq = wq.ring();
//! let mut done = Vec::new();
//! cq.wait(&mut done, 16, None)?;
//! assert_eq!((done[0].cookie, done[0].io_result()?), (7, 21));
//! let msg = done[0].buf.take().expect("the buffer comes back with the final completion");
//! assert_eq!(&msg.as_slice()[..5], b"hello");
//! # std::fs::remove_file(path)?;
//! # Ok(()) }
//! ```
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod adapter;
mod batch;
mod buf;
mod cqset;
mod error;
mod handle;
pub mod ops;
mod pbuf;
pub mod probe;
mod register;
mod ring;
mod stats;
mod sys;
mod tables;
mod uring_abi;
mod wait;
mod wq;

pub use adapter::{Adapter, Config, Registration, SingleIssuer, SqPoll, WeakAdapter};
pub use batch::Batch;
pub use buf::{BufKey, BufSlice, IoBuf, RegionId, RegionSlice};
pub use cqset::CqSet;
pub use error::{ChainError, ChainRefusal, DescriptorError, Error, PostError};
pub use handle::{Completion, Ring};
pub use ops::{FileSlot, Op, Side, Target};
pub use pbuf::ProvidedRing;
pub use stats::Stats;
pub use tables::WqId;
pub use wq::{MessageError, WorkQueue};
