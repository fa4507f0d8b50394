//! The regio executor: thread-per-core workers over the adapters' io_uring rings, with owned-
//! buffer operations on the runtime's registered message pool, timers and files.
//!
//! - A [`Runtime`] has N workers (default: one per CPU the process may use) and one or more
//!   adapters (default: one; [`Builder::adapter`] opens more, each with its own
//!   [`AdapterSpec`]: SQPOLL or not, SQPOLL CPU, ring sizes). Each worker is a thread with its
//!   own ring of every adapter (a completion queue of each
//!   [`Adapter`](regio_adapters::Adapter)), its tasks, its in-flight operations and its timers.
//!   Tasks never move between workers.
//! - I/O goes to adapter 0 unless [`AdapterHandle::scope`] (from [`Runtime::adapter`] or
//!   [`adapter`]) names another: for the operations a future starts, the sockets and files it
//!   uses first, and the tasks it spawns ([`current_adapter`]).
//! - [`Runtime::spawn`] and [`spawn`] place a `Send` task on a worker (round-robin, the less
//!   loaded of two), through that worker's inbox; [`spawn_local`] keeps a `!Send` task on the
//!   current worker. A [`JoinHandle`] gives the output, or a [`JoinError`] for a task that
//!   panicked (its worker goes on) or was aborted.
//! - Operations ([`nop`], [`op::submit`], [`fs::File`]) are futures over the adapter's
//!   [`Op`](regio_adapters::Op)s: written into the ring's SQ when first polled, submitted in one batch
//!   per worker loop turn, routed back by cookie (slot and generation). A dropped operation
//!   future is cancelled in the kernel, and its buffer goes back to the pool only with the
//!   operation's final completion ([`op`](mod@op) module docs).
//! - [`time`]: sleeps, timeouts and intervals on each worker's timer map: never one kernel
//!   timeout per sleep.
//! - [`net`]: TCP, Unix and UDP sockets; streams receive and send on pool messages, send
//!   without a copy (`send_zc`), and send a file's range by splicing (`send_file`); listeners
//!   accept one connection at a time or, with [`incoming`](net::Listener::incoming), from one
//!   multishot accept.
//! - [`region`]: the program's own memory registered with the rings ([`region::Region`]), and
//!   zero-copy sends of its bytes on stream sockets.
//! - [`fs`]: [`fs::File`] with positioned reads and writes on registered buffers,
//!   [`fs::OpenOptions`] (`O_DIRECT` with [`direct`](fs::OpenOptions::direct)), and the
//!   whole-file helpers [`fs::read`] and [`fs::write`].
//! - Registered files: a socket or file that a worker uses is installed in a slot of its
//!   adapter's fixed-file table (each adapter has its own) on every worker's ring of that
//!   adapter, and its operations name the slot rather than the descriptor, as long as slots are
//!   free ([`Builder::max_files`], [`AdapterSpec::max_files`],
//!   [`Runtime::fixed_files_in_use`]; the [`net`](net#descriptors-and-fixed-file-slots) module
//!   docs say when and why).
//! - [`buf`]: the buffers operations take. A pool `Message` goes to the kernel as it is; a
//!   `Vec<u8>`, `Box<[u8]>` or (cargo feature `bytes`) `bytes::BytesMut` is copied through a
//!   pool message, one `memcpy` each way.
//! - [`main`] and [`test`] are `#[tokio::main]`-like attributes.
//! - `compat` (cargo feature `compat`): tokio's and the `futures` crate's `AsyncRead`,
//!   `AsyncBufRead` and `AsyncWrite` for the stream sockets, so that crates such as hyper run on
//!   regio, at the cost of one copy per byte each way (the module's docs say why).
//!
//! ```
//! use std::time::Duration;
//! use regio_runtime::{time, Runtime};
//!
//! let rt = Runtime::builder().worker_threads(2).build()?;
//! let sum = rt.block_on(async {
//!     let tasks: Vec<_> = (0..4u64)
//!         .map(|i| {
//!             regio_runtime::spawn(async move {
//!                 regio_runtime::nop().await.unwrap();
//!                 time::sleep(Duration::from_millis(1)).await;
//!                 i * 10
//!             })
//!         })
//!         .collect();
//!     let mut sum = 0;
//!     for t in tasks {
//!         sum += t.await.unwrap();
//!     }
//!     sum
//! });
//! assert_eq!(sum, 60);
//! rt.shutdown(Duration::from_secs(1));
//! # Ok::<(), regio_runtime::BuildError>(())
//! ```
//!
//! With the attribute macros:
//!
//! ```
//! #[regio_runtime::main(worker_threads = 2)]
//! async fn main() {
//!     let answer = regio_runtime::spawn(async { 6 * 7 }).await.unwrap();
//!     assert_eq!(answer, 42);
//! }
//! ```
//!
//! Two adapters in different modes, each carrying its own I/O:
//!
//! ```
//! use std::time::Duration;
//! use regio_runtime::{AdapterSpec, Runtime};
//!
//! let rt = Runtime::builder()
//!     .worker_threads(2)
//!     .adapter(AdapterSpec::new().sqpoll(Duration::from_millis(10)))
//!     .adapter(AdapterSpec::new().interrupt())
//!     .build()?;
//! let fast = rt.adapter(0)?;
//! let plain = rt.adapter(1)?;
//! let a = rt.spawn(fast.scope(async { regio_runtime::nop().await }));
//! let b = rt.spawn(plain.scope(async { regio_runtime::nop().await }));
//! rt.block_on(async { (a.await.unwrap().unwrap(), b.await.unwrap().unwrap()) });
//! for adapter in 0..2 {
//!     let done: u64 = rt.ring_stats().iter().filter(|r| r.adapter == adapter).map(|r| r.completions).sum();
//!     assert_eq!(done, 1);
//! }
//! rt.shutdown(Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The worker loop
//!
//! See the `worker` module: each turn drains the inbox (when the park word says something
//! came), polls the ready tasks (whose new operations go straight into the SQ of their
//! adapter's ring), submits them with one system call per ring and reaps every ring, passes an
//! RCU quiescent state, fires due timers; an idle worker spins briefly, then sleeps on the
//! eventfds of all its rings until a completion on any of them, a wake-up from another thread
//! or its next timer.
//!
//! # Synchronization
//!
//! The patterns, each documented in its module:
//!
//! - **The park handshake** (`park`): one atomic word per worker (`PARKED`, `NOTIFIED`),
//!   changed only by read-modify-writes; a poster pushes into the inbox, sets `NOTIFIED`, and
//!   writes the eventfd only if the worker had announced its park. Checked with loom on the
//!   real code, with `#[should_panic]` twins (a load and store instead of the RMW; a worker that
//!   checks its inbox before announcing) that loom shows losing a wake-up. The doorbell is the
//!   eventfds of all the worker's rings (one per adapter), cleared before the last look at them:
//!   a model shows a completion on a second ring reaching a parking worker, and its twin losing
//!   it when the clear comes after the look.
//! - **The inbox** (`inbox`): a mutex-guarded queue with a `closed` flag under the same mutex,
//!   so a post after shutdown is handed back, never stranded; also loom-checked.
//! - **The task state word** (`task`): `NOTIFIED` deduplicates wake-ups (Release by foreign
//!   wakers, Acquire clear before each poll), `COMPLETE` publishes the output (Release/Acquire),
//!   `ABORT` (AcqRel) asks the owner to drop the future.
//! - **Join slots** (`task::join`): a mutex between the owner storing the output and the handle
//!   taking it.
//! - **Owner-only state** needs none: the operation table, the staging queue, the timers, the
//!   run queue and the registry are used only by their worker thread (thread-local context).
//! - **Fixed-file slots** (`files`): free slots are a [`regio_pool::FileSlots`] (its own
//!   lock-free stack and proofs); a slot goes back only after it was emptied on every ring, and
//!   that only once the socket's or file's queues drop, which its operations hold until their
//!   final completions.
//! - **Counters** (`stats`): Relaxed statistics.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod adapter;
mod bell;
pub mod buf;
mod builder;
#[cfg(feature = "compat")]
pub mod compat;
mod contain;
mod context;
mod error;
mod files;
pub mod fs;
mod inbox;
pub mod net;
pub mod op;
mod park;
mod queues;
pub mod region;
mod remote;
mod runtime;
mod shared;
mod spec;
mod stats;
mod task;
pub mod time;
mod worker;

