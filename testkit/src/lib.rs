//! Helpers shared by the tests of regio's crates (not published).
//!
//! - [`skip`]: a test that cannot run here says so, or fails under `REGIO_REQUIRE_ALL=1`;
//!   [`ok_or_skip`] does so for a setup error that means the host lacks a feature.
//! - [`within`]: a call that hangs fails its test instead of stalling the run.
//! - [`block_on`]: runs a future on the calling thread (loom's threads under `--cfg loom`).
//! - [`drop_ipc_lock`] and [`limit_memlock`]: make the calling thread subject to
//!   `RLIMIT_MEMLOCK`, as an unprivileged process is.
//! - [`loopback`]: a connected TCP pair on 127.0.0.1.
//! - [`TempFile`]: a file in the temporary directory, removed when dropped.
//! - [`Mapping`]: anonymous memory to register as a region.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let (mut client, mut server) = regio_testkit::loopback();
//! client.write_all(b"ping")?;
//! let mut got = [0; 4];
//! server.read_exact(&mut got)?;
//! assert_eq!(&got, b"ping");
//!
//! let file = regio_testkit::TempFile::pattern("doc", 300);
//! assert_eq!(std::fs::read(file.path())?[251], 0); // the pattern repeats every 251 bytes
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod block_on;
mod caps;
mod mapping;
mod net;
mod skip;
mod temp;
mod within;

pub use block_on::block_on;
pub use caps::{drop_ipc_lock, limit_memlock};
pub use mapping::Mapping;
pub use net::loopback;
pub use skip::{ok_or_skip, require_all, skip};
pub use temp::TempFile;
pub use within::within;
