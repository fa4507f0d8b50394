//! [`AdapterSpec`]: one adapter a [`Builder`](crate::Builder) opens, and its [`RingMode`].

use std::time::Duration;

use regio_adapters::{Config, SqPoll};

use crate::error::BuildError;

/// The most adapters a runtime opens. Each worker holds a batch on its ring of every adapter
/// while it polls its tasks, in an array of this size on its stack (no allocation per turn);
/// one adapter per NIC rarely comes near it.
pub const MAX_ADAPTERS: usize = 8;

/// How an adapter's rings submit: the adapter's threading mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingMode {
    /// No SQPOLL thread (the default): a worker submits with one `io_uring_enter` per loop turn
    /// that has something to submit, and completions arrive by the kernel's task work. Every
    /// io_uring runtime makes SQPOLL opt-in: it costs a core while busy.
    #[default]
    Interrupt,
    /// An SQPOLL kernel thread, shared by all the workers' rings of the adapter, submits: a busy
    /// worker makes almost no system calls. The thread sleeps after `idle` without work (the
    /// next submit then costs one call to wake it); `cpu` pins it. A kernel that refuses SQPOLL
    /// gets [`Interrupt`](Self::Interrupt) instead (the adapter logs it, and
    /// [`Runtime::adapter_modes`](crate::Runtime::adapter_modes) says so).
    SqPoll {
        /// How long the kernel thread spins without work before it sleeps.
        idle: Duration,
        /// The CPU the kernel thread runs on: one this process may use.
        cpu: Option<u32>,
    },
    /// Each ring is bound to its worker (`SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has
    /// them): the kernel skips its cross-task machinery, and completions are delivered when the
    /// worker reaps. Pool growth after the build (which registers on every ring of every
    /// adapter) is refused while a runtime has an adapter in this mode.
    SingleIssuer,
}

/// One adapter of a runtime: its mode, its SQPOLL CPU and the sizes of its rings. Every
/// worker gets one ring (one completion queue) of each adapter.
///
/// A setting left unset takes the builder's ([`Builder::ring_mode`](crate::Builder::ring_mode),
/// [`sq_entries`](crate::Builder::sq_entries), [`cq_entries`](crate::Builder::cq_entries),
/// [`max_files`](crate::Builder::max_files)), so `AdapterSpec::new()` is the adapter a builder
/// opens when it is given none.
///
/// ```
/// use std::time::Duration;
/// use regio_runtime::AdapterSpec;
///
/// // SQPOLL with a 10 ms idle timeout; bigger CQs.
/// let fast = AdapterSpec::new()
///     .sqpoll(Duration::from_millis(10))
///     .cq_entries(4096);
/// // SQPOLL, its kernel thread pinned to CPU 1 (which the process must be allowed to use).
/// let pinned = AdapterSpec::new().sqpoll(Duration::from_millis(10)).sqpoll_cpu(1);
/// // Interrupt-driven, the builder's sizes.
/// let plain = AdapterSpec::new().interrupt();
/// # let _ = (fast, pinned, plain);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterSpec {
    mode: Option<RingMode>,
    sqpoll_cpu: Option<u32>,
    sq_entries: Option<u32>,
    cq_entries: Option<u32>,
    max_files: Option<u32>,
}

impl AdapterSpec {
    /// An adapter with the builder's settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The adapter's mode.
    pub fn mode(mut self, mode: RingMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// SQPOLL ([`RingMode::SqPoll`]), the kernel thread sleeping after `idle` without work.
    pub fn sqpoll(self, idle: Duration) -> Self {
        self.mode(RingMode::SqPoll { idle, cpu: None })
    }

    /// The CPU of the SQPOLL kernel thread (it overrides a CPU given in
    /// [`mode`](Self::mode)). It must be one this process may use, on an adapter in SQPOLL
    /// mode: otherwise the build fails with [`BuildError::InvalidAdapter`].
    pub fn sqpoll_cpu(mut self, cpu: u32) -> Self {
        self.sqpoll_cpu = Some(cpu);
        self
    }

    /// Interrupt-driven submission ([`RingMode::Interrupt`]).
    pub fn interrupt(self) -> Self {
        self.mode(RingMode::Interrupt)
    }

    /// Single-issuer rings ([`RingMode::SingleIssuer`]).
    pub fn single_issuer(self) -> Self {
        self.mode(RingMode::SingleIssuer)
    }

    /// SQ entries per ring.
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.sq_entries = Some(n);
        self
    }

