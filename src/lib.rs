//! regio: an io_uring I/O runtime in the style of Registered I/O.
//!
//! This facade re-exports the member crates:
//! - [`sync`]: the QSBR RCU domain that lets threads keep working on shared tables while one
//!   thread updates them;
//! - [`pool`]: the message resource pool of pre-registered buffers and descriptors;
//! - [`adapters`]: SQPOLL rings, work queues, coalescing completion queues and CQ sets;
//! - [`runtime`]: the executor, thread-per-core workers over the adapter's rings, with
//!   operations as futures, timers, files and sockets ([`net`]); [`main`] and [`test`] are its
//!   attribute macros;
//! - [`nbd`]: the NBD protocol codec and the NBD server behind `regio serve`.
//!
//! ```
//! #[regio::main(worker_threads = 2)]
//! async fn main() {
//!     let task = regio::runtime::spawn(async {
//!         regio::runtime::nop().await.unwrap();
//!         "done"
//!     });
//!     assert_eq!(task.await.unwrap(), "done");
//! }
//! ```
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

pub use regio_adapters as adapters;
pub use regio_nbd as nbd;
pub use regio_pool as pool;
pub use regio_runtime as runtime;
pub use regio_sync as sync;

pub use regio_runtime::net;

/// Runs an `async fn main` on a new regio runtime: `#[regio::main]`, or
/// `#[regio::main(worker_threads = N)]`. See [`regio_runtime::main`].
pub use regio_macros::facade_main as main;
/// Runs an `async fn` test on a new regio runtime: `#[regio::test]`, or
/// `#[regio::test(worker_threads = N)]`. See [`regio_runtime::test`].
pub use regio_macros::facade_test as test;
