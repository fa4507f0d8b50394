//! [`Adapter`]: N rings sharing one SQPOLL kernel thread, with registered buffers and files.
//!
//! # Synchronization
//!
//! Registration calls own each ring in turn through its lock (never held across a block), and
//! table updates go through the RCU tables (the `tables` module). The two atomics here are
//! Relaxed: the process-wide generation counter needs only uniqueness, and the buffer-cloning
//! flag only chooses between two correct registration paths.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use io_uring::{IoUring, Probe};
use regio_sync::Domain;

mod registration;
mod resize;

pub use registration::Registration;

use crate::error::{setup_error, Error};
use crate::handle::Ring;
use crate::ops::{FileSlot, Side, Target};
use crate::pbuf::ProvidedRing;
use crate::ring::RingShared;
use crate::stats::Stats;
use crate::tables::{Tables, WqId, WqShared};
use crate::wq::WorkQueue;
use crate::IoBuf;

/// The SQPOLL kernel thread's settings.
#[derive(Debug, Clone, Copy)]
pub struct SqPoll {
    /// How long the thread spins with nothing to do before it sleeps (`sq_thread_idle`).
    pub idle: Duration,
    /// The CPU it is pinned to (`sq_thread_cpu`), if any.
    pub cpu: Option<u32>,
}

/// How to build an [`Adapter`]: start from [`Config::default`] and change what differs with the
/// setters, each named after the field it sets.
///
/// ```
/// use regio_adapters::Config;
///
/// let config = Config::default().rings(2).cq_entries(4096).sqpoll(None);
/// assert_eq!((config.rings, config.cq_entries), (2, 4096));
/// ```
///
/// The fields stay readable; the struct is `#[non_exhaustive]`, so that a new setting is not a
/// breaking change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Number of rings, one completion queue each.
    pub rings: usize,
    /// SQ entries per ring.
    pub sq_entries: u32,
    /// CQ entries per ring (at least `sq_entries`).
    pub cq_entries: u32,
    /// The SQPOLL thread, or `None` for interrupt-driven submission.
    pub sqpoll: Option<SqPoll>,
    /// Fall back to interrupt-driven submission if the kernel refuses SQPOLL.
    pub sqpoll_fallback: bool,
    /// With SQPOLL: how many SQEs a [`Batch`](crate::Batch) (or a run of posts under one owner
    /// of the ring) stages at most before the next post hands them to the kernel thread, ahead
    /// of the commit, so that the thread works while the batch stages the rest; 0 (the
    /// default): only at the commit. See "When the kernel sees the posts" in the
    /// [`Batch`](crate::Batch) docs for what it changes. Each early hand-over is a pass of the
    /// kernel thread of its own, with its fixed cost (and a signal of the CQ eventfd when its
    /// completions arrive), so it pays only where the work per SQE (the kernel's, or the
    /// caller's between posts) outweighs that; without SQPOLL it does nothing.
    pub sqpoll_publish_every: u32,
    /// Without SQPOLL: set `COOP_TASKRUN` and `TASKRUN_FLAG`. Only sound when the threads that
    /// post also reap (completions then wait for the submitting thread's next kernel entry).
    /// Single-issuer mode ignores it and picks its own task-work flags.
    pub coop_taskrun: bool,
    /// Single-issuer mode (default false): each ring gets one owner thread, the only one that
    /// submits to it and reaps it, and the rings are set up for that. What it asks of the
    /// caller (bind an owner, register and drop on it, reap only there) is written once, in the
    /// crate docs' [single-issuer mode](crate#single-issuer-mode). It needs `sqpoll: None`:
    /// [`Adapter::new`] refuses it with SQPOLL with [`Error::Invalid`].
    pub single_issuer: bool,
    /// Size of the sparse registered-buffer table (region ids `0..max_regions`).
    pub max_regions: u32,
    /// Size of the sparse fixed-file table.
    pub max_files: u32,
    /// The RCU domain of the tables; a fresh one if `None`.
    pub domain: Option<Domain>,
}

impl Config {
    /// Sets [`rings`](Self::rings).
    pub fn rings(mut self, rings: usize) -> Self {
        self.rings = rings;
        self
    }

    /// Sets [`sq_entries`](Self::sq_entries).
    pub fn sq_entries(mut self, entries: u32) -> Self {
        self.sq_entries = entries;
        self
    }

