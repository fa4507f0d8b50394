//! [`Builder`]: the settings of a [`Runtime`], and [`RingMode`].

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use regio_adapters::{Adapter, Config, SqPoll, Target};
use regio_pool::{FileSlots, MessagePool};

use crate::bell::EventFdBell;
use crate::error::BuildError;
use crate::remote::Remote;
use crate::runtime::Runtime;
use crate::shared::{Shared, WorkerConfig};
use crate::worker;

/// The pool a runtime gets when its builder names no class: 1024 buffers of 4 KiB and 32 of
/// 64 KiB.
///
/// - 4 KiB is a page, a file system block and an NBD block: the size most reads, writes and
///   messages take. 1024 of them keep 32 operations in flight on each of 32 connections or
///   files.
/// - 64 KiB serves large transfers (sequential I/O, big messages) in one operation.
/// - In all 6 MiB. Registered buffers are pinned, and without `CAP_IPC_LOCK` pinned memory
///   counts against `RLIMIT_MEMLOCK`, which most distributions set to 8 MiB for a user: the
///   default pool fits under it with room to spare. Ask for more with
///   [`Builder::pool_class`] where the limit allows (`regio probe` reports it).
pub const DEFAULT_POOL: [(u32, u32); 2] = [(4096, 1024), (65536, 32)];

/// How each worker's ring submits: the adapter's threading mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingMode {
    /// No SQPOLL thread (the default): a worker submits with one `io_uring_enter` per loop turn
    /// that has something to submit, and completions arrive by the kernel's task work. Every
    /// io_uring runtime makes SQPOLL opt-in: it costs a core while busy.
    #[default]
    Interrupt,
    /// An SQPOLL kernel thread, shared by all the workers' rings, submits: a busy worker makes
    /// almost no system calls. The thread sleeps after `idle` without work (the next submit then
    /// costs one call to wake it); `cpu` pins it. A kernel that refuses SQPOLL gets
    /// [`Interrupt`](Self::Interrupt) instead (the adapter logs it).
    SqPoll {
        /// How long the kernel thread spins without work before it sleeps.
        idle: Duration,
        /// The CPU the kernel thread runs on.
        cpu: Option<u32>,
    },
    /// Each ring is bound to its worker (`SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has
    /// them): the kernel skips its cross-task machinery, and completions are delivered when the
    /// worker reaps. Pool growth after the build (which registers on every ring) is refused in
    /// this mode.
    SingleIssuer,
}

