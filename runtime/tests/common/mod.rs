//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::time::{Duration, Instant};

use regio_runtime::{Builder, Runtime};

/// Prints a skip, or fails when REGIO_REQUIRE_ALL=1.
pub fn skip(reason: &str) {
    if std::env::var("REGIO_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test skipped: {reason}");
    }
    println!("SKIP: {reason}");
}

/// A test builder: `workers` workers and a small pool (64 buffers of 4 KiB, 8 of 64 KiB).
pub fn builder(workers: usize) -> Builder {
    Builder::new()
        .worker_threads(workers)
        .pool_class(4096, 64)
        .pool_class(65536, 8)
}

/// The runtime `builder` makes, or `None` after [`skip`] when io_uring is disabled on this
/// host. Any other error fails the test.
pub fn build(builder: Builder) -> Option<Runtime> {
    match builder.build() {
        Ok(rt) => Some(rt),
        Err(e) if e.is_io_uring_disabled() => {
            skip(&e.to_string());
            None
        }
        Err(e) => panic!("runtime setup failed: {e}"),
    }
}

/// A runtime of `workers` workers with the test pool, or `None` (skipped).
pub fn runtime(workers: usize) -> Option<Runtime> {
    build(builder(workers))
}

/// Runs `f` on a thread of its own and returns its result, or fails the test if it takes more
/// than `limit`: a hang becomes a failure rather than a stuck test run.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}: it hangs")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// The entries of a /proc/self directory.
fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    count("/proc/self/fd")
}

/// Threads of this process.
pub fn threads() -> usize {
    count("/proc/self/task")
}

/// Waits (up to 10 s) until `cond` holds.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that every buffer of every class is back in `pool`.
pub fn assert_pool_full(pool: &regio_pool::MessagePool) {
    for class in 0..pool.classes() {
        assert_eq!(
            pool.available(class),
            pool.capacity(class),
            "class {class}: buffers missing from the pool"
        );
    }
}
