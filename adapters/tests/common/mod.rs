//! The adapters' test helpers: a registered region and a buffer type over it, configs, pools,
//! waits. The helpers every crate's tests share are in regio-testkit.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::sync::Arc;
use std::time::{Duration, Instant};

use regio_adapters::{
    Adapter, BufKey, BufSlice, Completion, Config, CqSet, DescriptorError, Error, IoBuf, Op,
    RegionId, Ring, Target, WorkQueue,
};
use regio_pool::{Message, MessagePool};
use regio_testkit::{Mapping, TempFile};

/// Anonymous memory registered as one region of an adapter.
pub struct Region {
    pub id: RegionId,
    pub generation: u32,
    memory: Mapping,
}

impl Region {
    pub fn new(adapter: &Adapter<TestBuf>, len: usize) -> Arc<Self> {
        let memory = Mapping::new(len);
        // SAFETY: the mapping lives until `Region` drops, which the Arc in every TestBuf delays
        // until no buffer is left.
        let registration =
            unsafe { adapter.register_region(memory.as_ptr(), len) }.expect("register region");
        Arc::new(Self {
            id: registration.index,
            generation: registration.generation,
            memory,
        })
    }

    /// A buffer forged to bytes 4000..5000, past the end of a 4 KiB region: one to be rejected.
    pub fn forged_past_the_end(self: &Arc<Self>) -> TestBuf {
        let key = BufKey {
            region: self.id,
            offset: 4000,
            len: 1000,
        };
        self.buf(0, 64).forged(key, self.generation)
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

    /// A copy of `len` bytes at `offset` (of a slice no operation owns).
    pub fn read(&self, offset: u32, len: u32) -> Vec<u8> {
        self.memory.read(offset as usize, len as usize)
    }

    /// Copies `data` to `offset` (into a slice no operation owns).
    pub fn write(&self, offset: u32, data: &[u8]) {
        self.memory.write(offset as usize, data);
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
    let mut c = Config::default()
        .rings(rings)
        .sq_entries(64)
        .cq_entries(256);
    if !sqpoll {
        c.sqpoll = None;
    }
    c
}

/// An adapter built from `cfg`, or `None` after a [`skip`](regio_testkit::skip) when io_uring is disabled on this host
/// (by sysctl or seccomp). Any other setup error fails the test.
pub fn adapter_or_skip<B: IoBuf>(cfg: Config) -> Option<Adapter<B>> {
    match Adapter::new(cfg) {
        Ok(adapter) => Some(adapter),
        Err(e @ Error::IoUringDisabled { .. }) => {
            regio_testkit::skip(&e.to_string());
            None
        }
        Err(e) => panic!("adapter setup failed: {e}"),
    }
}

/// An adapter with a 4 KiB region, a fileless work queue of depth 8 on CQ 0, that CQ, and a set
/// of every CQ: what the reap and wait tests post to and reap from.
pub struct ReapRig {
    pub region: Arc<Region>,
    pub wq: WorkQueue<TestBuf>,
    pub cq: Ring<TestBuf>,
    pub set: CqSet<TestBuf>,
    /// Declared last, so that it drops after everything made from it.
    pub adapter: Adapter<TestBuf>,
}

impl ReapRig {
    /// Builds the rig on an adapter from `cfg`, or `None` as for [`adapter_or_skip`].
    pub fn new(cfg: Config) -> Option<Self> {
        let adapter = adapter_or_skip::<TestBuf>(cfg)?;
        Some(Self {
            region: Region::new(&adapter, 4096),
            wq: adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap(),
            cq: adapter.ring(0).unwrap(),
            set: CqSet::new(adapter.rings()).unwrap(),
            adapter,
        })
    }
}

/// An adapter built from `cfg` with 8-entry SQs and CQs, which a work queue of more credit
/// overflows at once; `None` as for [`adapter_or_skip`].
pub fn tiny_cq_adapter<B: IoBuf>(cfg: Config) -> Option<Adapter<B>> {
    adapter_or_skip(cfg.sq_entries(8).cq_entries(8))
}

/// Waits (up to 10 s) for one completion on `cq`.
pub fn wait_one<B: IoBuf>(cq: &Ring<B>) -> Completion<B> {
    let mut out = Vec::new();
    let n = cq
        .wait(&mut out, 1, Some(Duration::from_secs(10)))
        .expect("wait");
    assert_eq!(n, 1, "timed out waiting for a completion");
    out.pop().unwrap()
}

/// Waits (up to 10 s in all) for exactly `n` completions on `cq`.
pub fn collect<B: IoBuf>(cq: &Ring<B>, n: usize) -> Vec<Completion<B>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        cq.wait(&mut out, 64, Some(Duration::from_millis(100)))
            .unwrap();
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
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

/// A small config for soundness tests: SQPOLL off, small rings.
pub fn small_config() -> Config {
    Config::default().sq_entries(32).cq_entries(64).sqpoll(None)
}

/// A pool of 4 messages of 4 KiB, without thread caches.
pub fn small_pool() -> MessagePool {
    MessagePool::builder()
        .class(4096, 4)
        .cache_size(0)
        .build()
        .unwrap()
}

/// A work queue of depth 8 on `adapter`'s first CQ, on a new temporary file of 4 KiB of
/// `byte`.
pub fn file_queue(
    adapter: &Adapter<Message>,
    byte: u8,
) -> (regio_adapters::WorkQueue<Message>, TempFile) {
    use std::os::fd::AsRawFd;
    let scratch = scratch(byte);
    let wq = adapter
        .work_queue(
            0,
            regio_adapters::Target::Fd(scratch.file().as_raw_fd()),
            8,
            8,
        )
        .unwrap();
    (wq, scratch)
}

/// Posts a `delay` timeout on a new queue of CQ `cq`, then `op` on `wq`, drained behind it.
pub fn post_drained_behind_a_timeout(
    adapter: &Adapter<Message>,
    cq: usize,
    delay: Duration,
    wq: &WorkQueue<Message>,
    op: Op<Message>,
) -> WorkQueue<Message> {
    let timer = adapter.work_queue(cq, Target::Fd(-1), 8, 8).unwrap();
    timer.post(Op::timeout(delay, 1)).unwrap();
    wq.post(op.drain()).unwrap();
    timer
}

/// A temporary file of 4 KiB of `byte`, removed when dropped.
pub fn scratch(byte: u8) -> TempFile {
    TempFile::filled("adapters", byte, 4096)
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
