//! What this kernel's io_uring really supports, read from the kernel and never assumed.
//!
//! [`KernelProbe::run`] asks the running kernel: `uname(2)`, the io_uring sysctls,
//! `/proc/self/status` and `getrlimit(2)`. It then creates a handful of small, short-lived rings
//! to try every setup flag and registration regio uses, and reads the supported opcodes with
//! `IORING_REGISTER_PROBE`. Nothing is inferred from the kernel version; the version is only
//! printed, next to the version that brings each missing piece.
//!
//! Adapters use the result to degrade: without SQPOLL they submit with `io_uring_enter`, without
//! buffer cloning they register the pool on every ring, and so on. Each gap comes with what regio
//! does instead ([`KernelProbe::degradations`]). `regio probe` prints the [`Display`] report, or
//! the same facts as JSON through `serde`.
//!
//! ```no_run
//! use regio_adapters::probe::{KernelProbe, SetupFlag};
//!
//! let probe = KernelProbe::run()?;
//! if !probe.setup_flag(SetupFlag::Sqpoll) {
//!     eprintln!("no SQPOLL: submitting with io_uring_enter");
//! }
//! if probe.supports_opcode(io_uring::opcode::SendZc::CODE) {
//!     println!("zero-copy sends available");
//! }
//! # Ok::<(), regio_adapters::probe::ProbeError>(())
//! ```
//!
//! [`Display`]: std::fmt::Display

mod features;
mod kernel;
mod opcodes;
mod outcome;
mod procfs;
mod register;
mod report;
mod setup;
mod status;

use std::io;

use io_uring::IoUring;
use serde::Serialize;

pub use features::RingFeature;
pub use kernel::KernelRelease;
pub use opcodes::{OpcodeSupport, RegioOpcode, REGIO_OPCODES};
pub use outcome::Outcome;
pub use procfs::{ProcStatus, Sysctl};
pub use regio_pool::MemlockLimit;
pub use register::Registrations;
pub use setup::{FlagResult, SetupFlag};
pub use status::{DisabledReason, IoUringStatus};

/// Entries in each ring the probe creates: small, so the probe pins almost nothing.
const RING_ENTRIES: u32 = 8;

/// Why the probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `uname(2)` failed or returned a release without `<major>.<minor>`.
    #[error("uname(2) failed: {0}")]
    Uname(#[source] io::Error),
    /// A procfs file could not be read.
    #[error("cannot read {path}: {source}; the probe reads the kernel's facts from procfs, so mount /proc")]
    Procfs {
        /// The file.
        path: &'static str,
        /// The read error.
        source: io::Error,
    },
    /// A procfs file held something the probe cannot parse.
    #[error("cannot parse {path}: {content:?}; please report this kernel's format")]
    Parse {
        /// The file.
        path: &'static str,
        /// What it held.
        content: String,
    },
}

/// Something this kernel lacks, and what regio does instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Degradation {
    /// What is missing, for example `setup flag SQPOLL (Linux 5.1 (5.11 without root))`.
    pub missing: String,
    /// What regio does instead, or what to change when regio cannot do without it.
    pub instead: String,
}

/// What this kernel's io_uring supports, as the kernel itself answered.
#[derive(Debug, Clone, Serialize)]
pub struct KernelProbe {
    kernel: KernelRelease,
    io_uring: IoUringStatus,
    sysctl: Sysctl,
    process: ProcStatus,
    setup_flags: Vec<FlagResult>,
    features: Vec<RingFeature>,
    opcode_probe: Outcome,
    opcodes: Vec<OpcodeSupport>,
    supported_opcodes: Vec<u8>,
    registrations: Registrations,
    memlock: MemlockLimit,
    degradations: Vec<Degradation>,
}

impl KernelProbe {
    /// Asks the running kernel. Creates and drops a few small rings.
    ///
    /// A disabled io_uring is not an error: it is reported in [`io_uring`](Self::io_uring), with
    /// its cause. Errors come only from procfs or the system calls that describe the process.
    pub fn run() -> Result<Self, ProbeError> {
        let kernel = KernelRelease::current().map_err(ProbeError::Uname)?;
        let sysctl = Sysctl::read()?;
        let process = ProcStatus::read()?;
        let memlock = MemlockLimit {
            cap_ipc_lock: process.has_capability(procfs::CAP_IPC_LOCK),
            ..MemlockLimit::current()
        };

        let mut probe = match IoUring::new(RING_ENTRIES) {
            Ok(ring) => {
                let mut kernel_probe = io_uring::Probe::new();
                let opcode_probe = Outcome::of(ring.submitter().register_probe(&mut kernel_probe));
                let supported_opcodes = if opcode_probe.is_supported() {
                    (0..=u8::MAX)
                        .filter(|&code| kernel_probe.is_supported(code))
                        .collect()
                } else {
                    Vec::new()
                };
                KernelProbe {
                    setup_flags: setup::try_all(process.first_allowed_cpu),
                    features: features::read(ring.params()),
                    opcode_probe,
                    opcodes: opcodes::support(&supported_opcodes),
                    supported_opcodes,
                    registrations: Registrations::try_all(),
                    io_uring: IoUringStatus::Enabled,
                    kernel,
                    sysctl,
                    process,
                    memlock,
                    degradations: Vec::new(),
                }
            }
            Err(e) => {
                const DISABLED: &str = "io_uring is disabled";
                KernelProbe {
                    io_uring: IoUringStatus::disabled(&e, &sysctl, &process),
                    setup_flags: setup::not_tried_all(DISABLED),
                    features: Vec::new(),
                    opcode_probe: Outcome::not_tried(DISABLED),
                    opcodes: opcodes::support(&[]),
                    supported_opcodes: Vec::new(),
                    registrations: Registrations::not_tried(DISABLED),
                    kernel,
                    sysctl,
                    process,
                    memlock,
                    degradations: Vec::new(),
                }
            }
        };
        probe.degradations = probe.find_degradations();
        Ok(probe)
    }