use std::future::Future;

pub use adapter::{current_adapter, AdapterError, AdapterHandle, OnAdapter};
pub use builder::{Builder, DEFAULT_POOL};
pub use error::BuildError;
pub use op::{nop, Nop};
pub use regio_macros::{main, test};
pub use runtime::Runtime;
pub use spec::{AdapterSpec, RingMode, MAX_ADAPTERS};
pub use stats::{RingStats, WorkerStats};
pub use task::{JoinError, JoinHandle};

/// Spawns a `Send` task on a worker of the current runtime (the one whose worker, or whose
/// [`Runtime::block_on`], runs the caller) and returns its handle. See [`Runtime::spawn`].
///
/// # Panics
///
/// Outside a regio runtime: use [`Runtime::spawn`] there.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match context::runtime() {
        Some(shared) => shared.spawn(future),
        None => panic!(
            "regio_runtime::spawn called outside a regio runtime: call it from a task or inside \
             Runtime::block_on, or use Runtime::spawn"
        ),
    }
}

/// Adapter `index` of the current runtime (the one whose worker, or whose
/// [`Runtime::block_on`], runs the caller), to run I/O on it ([`AdapterHandle::scope`]).
///
/// # Errors
///
/// [`AdapterError::OutOfRange`] if the runtime has no such adapter,
/// [`AdapterError::NoRuntime`] outside a regio runtime (use [`Runtime::adapter`] there).
pub fn adapter(index: usize) -> Result<AdapterHandle, AdapterError> {
    match context::runtime() {
        Some(shared) => AdapterHandle::checked(index, shared.adapters.len()),
        None => Err(AdapterError::NoRuntime),
    }
}

