//! Giving up the privilege to pin memory beyond `RLIMIT_MEMLOCK`.

use std::io;

const CAP_IPC_LOCK: u32 = 14;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops `CAP_IPC_LOCK` from the calling thread's effective and permitted sets (capabilities
/// are per thread on Linux), so that `RLIMIT_MEMLOCK` applies to it even under root. It cannot
/// be taken back: run this on a thread or in a process of its own.
pub fn drop_ipc_lock() -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two version-3 `CapData` through valid pointers.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset reads the header and two `CapData` through valid pointers; it changes only
    // this thread's credentials.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops `CAP_IPC_LOCK` ([`drop_ipc_lock`]) and sets this process's `RLIMIT_MEMLOCK` (soft and
/// hard) to `limit` bytes: for a child process that tests the memlock errors.
pub fn limit_memlock(limit: u64) -> io::Result<()> {
    drop_ipc_lock()?;
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads one `rlimit` through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
