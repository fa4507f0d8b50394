//! A process without CAP_IPC_LOCK and with a low RLIMIT_MEMLOCK gets the clear memlock error.

mod common;

use std::process::Command;

use common::TestBuf;
use regio_adapters::{Adapter, Error};
use regio_testkit::Mapping;

const CHILD_ENV: &str = "REGIO_MEMLOCK_CHILD";
const ROLLBACK_CHILD_ENV: &str = "REGIO_MEMLOCK_ROLLBACK_CHILD";

/// The children's pinned pages count against one per-user total (their user is root's), so they
/// run one at a time.
static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());
const LIMIT: u64 = 64 * 1024;
fn child() {
    regio_testkit::limit_memlock(LIMIT).expect("dropping CAP_IPC_LOCK and lowering the limit");
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
    let out = run_child(
        "memlock_too_low_names_rlimit_memlock_and_its_value",
        CHILD_ENV,
    );
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

/// Runs test `name` of this binary again in a child process with `env` set.
fn run_child(name: &str, env: &str) -> std::process::Output {
    let _one_at_a_time = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap()
}

/// In the child: a registration that ring 0 takes and ring 1 refuses is taken back from ring 0,
/// so its pages no longer count against the limit.
fn rollback_child() {
    // The rings take some of the limit too (about 50 KiB here): one region of `len` fits beside
    // them, two do not.
    let (limit, len) = (1 << 20, 640 << 10);
    regio_testkit::limit_memlock(limit).expect("dropping CAP_IPC_LOCK and lowering the limit");
    // io_uring counts pinned pages per user: a user of its own keeps other processes' pins out
    // of the count. Giving up root drops every capability, CAP_IPC_LOCK included.
    let uid = 40_000 + std::process::id() % 20_000;
    // SAFETY: plain credential changes of this test process.
    unsafe {
        assert_eq!(libc::setgid(uid), 0, "setgid");
        assert_eq!(libc::setuid(uid), 0, "setuid");
    }
    let adapter = Adapter::<TestBuf>::new(common::config(2, false)).expect("adapter");
    // Fresh mappings, never unmapped (the process ends).
    let (first, second) = (Mapping::new(len).leak(), Mapping::new(len).leak());
    let ring1 = adapter.ring(1).unwrap().ring_fd();
    // Ring 1's fd number is made to name /dev/null for the first registration, so that ring 1
    // refuses it after ring 0 took it; a duplicate keeps the ring itself open meanwhile.
    // SAFETY: plain fd calls on numbers this test owns or on ring 1's, which is restored below
    // before anything else uses it.
    let saved = unsafe {
        let saved = libc::dup(ring1);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        assert!(saved >= 0 && null >= 0);
        assert_eq!(libc::dup2(null, ring1), ring1);
        libc::close(null);
        saved
    };
    // SAFETY: the mappings are never unmapped.
    let refused = unsafe { adapter.register_region(first, len) };
    // SAFETY: `saved` names ring 1's io_uring; this puts it back under its own number.
    unsafe {
        assert_eq!(libc::dup2(saved, ring1), ring1);
        libc::close(saved);
    }
    assert!(refused.is_err(), "ring 1 refused the registration");
    // SAFETY: as above.
    let taken = unsafe { adapter.register_region(second, len) };
    println!("CHILD-RESULT: {taken:?}");
}

#[test]
fn a_registration_refused_by_a_later_ring_leaves_no_pages_pinned() {
    if std::env::var_os(ROLLBACK_CHILD_ENV).is_some() {
        rollback_child();
        return;
    }
    if common::adapter_or_skip::<TestBuf>(common::config(1, false)).is_none() {
        return;
    }
    let out = run_child(
        "a_registration_refused_by_a_later_ring_leaves_no_pages_pinned",
        ROLLBACK_CHILD_ENV,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    assert!(
        line.starts_with("Ok("),
        "the first registration's pages stayed pinned: {line}"
    );
}
