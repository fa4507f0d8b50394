//! Helpers shared by the root package's integration tests (and the `nbd_peers` benchmark, which
//! includes this module by path): skipping when a tool is missing, temporary directories,
//! external commands bounded in time, NBD servers started as child processes, and a raw NBD client
//! that can send what real clients never would.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod data;
pub mod raw;
pub mod server;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prints a skip, or fails when REGIO_REQUIRE_ALL=1.
pub fn skip(reason: &str) {
    if std::env::var("REGIO_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test skipped: {reason}");
    }
    println!("SKIP: {reason}");
}

/// A directory removed with everything in it when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(what: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), what)
    }

    /// A new empty directory under `parent` (for example a tmpfs).
    pub fn new_in(parent: &Path, what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Relaxed: the counter only has to hand out distinct numbers within this process.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("regio-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Starts the server `spec` describes, or skips the test (`None`) when its implementation is not
/// installed or cannot serve that export. A server that fails to start fails the test.
pub fn start(spec: server::Spec) -> Option<server::Server> {
    match server::Server::start(spec) {
        Ok(server) => Some(server),
        Err(e @ (server::StartError::Missing(_) | server::StartError::Unsupported(_))) => {
            skip(&e.to_string());
            None
        }
        Err(server::StartError::Failed(why)) => panic!("the NBD server did not start: {why}"),
    }
}
