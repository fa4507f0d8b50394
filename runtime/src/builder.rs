//! [`Builder`]: the settings of a [`Runtime`]: its workers, its adapters and its pool.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use regio_adapters::{Adapter, Target, WorkQueue};
use regio_pool::{FileSlots, Message, MessagePool};

use crate::bell::EventFdBell;
use crate::error::BuildError;
use crate::remote::Remote;
use crate::runtime::Runtime;
use crate::shared::{RtAdapter, Shared, WorkerConfig};
use crate::spec::{AdapterSpec, Defaults, Resolved, RingMode, MAX_ADAPTERS};
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
///
/// # Adapters
///
/// An adapter is a set of rings, one per worker, that share one SQPOLL thread, tables of
/// registered buffers and files, and a mode (RIO's adapter: one per NIC, typically). By
/// default a runtime opens one, with the builder's [`ring_mode`](Self::ring_mode) and ring
/// sizes. [`adapter`](Self::adapter), called once per adapter, opens several, each with its
/// own [`AdapterSpec`]:
///
/// ```
/// use std::time::Duration;
/// use regio_runtime::{AdapterSpec, Builder, RingMode};
///
/// let rt = Builder::new()
///     .worker_threads(2)
///     .adapter(AdapterSpec::new().sqpoll(Duration::from_millis(10)))
///     .adapter(AdapterSpec::new().interrupt().cq_entries(256))
///     .build()?;
/// assert_eq!(rt.adapters(), 2);
/// assert_eq!(rt.adapter_modes()[1], RingMode::Interrupt);
/// // Adapter 0 unless a scope says otherwise:
/// rt.block_on(rt.spawn(async { regio_runtime::nop().await })).unwrap()?;
/// // Adapter 1 for everything the task does (and the tasks it spawns):
/// let second = rt.adapter(1)?;
/// rt.block_on(rt.spawn(second.scope(async { regio_runtime::nop().await }))).unwrap()?;
/// assert!(rt.ring_stats().iter().any(|r| r.adapter == 1 && r.completions > 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// How workers map to adapters: **every worker owns one ring of every adapter**, ring `i` of
/// each belonging to worker `i`. A worker's loop submits to and reaps all of its rings each
/// turn, and when idle it sleeps on all their eventfds at once, so a completion on any of them
/// wakes it. Tasks stay on their worker, and choose the adapter of their I/O with
/// [`AdapterHandle::scope`](crate::AdapterHandle::scope) (its type's docs say what the choice
/// covers). Assigning workers to adapters instead would make I/O on an adapter hop to another
/// worker, and leave some workers with no ring of it.
///
/// The message pool is registered with every adapter, so a message works with all of them.
/// Each adapter pins the pool's memory on its own rings: without `CAP_IPC_LOCK` every adapter
/// counts the pool against `RLIMIT_MEMLOCK` once.
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    pin: bool,
    defaults: Defaults,
    adapters: Option<Vec<AdapterSpec>>,
    classes: Vec<(u32, u32)>,
    pool_cache: usize,
    spin: Duration,
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
            defaults: Defaults {
                mode: RingMode::Interrupt,
                sq_entries: 256,
                cq_entries: 1024,
                max_files: 256,
            },
            adapters: None,
            classes: Vec::new(),
            pool_cache: 32,
            spin: Duration::from_micros(20),
        }
    }

    /// The number of workers, one thread and one ring of each adapter each (default: the CPUs
    /// this process may use, from [`std::thread::available_parallelism`]).
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

    /// Opens an adapter with the settings of `spec` (what it leaves unset comes from this
    /// builder). Each call adds one, numbered from 0 in the order of the calls; without any
    /// call the runtime opens one adapter with the builder's settings. At most
    /// [`MAX_ADAPTERS`].
    pub fn adapter(mut self, spec: AdapterSpec) -> Self {
        self.adapters.get_or_insert_with(Vec::new).push(spec);
        self
    }

    /// Opens exactly the adapters of `specs`, in order, replacing those added so far. An empty
    /// list fails the build with [`BuildError::NoAdapters`].
    pub fn adapters(mut self, specs: impl IntoIterator<Item = AdapterSpec>) -> Self {
        self.adapters = Some(specs.into_iter().collect());
        self
    }

    /// How the rings submit (default [`RingMode::Interrupt`]): the mode of the adapters whose
    /// [`AdapterSpec`] names none.
    pub fn ring_mode(mut self, mode: RingMode) -> Self {
        self.defaults.mode = mode;
        self
    }

    /// SQ entries per ring (default 256), for the adapters whose spec names none.
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.defaults.sq_entries = n;
        self
    }

    /// CQ entries per ring (default 1024; at least the SQ's), for the adapters whose spec
    /// names none. Each worker keeps at most half as many operations in flight on its own work
    /// queue of an adapter, and as many per file.
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.defaults.cq_entries = n;
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

    /// The size of each ring's fixed-file table (default 256), for the adapters whose spec
    /// names none ([`AdapterSpec::max_files`]): how many sockets and files of an adapter can
    /// name a fixed-file slot at once rather than their plain descriptor; the others name their
    /// descriptor. 0: no table, every socket and file names its descriptor. Each adapter has a
    /// table of its own. See [`net`](crate::net#descriptors-and-fixed-file-slots) and
    /// [`Runtime::fixed_files_in_use`].
    pub fn max_files(mut self, n: u32) -> Self {
        self.defaults.max_files = n;
        self
    }

    /// Sets up the adapters and the pool, and starts the workers.
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
        let specs = self.adapters.unwrap_or_else(|| vec![AdapterSpec::new()]);
        if specs.is_empty() {
            return Err(BuildError::NoAdapters);
        }
        if specs.len() > MAX_ADAPTERS {
            return Err(BuildError::Invalid("more adapters than MAX_ADAPTERS"));
        }
        let resolved = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| spec.resolve(i, &self.defaults, worker::allowed_cpus))
            .collect::<Result<Vec<_>, _>>()?;
        let cpus = if self.pin {
            Some(worker::allowed_cpus().map_err(BuildError::Affinity)?)
        } else {
            None
        };
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
        let domain = regio_sync::Domain::default();
        let adapters = resolved
            .iter()
            .enumerate()
            .map(|(index, r)| open_adapter(index, r, workers, &domain, &pool))
            .collect::<Result<Box<[_]>, _>>()?;
        let mut remotes = Vec::with_capacity(workers);
        let mut controls = Vec::with_capacity(workers);
        for index in 0..workers {
            let (bell, own) = worker_rings(index, &adapters)?;
            remotes.push(Arc::new(Remote::new(index, bell, adapters.len())));
            controls.push(own);
        }
        let config = WorkerConfig { spin: self.spin };
        let shared = Arc::new(Shared::new(remotes.into(), adapters, pool, config));
        let cpus = cpus
            .filter(|cpus| !cpus.is_empty())
            .map(|cpus| (0..workers).map(|i| cpus[i % cpus.len()]).collect());
        Runtime::start(shared, controls, cpus)
    }
}