    /// The running kernel.
    pub fn kernel(&self) -> &KernelRelease {
        &self.kernel
    }

    /// Whether this process can create rings, and if not, why.
    pub fn io_uring(&self) -> &IoUringStatus {
        &self.io_uring
    }

    /// The io_uring sysctls.
    pub fn sysctl(&self) -> &Sysctl {
        &self.sysctl
    }

    /// The parts of `/proc/self/status` the probe read: seccomp, capabilities, groups, CPUs.
    pub fn process(&self) -> &ProcStatus {
        &self.process
    }

    /// Whether a ring could be created with `flag`.
    pub fn setup_flag(&self, flag: SetupFlag) -> bool {
        self.setup_flags
            .iter()
            .any(|r| r.flag == flag && r.outcome.is_supported())
    }

    /// What happened when each setup flag was tried.
    pub fn setup_flags(&self) -> &[FlagResult] {
        &self.setup_flags
    }

    /// The `IORING_FEAT_*` bits regio cares about.
    pub fn features(&self) -> &[RingFeature] {
        &self.features
    }

    /// Whether `IORING_REGISTER_PROBE` marked opcode `code` supported. `false` when the probe
    /// itself failed (see [`opcode_probe`](Self::opcode_probe)).
    pub fn supports_opcode(&self, code: u8) -> bool {
        self.supported_opcodes.binary_search(&code).is_ok()
    }

    /// Whether `IORING_REGISTER_PROBE` itself worked (Linux 5.6).
    pub fn opcode_probe(&self) -> &Outcome {
        &self.opcode_probe
    }

    /// Every opcode regio uses, with whether this kernel supports it.
    pub fn opcodes(&self) -> &[OpcodeSupport] {
        &self.opcodes
    }

    /// What happened when each registration was tried.
    pub fn registrations(&self) -> &Registrations {
        &self.registrations
    }

    /// Whether `IORING_REGISTER_CLONE_BUFFERS` shared one ring's buffers with another.
    pub fn clone_buffers(&self) -> bool {
        self.registrations.clone_buffers.is_supported()
    }

    /// Whether a provided-buffer ring (`IORING_REGISTER_PBUF_RING`) could be registered.
    pub fn pbuf_ring(&self) -> bool {
        self.registrations.pbuf_ring.is_supported()
    }

    /// Whether an empty (sparse) fixed-file table could be registered.
    pub fn sparse_files(&self) -> bool {
        self.registrations.sparse_files.is_supported()
    }

    /// `RLIMIT_MEMLOCK`, and whether `CAP_IPC_LOCK` makes it moot.
    pub fn memlock(&self) -> MemlockLimit {
        self.memlock
    }

    /// Everything missing here, each with what regio does instead. Empty when nothing is missing.
    pub fn degradations(&self) -> &[Degradation] {
        &self.degradations
    }

    fn find_degradations(&self) -> Vec<Degradation> {
        let mut found = Vec::new();
        let mut add =
            |missing: String, instead: String| found.push(Degradation { missing, instead });
        if let IoUringStatus::Disabled { reason, .. } = &self.io_uring {
            add(
                "io_uring".into(),
                format!("regio cannot run: {}", reason.remedy()),
            );
            return found;
        }
        for r in self
            .setup_flags
            .iter()
            .filter(|r| !r.outcome.is_supported())
        {
            add(
                format!("setup flag {} (Linux {})", r.flag, r.flag.since()),
                r.flag.instead().into(),
            );
        }
        for f in self.features.iter().filter(|f| !f.present) {
            add(
                format!("feature {} (Linux {})", f.name, f.since),
                f.instead.into(),
            );
        }
        if !self.opcode_probe.is_supported() {
            add(
                "IORING_REGISTER_PROBE (Linux 5.6)".into(),
                "regio cannot tell which operations exist: use Linux 5.6 or newer".into(),
            );
        }
        for o in self.opcodes.iter().filter(|o| !o.supported) {
            let op = o.opcode;
            let instead = op.instead.map_or_else(
                || {
                    format!(
                        "regio cannot run without it: use Linux {} or newer",
                        op.since
                    )
                },
                str::to_owned,
            );
            add(format!("opcode {} (Linux {})", op.name, op.since), instead);
        }
        let r = &self.registrations;
        let registrations = [
            (
                &r.fixed_buffers,
                "registered buffers",
                "regio cannot run without them",
            ),
            (
                &r.clone_buffers,
                "buffer cloning (Linux 6.12)",
                "a separate registration per ring: each ring registers the pool's buffers itself, \
                 and each registration is charged to RLIMIT_MEMLOCK",
            ),
            (
                &r.pbuf_ring,
                "provided-buffer rings (Linux 5.19)",
                "no multishot receive: each RECV names its own registered buffer",
            ),
            (
                &r.sparse_files,
                "sparse fixed-file tables (Linux 5.19)",
                "the fixed-file table is registered full of -1 placeholders",
            ),
        ];
        for (outcome, what, instead) in registrations {
            if !outcome.is_supported() {
                add(what.into(), instead.into());
            }
        }
        if let Some(advice) = self.memlock.advice() {
            add("an unlimited RLIMIT_MEMLOCK".into(), advice);
        }
        found
    }
}
