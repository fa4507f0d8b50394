//! Whether this process may use io_uring at all, and if not, why.

use std::fmt;

use serde::Serialize;

use super::outcome::describe;
use super::procfs::{ProcStatus, Sysctl, CAP_SYS_ADMIN};

/// Whether `io_uring_setup(2)` works for this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IoUringStatus {
    /// A ring was created.
    Enabled,
    /// `io_uring_setup` failed.
    Disabled {
        /// The errno it returned.
        errno: Option<i32>,
        /// The error as text.
        error: String,
        /// The cause, worked out from the errno, the sysctls and `/proc/self/status`.
        reason: DisabledReason,
    },
}

/// Why `io_uring_setup(2)` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// `kernel.io_uring_disabled = 2`: nobody may create rings.
    SysctlDisabled,
    /// `kernel.io_uring_disabled = 1`, and this process is neither in `kernel.io_uring_group`
    /// nor holds `CAP_SYS_ADMIN`.
    SysctlRestricted,
    /// A seccomp filter (a container runtime's, typically) denies the io_uring system calls.
    Seccomp,
    /// `ENOSYS` with no seccomp filter: the kernel was built without `CONFIG_IO_URING`.
    NotBuiltIn,
    /// `ENOMEM`: kernels before 5.12 charge the rings themselves to `RLIMIT_MEMLOCK`.
    Memlock,
    /// None of the above explains the error.
    Unexplained,
}

impl IoUringStatus {
    /// Classifies the error from a failed `io_uring_setup`.
    pub(super) fn disabled(err: &std::io::Error, sysctl: &Sysctl, status: &ProcStatus) -> Self {
        IoUringStatus::Disabled {
            errno: err.raw_os_error(),
            error: describe(err),
            reason: diagnose(err.raw_os_error(), sysctl, status),
        }
    }

    /// Whether rings can be created.
    pub fn is_enabled(&self) -> bool {
        matches!(self, IoUringStatus::Enabled)
    }
}

/// Works out why `io_uring_setup` failed with `errno`.
fn diagnose(errno: Option<i32>, sysctl: &Sysctl, status: &ProcStatus) -> DisabledReason {
    let filtered = status.seccomp == Some(2);
    let allowed_by_group = sysctl
        .io_uring_group
        .and_then(|g| u32::try_from(g).ok())
        .is_some_and(|g| status.in_group(g));
    match (errno, sysctl.io_uring_disabled) {
        (Some(libc::EPERM), Some(2)) => DisabledReason::SysctlDisabled,
        (Some(libc::EPERM), Some(1))
            if !allowed_by_group && !status.has_capability(CAP_SYS_ADMIN) =>
        {
            DisabledReason::SysctlRestricted
        }
        (Some(libc::EPERM | libc::ENOSYS), _) if filtered => DisabledReason::Seccomp,
        (Some(libc::ENOSYS), _) => DisabledReason::NotBuiltIn,
        (Some(libc::ENOMEM), _) => DisabledReason::Memlock,
        _ => DisabledReason::Unexplained,
    }
}

impl DisabledReason {
    /// What to change so that regio can run.
    pub fn remedy(self) -> &'static str {
        match self {
            DisabledReason::SysctlDisabled => {
                "io_uring is disabled for everyone by sysctl; run `sysctl -w kernel.io_uring_disabled=0`"
            }
            DisabledReason::SysctlRestricted => {
                "io_uring is restricted to the group in kernel.io_uring_group and to CAP_SYS_ADMIN; \
                 add this user to that group or run `sysctl -w kernel.io_uring_disabled=0`"
            }
            DisabledReason::Seccomp => {
                "a seccomp filter denies io_uring (Docker's and Podman's default profiles do); \
                 run the container with a profile that allows io_uring_setup, io_uring_enter and \
                 io_uring_register"
            }
            DisabledReason::NotBuiltIn => {
                "this kernel was built without CONFIG_IO_URING; use a kernel that has it"
            }
            DisabledReason::Memlock => {
                "this kernel charges rings to RLIMIT_MEMLOCK; raise it (`ulimit -l`) or use Linux 5.12 or newer"
            }
            DisabledReason::Unexplained => {
                "neither the sysctls nor seccomp explain it; see the errno above"
            }
        }
    }
}

impl fmt::Display for IoUringStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoUringStatus::Enabled => f.write_str("enabled (io_uring_setup created a ring)"),
            IoUringStatus::Disabled { error, reason, .. } => {
                write!(
                    f,
                    "DISABLED: io_uring_setup failed with {error}; {}",
                    reason.remedy()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(seccomp: u8, cap_eff: u64, groups: Vec<u32>) -> ProcStatus {
        ProcStatus {
            seccomp: Some(seccomp),
            seccomp_filters: Some(u32::from(seccomp == 2)),
            cap_eff,
            fs_gid: Some(1000),
            groups,
            first_allowed_cpu: Some(0),
        }
    }

    fn sysctl(disabled: u8, group: i64) -> Sysctl {
        Sysctl {
            io_uring_disabled: Some(disabled),
            io_uring_group: Some(group),
        }
    }

    const ADMIN: u64 = 1 << CAP_SYS_ADMIN;

    #[test]
    fn sysctl_two_disables_everyone() {
        let r = diagnose(Some(libc::EPERM), &sysctl(2, -1), &status(0, ADMIN, vec![]));
        assert_eq!(r, DisabledReason::SysctlDisabled);
    }

    #[test]
    fn sysctl_one_restricts_to_the_group() {
        let outsider = status(0, 0, vec![]);
        let r = diagnose(Some(libc::EPERM), &sysctl(1, 2000), &outsider);
        assert_eq!(r, DisabledReason::SysctlRestricted);
        // A member or an admin is let in, so an EPERM must come from elsewhere.
        let member = status(0, 0, vec![2000]);
        let r = diagnose(Some(libc::EPERM), &sysctl(1, 2000), &member);
        assert_eq!(r, DisabledReason::Unexplained);
        let r = diagnose(Some(libc::EPERM), &sysctl(1, -1), &status(2, ADMIN, vec![]));
        assert_eq!(r, DisabledReason::Seccomp);
    }

    #[test]
    fn a_filter_with_the_sysctl_open_is_seccomp() {
        for errno in [libc::EPERM, libc::ENOSYS] {
            let r = diagnose(Some(errno), &sysctl(0, -1), &status(2, 0, vec![]));
            assert_eq!(r, DisabledReason::Seccomp);
        }
        let old_kernel = Sysctl {
            io_uring_disabled: None,
            io_uring_group: None,
        };
        let r = diagnose(Some(libc::ENOSYS), &old_kernel, &status(2, 0, vec![]));
        assert_eq!(r, DisabledReason::Seccomp);
    }

    #[test]
    fn enosys_without_a_filter_means_not_built_in() {
        let r = diagnose(Some(libc::ENOSYS), &sysctl(0, -1), &status(0, 0, vec![]));
        assert_eq!(r, DisabledReason::NotBuiltIn);
    }

    #[test]
    fn enomem_names_memlock() {
        let r = diagnose(Some(libc::ENOMEM), &sysctl(0, -1), &status(0, 0, vec![]));
        assert_eq!(r, DisabledReason::Memlock);
    }
}
