//! The human-readable report that `regio probe` prints.

use std::fmt;

use super::procfs::CAP_SYS_ADMIN;
use super::{KernelProbe, Outcome};

/// The mark in front of each line: whether the kernel said yes.
fn mark(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "NO "
    }
}

impl fmt::Display for KernelProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "regio probe: io_uring on this machine, as the kernel answered"
        )?;
        writeln!(f)?;
        let k = &self.kernel;
        writeln!(f, "Kernel      Linux {} ({})", k.release, k.machine)?;
        writeln!(f, "io_uring    {}", self.io_uring)?;
        let knob = |v: Option<String>| v.unwrap_or_else(|| "absent (before Linux 6.6)".into());
        writeln!(
            f,
            "            sysctl kernel.io_uring_disabled = {}, kernel.io_uring_group = {}",
            knob(self.sysctl.io_uring_disabled.map(|v| v.to_string())),
            knob(self.sysctl.io_uring_group.map(|v| v.to_string())),
        )?;
        let seccomp = match self.process.seccomp {
            None => "not in this kernel".to_owned(),
            Some(0) => "none (Seccomp: 0)".to_owned(),
            Some(1) => "strict mode (Seccomp: 1)".to_owned(),
            Some(mode) => format!(
                "filtered (Seccomp: {mode}, {} filter(s))",
                self.process.seccomp_filters.unwrap_or(0)
            ),
        };
        if self.sysctl.io_uring_disabled == Some(1) && self.io_uring.is_enabled() {
            let through = if self.process.has_capability(CAP_SYS_ADMIN) {
                "CAP_SYS_ADMIN"
            } else {
                "membership of kernel.io_uring_group"
            };
            writeln!(
                f,
                "            restricted by the sysctl; allowed here through {through}"
            )?;
        }
        writeln!(f, "            seccomp {seccomp}")?;

        if self.io_uring.is_enabled() {
            self.fmt_rings(f)?;
        }

        writeln!(f)?;
        writeln!(
            f,
            "Locked memory (RLIMIT_MEMLOCK, charged for registered buffers)"
        )?;
        writeln!(f, "  {}", self.memlock)?;

        writeln!(f)?;
        writeln!(f, "What regio will do")?;
        if self.degradations.is_empty() {
            writeln!(
                f,
                "  Everything regio uses is here: SQPOLL rings sharing one thread per adapter, \
                 buffers registered once and cloned into every ring, provided-buffer rings and \
                 zero-copy sends."
            )?;
        }
        for d in &self.degradations {
            writeln!(f, "  - missing {}:", d.missing)?;
            writeln!(f, "      {}", d.instead)?;
        }
        Ok(())
    }
}

impl KernelProbe {
    /// The sections that exist only when rings can be created.
    fn fmt_rings(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "Setup flags (a ring was created with each)")?;
        for r in &self.setup_flags {
            write!(
                f,
                "  {}  {:<14} ",
                mark(r.outcome.is_supported()),
                r.flag.name()
            )?;
            match &r.outcome {
                Outcome::Supported => writeln!(f, "tried {}", r.tried)?,
                other => writeln!(f, "{other}; tried {}", r.tried)?,
            }
        }

        writeln!(f)?;
        writeln!(f, "Ring features (IORING_FEAT_* from io_uring_setup)")?;
        for feat in &self.features {
            writeln!(f, "  {}  {}", mark(feat.present), feat.name)?;
        }

        writeln!(f)?;
        match &self.opcode_probe {
            Outcome::Supported => writeln!(
                f,
                "Opcodes regio uses (IORING_REGISTER_PROBE: {} opcodes supported in all)",
                self.supported_opcodes.len()
            )?,
            other => writeln!(f, "Opcodes: IORING_REGISTER_PROBE {other}")?,
        }
        for o in &self.opcodes {
            let op = o.opcode;
            writeln!(
                f,
                "  {}  {:<13} {:>2}  since {:<5} {}",
                mark(o.supported),
                op.name,
                op.code,
                op.since,
                op.used_for
            )?;
        }

        writeln!(f)?;
        writeln!(f, "Registrations (each tried on fresh rings)")?;
        let r = &self.registrations;
        for (outcome, what) in [
            (
                &r.fixed_buffers,
                "fixed buffers       IORING_REGISTER_BUFFERS, one page",
            ),
            (
                &r.clone_buffers,
                "buffer cloning      IORING_REGISTER_CLONE_BUFFERS, into a second ring",
            ),
            (
                &r.pbuf_ring,
                "provided buffers    IORING_REGISTER_PBUF_RING, an 8-entry ring",
            ),
            (
                &r.sparse_files,
                "sparse fixed files  IORING_REGISTER_FILES2 (SPARSE), 16 slots",
            ),
        ] {
            write!(f, "  {}  {what}", mark(outcome.is_supported()))?;
            match outcome {
                Outcome::Supported => writeln!(f)?,
                other => writeln!(f, ": {other}")?,
            }
        }
        Ok(())
    }
}
