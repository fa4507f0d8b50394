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

/// Runs `future` to completion on the calling thread with no runtime: for join handles, which
/// any thread may await.
pub fn wait<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
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