    /// Sets [`cq_entries`](Self::cq_entries).
    pub fn cq_entries(mut self, entries: u32) -> Self {
        self.cq_entries = entries;
        self
    }

    /// Sets [`sqpoll`](Self::sqpoll): the SQPOLL thread, or `None` for interrupt-driven
    /// submission.
    pub fn sqpoll(mut self, sqpoll: Option<SqPoll>) -> Self {
        self.sqpoll = sqpoll;
        self
    }

    /// Sets [`sqpoll_fallback`](Self::sqpoll_fallback).
    pub fn sqpoll_fallback(mut self, fallback: bool) -> Self {
        self.sqpoll_fallback = fallback;
        self
    }

    /// Sets [`sqpoll_publish_every`](Self::sqpoll_publish_every).
    pub fn sqpoll_publish_every(mut self, every: u32) -> Self {
        self.sqpoll_publish_every = every;
        self
    }

    /// Sets [`coop_taskrun`](Self::coop_taskrun).
    pub fn coop_taskrun(mut self, coop: bool) -> Self {
        self.coop_taskrun = coop;
        self
    }

    /// Sets [`single_issuer`](Self::single_issuer) (see there for what it asks of the caller).
    pub fn single_issuer(mut self, single_issuer: bool) -> Self {
        self.single_issuer = single_issuer;
        self
    }

    /// Sets [`max_regions`](Self::max_regions).
    pub fn max_regions(mut self, max: u32) -> Self {
        self.max_regions = max;
        self
    }

    /// Sets [`max_files`](Self::max_files).
    pub fn max_files(mut self, max: u32) -> Self {
        self.max_files = max;
        self
    }

    /// Sets [`domain`](Self::domain): the tables share `domain` (a handle; pass a clone).
    pub fn domain(mut self, domain: Domain) -> Self {
        self.domain = Some(domain);
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rings: 1,
            sq_entries: 256,
            cq_entries: 1024,
            sqpoll: Some(SqPoll {
                idle: Duration::from_millis(100),
                cpu: None,
            }),
            sqpoll_fallback: true,
            sqpoll_publish_every: 0,
            coop_taskrun: false,
            single_issuer: false,
            max_regions: 64,
            max_files: 256,
            domain: None,
        }
    }
}

/// How the rings of an adapter in single-issuer mode ([`Config::single_issuer`]) were set up:
/// which of the kernel's flags the kernel took, tried in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleIssuer {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG` (Linux 6.1): completions that need task
    /// work reach the CQ only when the owner reaps, which runs that work.
    DeferTaskrun,
    /// `SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG` (Linux 6.0).
    CoopTaskrun,
    /// None of them (an older kernel): the adapter alone keeps to one owner per ring.
    Plain,
}

impl SingleIssuer {
    /// The next setup to try after the kernel refused this one.
    fn fallback(self) -> Option<Self> {
        match self {
            Self::DeferTaskrun => Some(Self::CoopTaskrun),
            Self::CoopTaskrun => Some(Self::Plain),
            Self::Plain => None,
        }
    }
}

/// An operation's name and the kernel version that brought it, from the probe's table of the
/// opcodes regio submits ([`REGIO_OPCODES`](crate::probe::REGIO_OPCODES)).
pub(crate) fn since(code: u8) -> (&'static str, &'static str) {
    crate::probe::REGIO_OPCODES
        .iter()
        .find(|op| op.code == code)
        .map_or(("an io_uring operation", "a later"), |op| {
            (op.name, op.since)
        })
}

/// Distinct generations across every adapter of the process, so a key from one adapter never
/// passes for a key of another.
static GENERATION: AtomicU32 = AtomicU32::new(1);

fn next_generation() -> u32 {
    // Relaxed: only uniqueness matters, which the RMW gives.
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// One adapter: a set of rings served by one SQPOLL thread (one per NIC, typically).
///
/// ```no_run
/// # use regio_adapters::{Adapter, Config, Target};
/// # fn demo<B: regio_adapters::IoBuf>(file: std::os::fd::RawFd) -> Result<(), regio_adapters::Error> {
/// let adapter = Adapter::<B>::new(Config::default().rings(2))?;
/// let wq = adapter.work_queue(0, Target::Fd(file), 32, 32)?;
/// # Ok(()) }
/// ```
pub struct Adapter<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    rings: Vec<Arc<RingShared<B>>>,
    tables: Arc<Tables>,
    sqpoll: bool,
    single_issuer: Option<SingleIssuer>,
    /// The configuration the rings were built with (SQPOLL as it ended up), for resizes.
    cfg: Config,
    clone_ok: AtomicBool,
    span: tracing::Span,
}