    /// CQ entries per ring (at least 2, and at least the SQ's). Each worker keeps at most half
    /// as many operations in flight on its own work queue of the adapter, and as many per file.
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.cq_entries = Some(n);
        self
    }

    /// The size of each of this adapter's rings' fixed-file table: how many of the sockets and
    /// files bound to this adapter can name a slot at once. The adapter's table is its own;
    /// 0 gives it none (see [`Builder::max_files`](crate::Builder::max_files)).
    pub fn max_files(mut self, n: u32) -> Self {
        self.max_files = Some(n);
        self
    }

    /// This spec with the builder's settings where it has none, checked.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidAdapter`] (numbered `index`) for a setting out of range;
    /// [`BuildError::Affinity`] if an SQPOLL CPU was asked for and the process's CPUs cannot be
    /// read.
    pub(crate) fn resolve(
        &self,
        index: usize,
        defaults: &Defaults,
        allowed_cpus: impl FnOnce() -> std::io::Result<Vec<usize>>,
    ) -> Result<Resolved, BuildError> {
        let invalid = |reason| BuildError::InvalidAdapter {
            adapter: index,
            reason,
        };
        let sq_entries = self.sq_entries.unwrap_or(defaults.sq_entries);
        let cq_entries = self.cq_entries.unwrap_or(defaults.cq_entries);
        if cq_entries < 2 {
            return Err(invalid("cq_entries must be at least 2"));
        }
        let mode = match (self.mode.unwrap_or(defaults.mode), self.sqpoll_cpu) {
            (RingMode::SqPoll { idle, .. }, Some(cpu)) => RingMode::SqPoll {
                idle,
                cpu: Some(cpu),
            },
            (mode, None) => mode,
            (_, Some(_)) => {
                return Err(invalid(
                    "sqpoll_cpu needs an adapter in SQPOLL mode (AdapterSpec::sqpoll)",
                ))
            }
        };
        if let RingMode::SqPoll { cpu: Some(cpu), .. } = mode {
            let allowed = allowed_cpus().map_err(BuildError::Affinity)?;
            if !allowed.contains(&(cpu as usize)) {
                return Err(invalid(
                    "the SQPOLL CPU is not one this process may use (see its affinity mask)",
                ));
            }
        }
        Ok(Resolved {
            mode,
            sq_entries,
            cq_entries,
            max_files: self.max_files.unwrap_or(defaults.max_files),
        })
    }
}

/// The builder's settings, which an [`AdapterSpec`] takes where it has none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub(crate) mode: RingMode,
    pub(crate) sq_entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) max_files: u32,
}

/// An adapter's settings, complete and checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved {
    pub(crate) mode: RingMode,
    pub(crate) sq_entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) max_files: u32,
}

impl Resolved {
    /// The adapter's configuration: one ring per worker, on the runtime's RCU domain.
    pub(crate) fn config(&self, workers: usize, domain: &regio_sync::Domain) -> Config {
        let (sqpoll, single_issuer) = match self.mode {
            RingMode::Interrupt => (None, false),
            RingMode::SqPoll { idle, cpu } => (Some(SqPoll { idle, cpu }), false),
            RingMode::SingleIssuer => (None, true),
        };
        Config::default()
            .rings(workers)
            .sq_entries(self.sq_entries)
            .cq_entries(self.cq_entries)
            .sqpoll(sqpoll)
            .sqpoll_fallback(true)
            .coop_taskrun(false)
            .single_issuer(single_issuer)
            .max_files(self.max_files)
            .domain(domain.clone())
    }
}
