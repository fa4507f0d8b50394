//! Test helpers: an anonymous registered region and a buffer type over it.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regio_adapters::{
    Adapter, BufKey, BufSlice, Completion, CompletionQueue, Config, DescriptorError, Error, IoBuf,
    RegionId,
};
use regio_pool::{Message, MessagePool};

/// Anonymous memory registered as one region of an adapter.
pub struct Region {
    pub id: RegionId,
    pub generation: u32,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; tests synchronise their own accesses.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    pub fn new(adapter: &Adapter<TestBuf>, len: usize) -> Arc<Self> {
        let base = anonymous(len);
        // SAFETY: the mapping lives until `Region` drops, which the Arc in every TestBuf delays
        // until no buffer is left.
        let registration = unsafe { adapter.register_region(base, len) }.expect("register region");
        Arc::new(Self {
            id: registration.index,
            generation: registration.generation,
            base,
            len,
        })
    }

    pub fn buf(self: &Arc<Self>, offset: u32, len: u32) -> TestBuf {
        TestBuf {
            key: BufKey {
                region: self.id,
                offset,
                len,
            },
            generation: self.generation,
            region: Arc::clone(self),
        }
    }

    /// A copy of `len` bytes at `offset`.
    pub fn read(&self, offset: u32, len: u32) -> Vec<u8> {
        assert!(offset as usize + len as usize <= self.len);
        let mut v = vec![0u8; len as usize];
        // SAFETY: in bounds of the mapping; tests only read a slice no operation owns.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(offset as usize), v.as_mut_ptr(), v.len())
        };
        v
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: u32, data: &[u8]) {
        assert!(offset as usize + data.len() <= self.len);
        // SAFETY: in bounds of the mapping; tests only write a slice no operation owns.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(offset as usize), data.len())
        };
    }
}

/// A fresh anonymous private mapping of `len` bytes (never in a huge page, unlike heap memory,
/// whose pinning would count whole). The caller unmaps it, or lets the process end.
pub fn anonymous(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping, checked below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    base.cast()
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A slice of a test region. Its key may be forged with `with_key` to test validation.
pub struct TestBuf {
    pub key: BufKey,
    pub generation: u32,
    pub region: Arc<Region>,
}

impl TestBuf {
    pub fn forged(mut self, key: BufKey, generation: u32) -> Self {
        self.key = key;
        self.generation = generation;
        self
    }

    /// A copy of the slice's bytes.
    pub fn contents(&self) -> Vec<u8> {
        self.region.read(self.key.offset, self.key.len)
    }

    /// Writes `data` at the start of the slice.
    pub fn write(&self, data: &[u8]) {
        assert!(data.len() <= self.key.len as usize);
        self.region.write(self.key.offset, data);
    }
}

// SAFETY: the buffer keeps its region mapped; a forged key is only ever checked by the
// adapter, which rejects it before any SQE is built.
unsafe impl IoBuf for TestBuf {
    fn slice(&self) -> Result<BufSlice, DescriptorError> {
        Ok(BufSlice::Registered {
            key: self.key,
            generation: self.generation,
        })
    }
}

/// A config for tests: SQPOLL on or off, small rings.
pub fn config(rings: usize, sqpoll: bool) -> Config {
    let mut c = Config {
        rings,
        sq_entries: 64,
        cq_entries: 256,
        ..Config::default()
    };
    if !sqpoll {
        c.sqpoll = None;
    }
    c
}

/// Prints a skip, or fails when REGIO_REQUIRE_ALL=1.
pub fn skip(reason: &str) {
    if std::env::var("REGIO_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test skipped: {reason}");
    }
    println!("SKIP: {reason}");
}

/// An adapter built from `cfg`, or `None` after [`skip`] when io_uring is disabled on this host
/// (by sysctl or seccomp). Any other setup error fails the test.
pub fn adapter_or_skip<B: IoBuf>(cfg: Config) -> Option<Adapter<B>> {
    match Adapter::new(cfg) {
        Ok(adapter) => Some(adapter),
        Err(e @ Error::IoUringDisabled { .. }) => {
            skip(&e.to_string());
            None
        }
        Err(e) => panic!("adapter setup failed: {e}"),
    }
}