/// How to build a [`Runtime`]. Every setting has a working default.
///
/// ```
/// use std::time::Duration;
/// use regio_runtime::{Builder, RingMode};
///
/// let rt = Builder::new()
///     .worker_threads(2)
///     .ring_mode(RingMode::Interrupt)
///     .pool_class(4096, 256)
///     .spin_before_park(Duration::from_micros(50))
///     .build()?;
/// assert_eq!(rt.workers(), 2);
/// assert_eq!(rt.pool().capacity(0), 256);
/// # Ok::<(), regio_runtime::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    pin: bool,
    mode: RingMode,
    sq_entries: u32,
    cq_entries: u32,
    classes: Vec<(u32, u32)>,
    pool_cache: usize,
    spin: Duration,
    max_files: u32,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The defaults: one worker per CPU the process may use, unpinned, no SQPOLL, rings of 256
    /// SQ and 1024 CQ entries, the [`DEFAULT_POOL`], 20 µs of spinning before a worker parks.
    pub fn new() -> Self {
        Self {
            workers: None,
            pin: false,
            mode: RingMode::Interrupt,
            sq_entries: 256,
            cq_entries: 1024,
            classes: Vec::new(),
            pool_cache: 32,
            spin: Duration::from_micros(20),
            max_files: 256,
        }
    }

    /// The number of workers, one thread and one ring each (default: the CPUs this process may
    /// use, from [`std::thread::available_parallelism`]).
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Pins worker `i` to the `i`-th CPU of the process's affinity mask (wrapping around), with
    /// `sched_setaffinity` (default off).
    pub fn pin_workers(mut self, on: bool) -> Self {
        self.pin = on;
        self
    }

    /// How the rings submit (default [`RingMode::Interrupt`]).
    pub fn ring_mode(mut self, mode: RingMode) -> Self {
        self.mode = mode;
        self
    }

    /// SQ entries per ring (default 256).
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.sq_entries = n;
        self
    }

    /// CQ entries per ring (default 1024; at least the SQ's). Each worker keeps at most half as
    /// many operations in flight on its own work queue, and as many per file.
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.cq_entries = n;
        self
    }

    /// Adds a pool size class of `count` buffers of `buf_size` bytes. The first call replaces
    /// the [`DEFAULT_POOL`]; classes are numbered in the order of the calls, from 0.
    pub fn pool_class(mut self, buf_size: u32, count: u32) -> Self {
        self.classes.push((buf_size, count));
        self
    }

    /// How many buffers of each class a thread caches (default 32; see
    /// [`PoolBuilder::cache_size`](regio_pool::PoolBuilder::cache_size)).
    pub fn pool_cache(mut self, n: usize) -> Self {
        self.pool_cache = n;
        self
    }

    /// How long an idle worker keeps looking for work before it sleeps in the kernel (default
    /// 20 µs). Longer spins cut wake-up latency and cost CPU; zero parks at once.
    pub fn spin_before_park(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// The size of each ring's fixed-file table (default 256): how many sockets and files can
    /// name a fixed-file slot at once rather than their plain descriptor; the others name their
    /// descriptor. 0: no table, every socket and file names its descriptor. See
    /// [`net`](crate::net#descriptors-and-fixed-file-slots) and
    /// [`Runtime::fixed_files_in_use`].
    pub fn max_files(mut self, n: u32) -> Self {
        self.max_files = n;
        self
    }

    /// Sets up the rings and the pool, and starts the workers.
    ///
    /// # Errors
    ///
    /// [`BuildError`] says what failed and what to change; [`BuildError::is_io_uring_disabled`]
    /// tells a host without io_uring.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
        if !(1..=1024).contains(&workers) {
            return Err(BuildError::Invalid("worker_threads must be in 1..=1024"));
        }
        if self.cq_entries < 2 {
            return Err(BuildError::Invalid("cq_entries must be at least 2"));
        }
        let cpus = if self.pin {
            Some(worker::allowed_cpus().map_err(BuildError::Affinity)?)
        } else {
            None
        };
        let (sqpoll, single_issuer) = match self.mode {
            RingMode::Interrupt => (None, false),
            RingMode::SqPoll { idle, cpu } => (Some(SqPoll { idle, cpu }), false),
            RingMode::SingleIssuer => (None, true),
        };
        let adapter = Adapter::new(
            Config::default()
                .rings(workers)
                .sq_entries(self.sq_entries)
                .cq_entries(self.cq_entries)
                .sqpoll(sqpoll)
                .sqpoll_fallback(true)
                .coop_taskrun(false)
                .single_issuer(single_issuer)
                .max_files(self.max_files),
        )?;
        let classes = if self.classes.is_empty() {
            DEFAULT_POOL.to_vec()
        } else {
            self.classes
        };
        let pool = classes
            .iter()
            .fold(MessagePool::builder(), |b, &(size, count)| {
                b.class(size, count)
            })
            .cache_size(self.pool_cache)
            .build()?;
        pool.attach(adapter.registrar())?;
        let depth = self.cq_entries / 2;
        let mut remotes = Vec::with_capacity(workers);
        let mut controls = Vec::with_capacity(workers);
        for index in 0..workers {
            let cq = adapter
                .completion_queue(index)
                .expect("the adapter has one ring per worker");
            let bell = EventFdBell::duplicate(cq.notify_fd()).map_err(|source| {
                regio_adapters::Error::Sys {
                    what: "dup of a completion queue's eventfd",
                    source,
                }
            })?;
            remotes.push(Arc::new(Remote::new(index, bell)));
            controls.push(adapter.work_queue(index, Target::Fd(-1), depth, depth)?);
        }
        let config = WorkerConfig {
            spin: self.spin,
            reap_max: self.cq_entries as usize,
            file_queue_depth: depth,
            single_issuer,
        };
        // Single-issuer rings take a registration only from their owner: no fixed files (see
        // the `files` module).
        let file_slots = FileSlots::new(if single_issuer { 0 } else { self.max_files })?;
        let shared = Arc::new(Shared::new(
            remotes.into(),
            adapter,
            pool,
            file_slots,
            config,
        ));
        let cpus = cpus
            .filter(|cpus| !cpus.is_empty())
            .map(|cpus| (0..workers).map(|i| cpus[i % cpus.len()]).collect());
        Runtime::start(shared, controls, cpus)
    }
}
