//! A process without CAP_IPC_LOCK and with a low RLIMIT_MEMLOCK gets the clear memlock error.

mod common;

use std::process::Command;

use common::TestBuf;
use regio_adapters::{Adapter, Error};

const CHILD_ENV: &str = "REGIO_MEMLOCK_CHILD";
const LIMIT: u64 = 64 * 1024;
const CAP_IPC_LOCK: u32 = 14;

/// Drops CAP_IPC_LOCK from this thread's effective and permitted sets.
fn drop_ipc_lock() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for the two v3 data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset with the same layout.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn child() {
    drop_ipc_lock().expect("capset");
    let lim = libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: LIMIT,
    };
    // SAFETY: a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) }, 0);
    let adapter = match Adapter::<TestBuf>::new(common::config(2, false)) {
        Ok(a) => a,
        Err(e) => panic!("adapter setup failed in the child: {e}"),
    };
    let len = 4 << 20;
    let mut mem = vec![0u8; len];
    // SAFETY: `mem` outlives the adapter's use of it (the call is expected to fail; if it does
    // not, the adapter is dropped before `mem`).
    let err = unsafe { adapter.register_region(mem.as_mut_ptr(), len) }
        .expect_err("registration must exceed the limit");
    assert!(
        matches!(err, Error::MemlockTooLow { limit: LIMIT, .. }),
        "{err:?}"
    );
    println!("CHILD-ERROR: {err}");
    drop(adapter);
    drop(mem);
}

#[test]
fn memlock_too_low_names_rlimit_memlock_and_its_value() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    // The child inherits this process's seccomp filter and sees the same sysctl, so whether it
    // can set up io_uring is decided here, where a skip is reported.
    if common::adapter_or_skip::<TestBuf>(common::config(1, false)).is_none() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memlock_too_low_names_rlimit_memlock_and_its_value",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-ERROR: ").map(|(_, e)| e))
        .unwrap_or_else(|| panic!("no error line in:\n{stdout}"));
    assert!(line.contains("RLIMIT_MEMLOCK is 65536"), "{line}");
    println!("{line}");
}
