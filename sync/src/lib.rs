//! Lock-free primitives for regio.
//!
//! The main one is [`Rcu<T>`], an RCU-like cell that lets many threads keep working on a shared
//! table (work queues, completion queues, file slots) while a single thread updates it, without
//! serialising the readers. Readers belong to a [`Domain`]:
//!
//! - **Registered readers** ([`QsbrReader`], one per executor thread) read with a plain load and
//!   announce a quiescent state once per loop turn. This is quiescent-state-based reclamation
//!   (QSBR): readers pay nothing, writers wait.
//! - **Guard readers** ([`Guard`], from [`Domain::guard`]) serve threads that are not registered.
//!   Each thread keeps one reader slot per domain for its guards, so a guard costs a store to
//!   come online and one to go offline, plus the reader half of a fence pair that is asymmetric
//!   where the kernel allows (`membarrier`), so that the reader's half is a compiler fence.
//!
//! A writer publishes a new version and then either waits for a grace period
//! ([`Retired::synchronize`]) or hands the old version to the domain, which drops it once the
//! grace period is over ([`Retired::defer`], in the manner of `call_rcu`).
//!
//! ```
//! use std::sync::Arc;
//! use std::thread;
//! use regio_sync::{Domain, Rcu};
//!
//! let domain = Domain::new();
//! let table = Arc::new(Rcu::new(&domain, vec![0u32; 4]));
//!
//! let worker = {
//!     let (domain, table) = (domain.clone(), Arc::clone(&table));
//!     thread::spawn(move || {
//!         let mut reader = domain.register();
//!         for _ in 0..1000 {
//!             assert_eq!(table.read(&reader).len(), 4); // a whole version, old or new
//!             reader.quiescent();
//!         }
//!     })
//! };
//! for round in 1..=10 {
//!     let old = table.replace(vec![round; 4]);
//!     let _previous: Vec<u32> = old.synchronize(); // waits for the worker's next quiescent state
//! }
//! worker.join().unwrap();
//! ```
//!
//! Two more primitives serve the crates above this one:
//!
//! - [`Combiner`]: a state owned by one thread at a time, taken without waiting, with an inbox
//!   where the threads that do not own it leave their items for the owner (the adapters guard
//!   each ring with one).
//! - [`IndexStack`]: a lock-free LIFO of `u32` indices with bulk push and pop, linked through
//!   words that the owner of the elements provides (the pool's shared free lists).
//!
//! Every atomic here comes from `regio-loom-shim`, so the loom models (`tests/loom.rs`) check
//! the same code that runs (`RUSTFLAGS="--cfg loom"`).
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod asym;
mod combiner;
mod domain;
mod index_stack;
mod local;
mod rcu;
mod reader;

pub use combiner::{Absorb, Combiner, CombinerGuard};
pub use domain::Domain;
pub use index_stack::{IndexStack, Links, NIL};
pub use rcu::{Rcu, Retired};
pub use reader::{Guard, QsbrReader, ReadSide};