/// Opens adapter `index` as `spec` says, with a ring per worker on `domain`, and registers
/// `pool` with it.
fn open_adapter(
    index: usize,
    spec: &Resolved,
    workers: usize,
    domain: &regio_sync::Domain,
    pool: &MessagePool,
) -> Result<RtAdapter, BuildError> {
    let failed = |source| BuildError::Adapter {
        adapter: index,
        source,
    };
    let adapter = Adapter::new(spec.config(workers, domain)).map_err(failed)?;
    pool.attach(adapter.registrar())?;
    // SQPOLL refused: the adapter fell back to interrupt-driven rings.
    let mode = match spec.mode {
        RingMode::SqPoll { .. } if !adapter.sqpoll() => RingMode::Interrupt,
        mode => mode,
    };
    // Single-issuer rings take a registration only from their owner: no fixed files (see the
    // `files` module).
    let slots = if mode == RingMode::SingleIssuer {
        0
    } else {
        spec.max_files
    };
    Ok(RtAdapter {
        file_slots: FileSlots::new(slots)?,
        adapter,
        mode,
        reap_max: spec.cq_entries as usize,
        queue_depth: spec.cq_entries / 2,
    })
}

/// Worker `index`'s doorbell (its completion queues' eventfds) and its own queue on each
/// adapter.
fn worker_rings(
    index: usize,
    adapters: &[RtAdapter],
) -> Result<(EventFdBell, Vec<WorkQueue<Message>>), BuildError> {
    let mut fds = Vec::with_capacity(adapters.len());
    let mut controls = Vec::with_capacity(adapters.len());
    for (i, rt) in adapters.iter().enumerate() {
        let failed = |source| BuildError::Adapter { adapter: i, source };
        let cq = rt.adapter.ring(index).ok_or_else(|| {
            failed(regio_adapters::Error::Invalid(
                "the adapter has one ring per worker",
            ))
        })?;
        fds.push(cq.notify_fd());
        let depth = rt.queue_depth;
        controls.push(
            rt.adapter
                .work_queue(index, Target::Fd(-1), depth, depth)
                .map_err(failed)?,
        );
    }
    let bell = EventFdBell::duplicate(fds).map_err(|source| BuildError::Adapter {
        adapter: 0,
        source: regio_adapters::Error::Sys {
            what: "dup of a completion queue's eventfd",
            source,
        },
    })?;
    Ok((bell, controls))
}
