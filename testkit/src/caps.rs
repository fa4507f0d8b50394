//! Giving up the privilege to pin memory beyond `RLIMIT_MEMLOCK`.

use std::io;

use rustix::process::{setrlimit, Resource, Rlimit};
use rustix::thread::{capabilities, set_capabilities, CapabilitySet};

/// Drops `CAP_IPC_LOCK` from the calling thread's effective and permitted sets (capabilities
/// are per thread on Linux), so that `RLIMIT_MEMLOCK` applies to it even under root. It cannot
/// be taken back: run this on a thread or in a process of its own.
pub fn drop_ipc_lock() -> io::Result<()> {
    let mut sets = capabilities(None)?;
    sets.effective.remove(CapabilitySet::IPC_LOCK);
    sets.permitted.remove(CapabilitySet::IPC_LOCK);
    set_capabilities(None, sets)?;
    Ok(())
}

/// Drops `CAP_IPC_LOCK` ([`drop_ipc_lock`]) and sets this process's `RLIMIT_MEMLOCK` (soft and
/// hard) to `limit` bytes: for a child process that tests the memlock errors.
pub fn limit_memlock(limit: u64) -> io::Result<()> {
    drop_ipc_lock()?;
    setrlimit(
        Resource::Memlock,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )?;
    Ok(())
}
