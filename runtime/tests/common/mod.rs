//! Helpers shared by the runtime's integration tests (those of every crate are in
//! regio-testkit).
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::time::{Duration, Instant};

use regio_runtime::{BuildError, Builder, Runtime};

/// A test builder: `workers` workers and a small pool (64 buffers of 4 KiB, 8 of 64 KiB).
pub fn builder(workers: usize) -> Builder {
    Builder::new()
        .worker_threads(workers)
        .pool_class(4096, 64)
        .pool_class(65536, 8)
}

/// The runtime `builder` makes, or `None` after a [`skip`](regio_testkit::skip) when io_uring is disabled on this
/// host. Any other error fails the test.
pub fn build(builder: Builder) -> Option<Runtime> {
    regio_testkit::ok_or_skip(builder.build(), BuildError::is_io_uring_disabled)
}

/// `builder` with two interrupt-driven adapters.
pub fn two_interrupt_adapters(builder: Builder) -> Builder {
    builder
        .adapter(regio_runtime::AdapterSpec::new().interrupt())
        .adapter(regio_runtime::AdapterSpec::new().interrupt())
}

/// A runtime of `workers` workers with the test pool, or `None` (skipped).
pub fn runtime(workers: usize) -> Option<Runtime> {
    build(builder(workers))
}

/// Runs `test` on a fresh runtime of `workers` workers within `limit`, then waits until every
/// buffer went back to the pool and shuts the runtime down. Skips when io_uring is disabled.
pub fn with_runtime(workers: usize, limit: Duration, test: impl FnOnce(&Runtime) + Send + 'static) {
    regio_testkit::within(limit, "the test", move || {
        let Some(rt) = runtime(workers) else { return };
        test(&rt);
        eventually_pool_full(rt.pool(), "every buffer is back in the pool");
        rt.shutdown(Duration::from_secs(5));
    });
}

/// Runs `test` within `limit` on a fresh runtime of `workers` workers that it owns (to shut it
/// down itself). Skips when io_uring is disabled.
pub fn with_owned_runtime(
    workers: usize,
    limit: Duration,
    test: impl FnOnce(Runtime) + Send + 'static,
) {
    regio_testkit::within(limit, "the test", move || {
        let Some(rt) = runtime(workers) else { return };
        test(rt);
    });
}

/// One test at a time (in each test binary that takes it): descriptor, thread and buffer
/// counts are process-wide.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A message of `pool` holding `bytes` (its descriptor cut to their length).
pub fn message(pool: &regio_pool::MessagePool, bytes: &[u8]) -> regio_pool::Message {
    let mut msg = pool.try_acquire().expect("a free buffer");
    msg.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    msg.descriptor_mut().truncate(bytes.len());
    msg
}

/// The entries of a /proc/self directory.
fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    count("/proc/self/fd")
}

/// Open file descriptors of this process once a task has run on a worker of `rt` (which makes
/// the worker's own descriptors, so that they do not count as a test's leak).
pub fn open_fds_after_warm_up(rt: &Runtime) -> usize {
    rt.block_on(rt.spawn(async { regio_runtime::nop().await }))
        .unwrap()
        .unwrap();
    open_fds()
}

/// Threads of this process that are regio workers (named `regio-worker-<i>`).
pub fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("regio-worker-"))
        .count()
}

/// Waits (up to 10 s) until `cond` holds.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (up to 10 s) until every buffer of every class is back in `pool`; `what` names the
/// wait in the timeout's message.
pub fn eventually_pool_full(pool: &regio_pool::MessagePool, what: &str) {
    eventually(what, || {
        (0..pool.classes()).all(|class| pool.available(class) == pool.capacity(class))
    });
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

/// After the runtime's work: every buffer is back in `rt`'s pool, and (eventually) the
/// process has `fds` descriptors open again.
pub fn assert_clean(rt: &Runtime, fds: usize) {
    assert_pool_full(rt.pool());
    eventually("the descriptors are closed", || open_fds() == fds);
}

/// A one-shot gate that any thread opens and any task awaits.
#[derive(Default)]
pub struct Gate {
    open: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Gate {
    /// Opens the gate, waking its waiter.
    pub fn open(&self) {
        // SeqCst: a test helper; the waker mutex orders the rest.
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// Waits until the gate is open.
    pub async fn passed(&self) {
        std::future::poll_fn(|cx| {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            // SeqCst: as in `open`; read after the waker is stored, so an open in between
            // finds the waker.
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// A pipe: (read end, write end).
pub fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and belong to nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// Sets an `int` socket option of `fd` (level `SOL_SOCKET`), failing the test on an error.
pub fn set_socket_int(fd: std::os::fd::RawFd, option: libc::c_int, value: libc::c_int) {
    // SAFETY: the option value is a live `c_int` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {option}: {}",
        std::io::Error::last_os_error()
    );
}

/// Makes `stream`'s close a reset (`SO_LINGER` with a zero timeout): its peer's operations
/// then fail with `ECONNRESET`.
pub fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Runs the ignored test `name` of this test binary in a child process (for attacks whose
/// failure is fatal: a signal, a stack overflow) and asserts that the child lived and ran it
/// (passed, or skipped).
pub fn run_child_test(name: &str) {
    run_child(name, false);
}

/// [`run_child_test`] for a test that leaks on purpose (memory the kernel may still read,
/// which the runtime never frees): the child runs with AddressSanitizer's leak check off,
/// which would otherwise fail the whole test binary.
pub fn run_child_test_leaking(name: &str) {
    run_child(name, true);
}

fn run_child(name: &str, leaking: bool) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    if leaking {
        // The last setting of an option wins.
        let options = match std::env::var("ASAN_OPTIONS") {
            Ok(options) if !options.is_empty() => format!("{options}:detect_leaks=0"),
            _ => "detect_leaks=0".to_owned(),
        };
        child.env("ASAN_OPTIONS", options);
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child died ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed") || stdout.contains("SKIP"),
        "the child ran no test: {stdout}"
    );
}

/// The completions that the workers reaped from adapter `adapter`'s rings.
pub fn completions_on(rt: &Runtime, adapter: usize) -> u64 {
    rt.ring_stats()
        .iter()
        .filter(|r| r.adapter == adapter)
        .map(|r| r.completions)
        .sum()
}