/// The current runtime's message pool (a handle to it; see [`Runtime::pool`]).
///
/// # Panics
///
/// Outside a regio runtime (a worker, or [`Runtime::block_on`]).
pub fn pool() -> regio_pool::MessagePool {
    match context::runtime() {
        Some(shared) => shared.pool.clone(),
        None => panic!(
            "regio_runtime::pool called outside a regio runtime: call it from a task or inside              Runtime::block_on, or use Runtime::pool"
        ),
    }
}

/// Spawns a task that need not be `Send` on the current worker, where it stays, and returns
/// its handle.
///
/// # Panics
///
/// Off a worker thread (in [`Runtime::block_on`] too): a `!Send` task must be created on the
/// worker that will run it. Call it from inside a spawned task, or use [`spawn`] for a `Send`
/// future.
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    if !context::on_worker() {
        panic!(
            "regio_runtime::spawn_local called off a regio worker thread: call it from inside a \
             spawned task, or use spawn for a Send future"
        );
    }
    context::with_worker(|local| local.spawn_local(future)).expect("this thread is a worker")
}

/// What the attribute macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::{Builder, Runtime};

    /// The runtime of a `#[regio_runtime::test]`, or `None` after printing `SKIP: <reason>` when
    /// io_uring is disabled on this host (a failure instead under `REGIO_REQUIRE_ALL=1`).
    ///
    /// # Panics
    ///
    /// If the runtime cannot be built for another reason.
    pub fn test_runtime(workers: usize) -> Option<Runtime> {
        match Builder::new()
            .worker_threads(workers)
            .pool_class(4096, 64)
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) if e.is_io_uring_disabled() => {
                assert!(
                    std::env::var("REGIO_REQUIRE_ALL").as_deref() != Ok("1"),
                    "required test skipped: {e}"
                );
                println!("SKIP: {e}");
                None
            }
            Err(e) => panic!("cannot start the regio runtime: {e}"),
        }
    }
}