impl<B> Inner<B> {
    /// Ring `cq`, or the error for a bad index.
    fn ring(&self, cq: usize) -> Result<&Arc<RingShared<B>>, Error> {
        self.rings
            .get(cq)
            .ok_or(Error::Invalid("completion queue index out of range"))
    }
}

impl<B> Clone for Adapter<B> {
    /// Another handle to the same adapter.
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> Adapter<B> {
    /// A handle that does not keep the adapter alive: for what must leave the adapter when it
    /// goes (a registration), but must not keep its rings open.
    pub fn downgrade(&self) -> WeakAdapter<B> {
        WeakAdapter {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

/// A handle to an [`Adapter`] that does not keep it alive ([`Adapter::downgrade`]).
pub struct WeakAdapter<B> {
    inner: Weak<Inner<B>>,
}

impl<B> WeakAdapter<B> {
    /// The adapter, if it is still alive.
    pub fn upgrade(&self) -> Option<Adapter<B>> {
        self.inner.upgrade().map(|inner| Adapter { inner })
    }
}

impl<B> Clone for WeakAdapter<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Weak::clone(&self.inner),
        }
    }
}

impl<B> fmt::Debug for WeakAdapter<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakAdapter")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

impl<B> fmt::Debug for Adapter<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("rings", &self.inner.rings.len())
            .field("sqpoll", &self.inner.sqpoll)
            .finish_non_exhaustive()
    }
}

fn build_ring(
    cfg: &Config,
    sqpoll: Option<SqPoll>,
    attach: Option<RawFd>,
    issuer: Option<SingleIssuer>,
) -> std::io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(cfg.cq_entries.max(cfg.sq_entries));
    if let Some(issuer) = issuer {
        // Disabled until the owner binds it: the bind makes it the kernel's submitter task.
        b.setup_r_disabled();
        match issuer {
            SingleIssuer::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            SingleIssuer::CoopTaskrun => {
                b.setup_single_issuer()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag();
            }
            SingleIssuer::Plain => {}
        }
    }
    match sqpoll {
        Some(sp) => {
            b.setup_sqpoll(sp.idle.as_millis().min(u128::from(u32::MAX)) as u32);
            if let Some(cpu) = sp.cpu {
                b.setup_sqpoll_cpu(cpu);
            }
            if let Some(fd) = attach {
                b.setup_attach_wq(fd);
            }
        }
        None if cfg.coop_taskrun && issuer.is_none() => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        None => {}
    }
    // No SQ index array (Linux 6.6): the kernel takes SQE `i` from slot `i` directly, one load
    // fewer per SQE. The io-uring crate writes SQEs in slot order either way.
    let plain = b.clone();
    b.setup_no_sqarray();
    b.build(cfg.sq_entries).or_else(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => plain.build(cfg.sq_entries),
        _ => Err(e),
    })
}

