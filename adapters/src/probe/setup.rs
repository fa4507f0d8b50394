//! The `io_uring_setup(2)` flags regio uses, each tried by creating a ring with it.

use std::fmt;
use std::os::fd::AsRawFd;

use io_uring::IoUring;
use serde::Serialize;

use super::outcome::Outcome;
use super::RING_ENTRIES;

/// How long the probe's SQPOLL threads spin before sleeping, in milliseconds.
const SQ_IDLE_MS: u32 = 10;

/// A setup flag regio relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SetupFlag {
    /// `IORING_SETUP_SQPOLL`: a kernel thread drains the submission queue.
    Sqpoll,
    /// `IORING_SETUP_SQ_AFF`: the SQPOLL thread is pinned to a CPU.
    SqAff,
    /// `IORING_SETUP_ATTACH_WQ`: a ring shares another ring's SQPOLL thread and io-wq.
    AttachWq,
    /// `IORING_SETUP_SINGLE_ISSUER`: only one task submits, so the kernel skips locking.
    SingleIssuer,
    /// `IORING_SETUP_DEFER_TASKRUN`: completion work runs only when the ring's owner waits.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN`: completion work does not interrupt the running task.
    CoopTaskrun,
}

impl SetupFlag {
    /// Every flag, in the order the probe tries and reports them.
    pub const ALL: [SetupFlag; 6] = [
        SetupFlag::Sqpoll,
        SetupFlag::SqAff,
        SetupFlag::AttachWq,
        SetupFlag::SingleIssuer,
        SetupFlag::DeferTaskrun,
        SetupFlag::CoopTaskrun,
    ];

    /// The flag's name without the `IORING_SETUP_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            SetupFlag::Sqpoll => "SQPOLL",
            SetupFlag::SqAff => "SQ_AFF",
            SetupFlag::AttachWq => "ATTACH_WQ",
            SetupFlag::SingleIssuer => "SINGLE_ISSUER",
            SetupFlag::DeferTaskrun => "DEFER_TASKRUN",
            SetupFlag::CoopTaskrun => "COOP_TASKRUN",
        }
    }

    /// The Linux version that brought the flag.
    pub fn since(self) -> &'static str {
        match self {
            SetupFlag::Sqpoll | SetupFlag::SqAff => "5.1 (5.11 without root)",
            SetupFlag::AttachWq => "5.6",
            SetupFlag::SingleIssuer => "6.0",
            SetupFlag::DeferTaskrun => "6.1",
            SetupFlag::CoopTaskrun => "5.19",
        }
    }

    /// What regio does when the kernel refuses the flag.
    pub fn instead(self) -> &'static str {
        match self {
            SetupFlag::Sqpoll => {
                "interrupt-driven submission: every batch of requests costs one io_uring_enter"
            }
            SetupFlag::SqAff => "the SQPOLL thread runs unpinned, wherever the scheduler puts it",
            SetupFlag::AttachWq => {
                "each ring gets its own SQPOLL thread and io-wq pool (more kernel threads per adapter)"
            }
            SetupFlag::SingleIssuer => "rings are created without it; the kernel keeps its locking",
            SetupFlag::DeferTaskrun => "COOP_TASKRUN, so completion work runs at the next syscall",
            SetupFlag::CoopTaskrun => {
                "plain rings: completion work may interrupt the task with an IPI"
            }
        }
    }
}

impl fmt::Display for SetupFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happened when the probe created a ring with one flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagResult {
    /// The flag.
    pub flag: SetupFlag,
    /// The exact setup that was tried, for example `SQPOLL|SQ_AFF (cpu 0)`.
    pub tried: String,
    /// What the kernel said.
    pub outcome: Outcome,
}

type Builder = io_uring::Builder<io_uring::squeue::Entry, io_uring::cqueue::Entry>;

/// Creates one ring per flag and records what the kernel said.
///
/// `cpu` is a CPU this process may run on, for `SQ_AFF`.
pub(super) fn try_all(cpu: Option<u32>) -> Vec<FlagResult> {
    let sqpoll = attempt(SetupFlag::Sqpoll, "SQPOLL".into(), |b| {
        b.setup_sqpoll(SQ_IDLE_MS);
    });
    let sqpoll_ok = sqpoll.outcome.is_supported();

    let sq_aff = match (sqpoll_ok, cpu) {
        (true, Some(cpu)) => attempt(
            SetupFlag::SqAff,
            format!("SQPOLL|SQ_AFF (cpu {cpu})"),
            |b| {
                b.setup_sqpoll(SQ_IDLE_MS).setup_sqpoll_cpu(cpu);
            },
        ),
        (false, _) => not_tried(SetupFlag::SqAff, "SQ_AFF needs SQPOLL"),
        (true, None) => not_tried(
            SetupFlag::SqAff,
            "no allowed CPU found in /proc/self/status",
        ),
    };

    let single = attempt(SetupFlag::SingleIssuer, "SINGLE_ISSUER".into(), |b| {
        b.setup_single_issuer();
    });
    let defer = if single.outcome.is_supported() {
        attempt(
            SetupFlag::DeferTaskrun,
            "SINGLE_ISSUER|DEFER_TASKRUN".into(),
            |b| {
                b.setup_single_issuer().setup_defer_taskrun();
            },
        )
    } else {
        not_tried(SetupFlag::DeferTaskrun, "DEFER_TASKRUN needs SINGLE_ISSUER")
    };
    let coop = attempt(SetupFlag::CoopTaskrun, "COOP_TASKRUN".into(), |b| {
        b.setup_coop_taskrun();
    });

    vec![sqpoll, sq_aff, attach_wq(sqpoll_ok), single, defer, coop]
}

/// Creates a ring, then a second ring attached to it. With SQPOLL, both rings poll, so the
/// second shares the first's SQPOLL thread, which is how an adapter's rings use it.
fn attach_wq(sqpoll: bool) -> FlagResult {
    let kind = if sqpoll { "SQPOLL ring" } else { "ring" };
    let tried = format!("a {kind} attached with ATTACH_WQ to another {kind}");
    let configure = |b: &mut Builder| {
        if sqpoll {
            b.setup_sqpoll(SQ_IDLE_MS);
        }
    };
    let mut first = IoUring::builder();
    configure(&mut first);
    let outcome = match first.build(RING_ENTRIES) {
        Ok(first) => {
            let mut second = IoUring::builder();
            configure(&mut second);
            second.setup_attach_wq(first.as_raw_fd());
            Outcome::of(second.build(RING_ENTRIES))
        }
        Err(e) => Outcome::not_tried(format!(
            "the first ring could not be created: {}",
            super::outcome::describe(&e)
        )),
    };
    FlagResult {
        flag: SetupFlag::AttachWq,
        tried,
        outcome,
    }
}

/// Creates (and at once drops) a ring set up by `configure`.
fn attempt(flag: SetupFlag, tried: String, configure: impl FnOnce(&mut Builder)) -> FlagResult {
    let mut builder = IoUring::builder();
    configure(&mut builder);
    FlagResult {
        flag,
        tried,
        outcome: Outcome::of(builder.build(RING_ENTRIES)),
    }
}

/// Every flag, none tried, for `reason`.
pub(super) fn not_tried_all(reason: &str) -> Vec<FlagResult> {
    SetupFlag::ALL
        .iter()
        .map(|&flag| not_tried(flag, reason))
        .collect()
}

fn not_tried(flag: SetupFlag, reason: &str) -> FlagResult {
    FlagResult {
        flag,
        tried: String::new(),
        outcome: Outcome::not_tried(reason),
    }
}