/// Waits (up to 10 s) for one completion on `cq`.
pub fn wait_one<B: IoBuf>(cq: &CompletionQueue<B>) -> Completion<B> {
    let mut out = Vec::new();
    let n = cq
        .wait(&mut out, 1, Some(Duration::from_secs(10)))
        .expect("wait");
    assert_eq!(n, 1, "timed out waiting for a completion");
    out.pop().unwrap()
}

/// Waits (up to 10 s in all) for exactly `n` completions on `cq`.
pub fn collect<B: IoBuf>(cq: &CompletionQueue<B>, n: usize) -> Vec<Completion<B>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        cq.wait(&mut out, 64, Some(Duration::from_millis(100)))
            .unwrap();
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

/// A connected TCP pair on the loopback interface: (client, server).
pub fn loopback() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// A pool of 16 messages of `len` bytes, without per-thread caches, attached to `adapter`.
pub fn message_pool(adapter: &Adapter<Message>, len: u32) -> MessagePool {
    let pool = MessagePool::builder()
        .class(len, 16)
        .cache_size(0)
        .build()
        .unwrap();
    pool.attach(adapter.registrar()).unwrap();
    pool
}

/// A temporary file with `len` bytes of a known pattern.
pub fn temp_file(len: usize) -> (std::fs::File, std::path::PathBuf) {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!(
        "regio-adapters-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    (f, path)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only uniqueness matters, which the read-modify-write gives at any ordering.
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs `f` on a thread of its own and returns its result, or fails the test if it takes more
/// than `limit`: a hang becomes a failure rather than a stuck test run. (The hung thread is left
/// behind; the test process ends with it.)
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
            panic!("{what} did not return within {limit:?}: the thread hangs")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// A small config for soundness tests: SQPOLL off, small rings.
pub fn small_config() -> Config {
    Config {
        sq_entries: 32,
        cq_entries: 64,
        sqpoll: None,
        ..Config::default()
    }
}

/// A pool of 4 messages of 4 KiB, without thread caches.
pub fn small_pool() -> MessagePool {
    MessagePool::builder()
        .class(4096, 4)
        .cache_size(0)
        .build()
        .unwrap()
}

/// A file of 4 KiB of `byte`.
pub fn file_of(byte: u8) -> (std::fs::File, std::path::PathBuf) {
    let (file, path) = temp_file(0);
    std::fs::write(&path, vec![byte; 4096]).unwrap();
    (file, path)
}

/// A temporary file of 4 KiB, removed when dropped.
pub struct Scratch {
    pub file: std::fs::File,
    pub path: std::path::PathBuf,
}

impl Scratch {
    /// 4 KiB of `byte`.
    pub fn of(byte: u8) -> Self {
        let (file, path) = file_of(byte);
        Self { file, path }
    }

    /// Whether every byte of the file is `byte`.
    pub fn holds_only(&self, byte: u8) -> bool {
        only(&std::fs::read(&self.path).unwrap(), byte)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A work queue of depth 8 on `adapter`'s first CQ, on a new [`Scratch`] file of `byte`.
pub fn file_queue(
    adapter: &Adapter<Message>,
    byte: u8,
) -> (regio_adapters::WorkQueue<Message>, Scratch) {
    use std::os::fd::AsRawFd;
    let scratch = Scratch::of(byte);
    let wq = adapter
        .work_queue(
            0,
            regio_adapters::Target::Fd(scratch.file.as_raw_fd()),
            8,
            8,
        )
        .unwrap();
    (wq, scratch)
}

/// Whether every byte of `bytes` is `byte`.
pub fn only(bytes: &[u8], byte: u8) -> bool {
    bytes.iter().all(|&b| b == byte)
}

/// Whether `fd` is open in this process.
pub fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD reads only the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}