/// The first SQPOLL-less setup in single-issuer mode that the kernel takes, and its ring.
fn build_single_issuer(
    cfg: &Config,
    span: &tracing::Span,
) -> Result<(IoUring, SingleIssuer), Error> {
    let mut issuer = SingleIssuer::DeferTaskrun;
    // Three setups at most: each refusal moves to the next.
    loop {
        match build_ring(cfg, None, None, Some(issuer)) {
            Ok(r) => {
                tracing::info!(parent: span, ?issuer, "single-issuer rings");
                return Ok((r, issuer));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match issuer.fallback() {
                Some(next) => {
                    tracing::warn!(parent: span, ?issuer, next = ?next, error = %e,
                        "single-issuer setup refused; trying the next one");
                    issuer = next;
                }
                None => return Err(setup_error(e)),
            },
            Err(e) => return Err(setup_error(e)),
        }
    }
}

/// Fails with [`Error::NotOwner`] unless the calling thread may register on every ring (a
/// registration that cannot reach them all touches none). Called with the tables' write lock.
fn check_registrar<B>(rings: &[Arc<RingShared<B>>]) -> Result<(), Error> {
    if rings.iter().all(|r| r.may_register()) {
        Ok(())
    } else {
        Err(Error::NotOwner)
    }
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Sys { what, source }
}

impl<B: IoBuf> Adapter<B> {
    /// Builds the rings, attaches them to one SQPOLL thread, and sets up sparse buffer and file
    /// tables and an eventfd on each.
    ///
    /// # Errors
    ///
    /// [`Error::IoUringDisabled`] when io_uring is off on this host, [`Error::Sys`] for other
    /// setup failures, [`Error::Invalid`] for a bad config.
    pub fn new(cfg: Config) -> Result<Self, Error> {
        if cfg.rings == 0 || cfg.rings > 1024 {
            return Err(Error::Invalid("Config::rings must be in 1..=1024"));
        }
        if cfg.max_regions == 0 || cfg.max_regions > u32::from(u16::MAX) + 1 {
            return Err(Error::Invalid("Config::max_regions must be in 1..=65536"));
        }
        if cfg.single_issuer && cfg.sqpoll.is_some() {
            return Err(Error::Invalid(
                "Config::single_issuer needs Config::sqpoll = None",
            ));
        }
        let span = tracing::info_span!("adapter", rings = cfg.rings);
        let mut issuer = None;
        let built = if cfg.single_issuer {
            let (r, i) = build_single_issuer(&cfg, &span)?;
            issuer = Some(i);
            Ok(r)
        } else {
            build_ring(&cfg, cfg.sqpoll, None, None)
        };
        let first = match built {
            Ok(r) => r,
            Err(e)
                if cfg.sqpoll.is_some()
                    && cfg.sqpoll_fallback
                    && e.raw_os_error() != Some(libc::ENOSYS) =>
            {
                tracing::warn!(parent: &span, error = %e, "SQPOLL refused; falling back to interrupt-driven submission");
                build_ring(&cfg, None, None, None).map_err(setup_error)?
            }
            Err(e) => return Err(setup_error(e)),
        };
        let sqpoll = first.params().is_setup_sqpoll();
        let sp = if sqpoll { cfg.sqpoll } else { None };
        let mut urings = vec![first];
        for _ in 1..cfg.rings {
            let r =
                build_ring(&cfg, sp, Some(urings[0].as_raw_fd()), issuer).map_err(setup_error)?;
            urings.push(r);
        }
        let mut supported = [true; 256];
        let mut probe = Probe::new();
        if urings[0].submitter().register_probe(&mut probe).is_ok() {
            for (code, s) in supported.iter_mut().enumerate() {
                *s = probe.is_supported(code as u8);
            }
        }
        let supported = Arc::new(supported);
        // Whether send and recv use IORING_RECVSEND_FIXED_BUF or their fallbacks: tried once per
        // process, here, so that no operation pays for it (see ops::net).
        let fixed_recvsend = crate::ops::net::fixed_recvsend();
        let domain = cfg.domain.clone().unwrap_or_default();
        let tables = Arc::new(Tables::new(domain, cfg.max_regions, cfg.max_files));
        let mut rings = Vec::with_capacity(urings.len());
        let shares_sq_thread = sqpoll && urings.len() > 1;
        for (index, uring) in urings.into_iter().enumerate() {
            let s = uring.submitter();
            s.register_buffers_sparse(cfg.max_regions)
                .map_err(sys("IORING_REGISTER_BUFFERS2 (sparse buffer table)"))?;
            if cfg.max_files > 0 {
                s.register_files_sparse(cfg.max_files)
                    .map_err(sys("IORING_REGISTER_FILES2 (sparse file table)"))?;
            }
            let efd = crate::sys::eventfd().map_err(sys("eventfd"))?;
            s.register_eventfd(efd.as_raw_fd())
                .map_err(sys("IORING_REGISTER_EVENTFD"))?;
            let cq_span = tracing::debug_span!(parent: &span, "cq", index, fd = uring.as_raw_fd());
            let mut ring = RingShared::new(
                uring,
                efd,
                Arc::clone(&tables),
                Arc::clone(&supported),
                index,
                cq_span,
                issuer,
            )
            .map_err(sys("mmap of the SQ ring and its SQEs"))?;
            ring.set_publish_every(cfg.sqpoll_publish_every);
            ring.shares_sq_thread = shares_sq_thread;
            rings.push(Arc::new(ring));
        }
        tracing::info!(parent: &span, sqpoll, rings = rings.len(), fixed_recvsend, "adapter up");
        let cfg = Config { sqpoll: sp, ..cfg };
        Ok(Self {
            inner: Arc::new(Inner {
                rings,
                tables,
                sqpoll,
                single_issuer: issuer,
                cfg,
                clone_ok: AtomicBool::new(true),
                span,
            }),
        })
    }

    /// Whether the rings run on an SQPOLL thread (false after a fallback).
    pub fn sqpoll(&self) -> bool {
        self.inner.sqpoll
    }

    /// How the rings were set up in single-issuer mode ([`Config::single_issuer`]); `None` in
    /// the default mode.
    pub fn single_issuer(&self) -> Option<SingleIssuer> {
        self.inner.single_issuer
    }

    /// Single-issuer mode: makes the calling thread the owner of every ring, as
    /// [`Ring::bind_owner`] does for one (then this thread may also register on all
    /// of them).
    ///
    /// # Errors
    ///
    /// As for [`Ring::bind_owner`]; the rings bound before an error stay bound.
    pub fn bind_owner(&self) -> Result<(), Error> {
        self.inner.rings.iter().try_for_each(|r| r.bind_owner())
    }

    /// Whether the kernel has `op`'s opcode (from `IORING_REGISTER_PROBE`). An operation it
    /// lacks completes with [`DescriptorError::Unsupported`](crate::DescriptorError::Unsupported).
    pub fn supports(&self, op: &crate::Op<B>) -> bool {
        self.inner.rings[0].supported[usize::from(op.opcode())]
    }

    /// Whether registered buffers are cloned from ring 0 (false once the kernel refused, and each
    /// ring registers them itself).
    pub fn buffer_cloning(&self) -> bool {
        // Relaxed: a hint that only picks the registration path; both paths are correct.
        self.inner.clone_ok.load(Ordering::Relaxed)
    }

    /// The completion queues, one per ring.
    pub fn rings(&self) -> Vec<Ring<B>> {
        self.inner
            .rings
            .iter()
            .map(|r| Ring {
                ring: Arc::clone(r),
            })
            .collect()
    }

    /// Completion queue `i`.
    pub fn ring(&self, i: usize) -> Option<Ring<B>> {
        self.inner.rings.get(i).map(|r| Ring {
            ring: Arc::clone(r),
        })
    }

    /// The RCU domain of this adapter's tables.
    pub fn domain(&self) -> &Domain {
        &self.inner.tables.domain
    }

    /// Counters summed over every CQ.
    pub fn stats(&self) -> Stats {
        self.inner
            .rings
            .iter()
            .map(|r| r.counters.snapshot(r.combiner.queued()))
            .fold(Stats::default(), |a, b| a + b)
    }

    /// Installs `fd` in fixed-file slot `slot` on every ring (the kernel takes its own
    /// reference; the caller may close `fd` afterwards). A file that only one ring has, as an
    /// accept leaves it, reaches another ring with [`Op::share_file`](crate::Op::share_file).
    pub fn set_file(&self, slot: FileSlot, fd: RawFd) -> Result<(), Error> {
        self.update_file(slot, fd, true)
    }

    /// Empties fixed-file slot `slot` on every ring.
    pub fn clear_file(&self, slot: FileSlot) -> Result<(), Error> {
        self.update_file(slot, -1, false)
    }

    fn update_file(&self, slot: FileSlot, fd: RawFd, set: bool) -> Result<(), Error> {
        let _w = self.inner.tables.write_lock();
        self.inner
            .tables
            .check_target(&self.inner.tables.domain.guard(), Target::Fixed(slot))
            .map_err(|_| Error::Invalid("file slot outside Config::max_files"))?;
        check_registrar(&self.inner.rings)?;
        for ring in &self.inner.rings {
            crate::register::files_update(ring.fd(), slot.0, fd)
                .map_err(sys("IORING_REGISTER_FILES_UPDATE"))?;
        }
        self.inner
            .tables
            .files
            .update(|t| {
                let mut t = t.clone();
                t[slot.0 as usize] = set;
                t
            })
            .defer();
        Ok(())
    }

    /// Registers a provided-buffer ring of `entries` buffers as group `bgid` on completion queue
    /// `cq`'s ring, for multishot receives on that CQ's work queues. Fill it with a
    /// [`BufFeed`](regio_pool::BufFeed).
    pub fn provided_ring(
        &self,
        cq: usize,
        bgid: u16,
        entries: u16,
    ) -> Result<ProvidedRing<B>, Error> {
        let ring = self.inner.ring(cq)?;
        ProvidedRing::new(Arc::clone(ring), bgid, entries)
    }

    /// Creates a work queue on completion queue `cq` for `target`, with `send_depth` and
    /// `recv_depth` credits (RIOCreateRequestQueue).
    pub fn work_queue(
        &self,
        cq: usize,
        target: Target,
        send_depth: u32,
        recv_depth: u32,
    ) -> Result<WorkQueue<B>, Error> {
        let ring = self.inner.ring(cq)?;
        let _w = self.inner.tables.write_lock();
        self.sweep_work_queues();
        self.inner
            .tables
            .check_target(&self.inner.tables.domain.guard(), target)
            .map_err(|_| Error::Invalid("file slot outside Config::max_files"))?;
        let (target, file) = match target {
            Target::Fd(fd) if fd >= 0 => {
                let own = crate::sys::dup_fd(fd).map_err(sys("dup of the work queue's fd"))?;
                (Target::Fd(own.as_raw_fd()), Some(own))
            }
            other => (other, None),
        };
        let mut file = Some(file);
        let mut created = None;
        self.inner
            .tables
            .wqs
            .update(|t| {
                let mut t = t.clone();
                let index = t.iter().position(Option::is_none).unwrap_or(t.len());
                if index == t.len() {
                    t.push(None);
                }
                let id = WqId {
                    index: index as u32,
                    generation: next_generation(),
                };
                let file = file.take().expect("the update runs once");
                let shared = Arc::new(WqShared::new(id, target, file, send_depth, recv_depth));
                t[index] = Some(Arc::clone(&shared));
                created = Some(shared);
                t
            })
            .defer();
        let shared = created.expect("the update ran");
        tracing::debug!(parent: &ring.span, wq = shared.id.index, ?target, "work queue added");
        Ok(WorkQueue {
            shared,
            ring: Arc::clone(ring),
        })
    }

    /// Removes a work queue. Later posts to it are handed back with
    /// [`PostError::Closed`](crate::PostError::Closed); operations in flight still complete, and
    /// the queue's own file (a plain fd's duplicate) is closed after the last one's final
    /// completion: the kernel looks the fd up only when it issues an operation.
    pub fn remove_work_queue(&self, wq: &WorkQueue<B>) {
        let _w = self.inner.tables.write_lock();
        wq.shared.close();
        self.sweep_work_queues();
        tracing::debug!(parent: &wq.ring.span, wq = wq.id().index, "work queue removed");
    }

    /// Takes the closed and drained work queues out of the table. A closed queue stays in it
    /// until its last operation's final completion, which returns its credits (and closes its
    /// file); the next table change after that takes it out. Called with the write lock held.
    fn sweep_work_queues(&self) {
        let guard = self.inner.tables.domain.guard();
        let stale = self
            .inner
            .tables
            .wqs
            .read(&guard)
            .iter()
            .flatten()
            .any(|w| w.is_released());
        drop(guard);
        if !stale {
            return;
        }
        self.inner
            .tables
            .wqs
            .update(|t| {
                t.iter()
                    .map(|w| w.as_ref().filter(|w| !w.is_released()).cloned())
                    .collect()
            })
            .defer();
        // The old table versions hold the queues. Deferred values are otherwise reclaimed only
        // every few table writes, so reclaim now (it never waits; with a reader online, the
        // versions go at a later reclaim).
        self.inner.tables.domain.reclaim();
    }

    /// Changes a work queue's depths. Growth is immediate; a shrink holds back new posts until
    /// enough in-flight operations complete.
    pub fn resize_work_queue(&self, wq: &WorkQueue<B>, send_depth: u32, recv_depth: u32) {
        let _w = self.inner.tables.write_lock();
        let (send, recv) = wq.shared.set_depth(send_depth, recv_depth);
        wq.shared.adjust(Side::Send, send);
        wq.shared.adjust(Side::Recv, recv);
    }
}
