//! Facts read from procfs: this process's `/proc/self/status`, and the io_uring sysctls.

use std::io;

use serde::Serialize;

use super::ProbeError;

/// `CAP_IPC_LOCK`: lets a process lock memory beyond `RLIMIT_MEMLOCK`.
pub(super) const CAP_IPC_LOCK: u32 = 14;
/// `CAP_SYS_ADMIN`: lets a process use io_uring when the sysctl restricts it to a group.
pub(super) const CAP_SYS_ADMIN: u32 = 21;

const STATUS_PATH: &str = "/proc/self/status";
const DISABLED_PATH: &str = "/proc/sys/kernel/io_uring_disabled";
const GROUP_PATH: &str = "/proc/sys/kernel/io_uring_group";

/// The lines of `/proc/self/status` that the probe needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcStatus {
    /// `Seccomp:`: 0 none, 1 strict, 2 filter. `None` when the kernel lacks seccomp.
    pub seccomp: Option<u8>,
    /// `Seccomp_filters:`: how many seccomp filters this process runs under.
    pub seccomp_filters: Option<u32>,
    /// `CapEff:`: the effective capability set, one bit per capability.
    pub cap_eff: u64,
    /// The filesystem group id (the last field of `Gid:`), which the kernel's group checks use.
    pub fs_gid: Option<u32>,
    /// `Groups:`: the supplementary groups.
    pub groups: Vec<u32>,
    /// The first CPU in `Cpus_allowed_list:`, where an SQPOLL thread may be pinned.
    pub first_allowed_cpu: Option<u32>,
}

impl ProcStatus {
    /// Reads `/proc/self/status`.
    pub fn read() -> Result<Self, ProbeError> {
        let text = read(STATUS_PATH)?;
        Self::parse(&text).ok_or(ProbeError::Parse {
            path: STATUS_PATH,
            content: text,
        })
    }

    /// Parses the text of a `/proc/<pid>/status` file. Returns `None` without a `CapEff:` line.
    pub fn parse(text: &str) -> Option<Self> {
        let mut status = ProcStatus::default();
        let mut cap_eff = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Seccomp" => status.seccomp = value.parse().ok(),
                "Seccomp_filters" => status.seccomp_filters = value.parse().ok(),
                "CapEff" => cap_eff = u64::from_str_radix(value, 16).ok(),
                "Gid" => status.fs_gid = value.split_whitespace().last()?.parse().ok(),
                "Groups" => {
                    status.groups = value
                        .split_whitespace()
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .ok()?
                }
                "Cpus_allowed_list" => status.first_allowed_cpu = first_cpu(value),
                _ => {}
            }
        }
        status.cap_eff = cap_eff?;
        Some(status)
    }

    /// Whether `cap` (a `CAP_*` number) is in the effective set.
    pub fn has_capability(&self, cap: u32) -> bool {
        cap < 64 && self.cap_eff & (1 << cap) != 0
    }

    /// Whether this process is in group `gid`, as the kernel's `in_group_p` decides it.
    pub fn in_group(&self, gid: u32) -> bool {
        self.fs_gid == Some(gid) || self.groups.contains(&gid)
    }
}

/// The first CPU of a CPU list such as `0-3,8`.
fn first_cpu(list: &str) -> Option<u32> {
    let first = list.split([',', '-']).next()?;
    first.trim().parse().ok()
}

/// The io_uring sysctls, `kernel.io_uring_disabled` and `kernel.io_uring_group` (Linux 6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    /// 0: anyone may create rings; 1: only members of `io_uring_group` and holders of
    /// `CAP_SYS_ADMIN`; 2: nobody. `None` on kernels before 6.6, which lack the knob.
    pub io_uring_disabled: Option<u8>,
    /// The group allowed when `io_uring_disabled` is 1; -1 means none.
    pub io_uring_group: Option<i64>,
}

impl Sysctl {
    /// Reads both knobs; a knob the kernel lacks reads as `None`.
    pub fn read() -> Result<Self, ProbeError> {
        Ok(Self {
            io_uring_disabled: read_knob(DISABLED_PATH)?,
            io_uring_group: read_knob(GROUP_PATH)?,
        })
    }
}

/// Reads a numeric sysctl, or `None` when this kernel has no such file.
fn read_knob<T: std::str::FromStr>(path: &'static str) -> Result<Option<T>, ProbeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ProbeError::Parse {
                path,
                content: text,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProbeError::Procfs { path, source }),
    }
}

fn read(path: &'static str) -> Result<String, ProbeError> {
    std::fs::read_to_string(path).map_err(|source| ProbeError::Procfs { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_IN_VM: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\n\
        Gid:\t0\t0\t0\t0\nGroups:\t \nCapEff:\t000001fffeffffff\nNoNewPrivs:\t0\n\
        Seccomp:\t0\nSeccomp_filters:\t0\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";

    const CONTAINER: &str = "Gid:\t1000\t1000\t1000\t1001\nGroups:\t4 24 1000 \n\
        CapEff:\t0000000000000000\nSeccomp:\t2\nSeccomp_filters:\t1\n\
        Cpus_allowed_list:\t2,4-7\n";

    #[test]
    fn parses_a_root_status() {
        let s = ProcStatus::parse(ROOT_IN_VM).unwrap();
        assert_eq!(s.seccomp, Some(0));
        assert_eq!(s.seccomp_filters, Some(0));
        assert!(s.has_capability(CAP_IPC_LOCK));
        assert!(s.has_capability(CAP_SYS_ADMIN));
        assert_eq!(s.fs_gid, Some(0));
        assert!(s.groups.is_empty());
        assert_eq!(s.first_allowed_cpu, Some(0));
        assert!(s.in_group(0));
    }

    #[test]
    fn parses_a_filtered_unprivileged_status() {
        let s = ProcStatus::parse(CONTAINER).unwrap();
        assert_eq!(s.seccomp, Some(2));
        assert_eq!(s.seccomp_filters, Some(1));
        assert!(!s.has_capability(CAP_IPC_LOCK));
        assert!(!s.has_capability(CAP_SYS_ADMIN));
        assert_eq!(s.fs_gid, Some(1001));
        assert_eq!(s.groups, vec![4, 24, 1000]);
        assert!(s.in_group(24) && s.in_group(1001) && !s.in_group(0));
        assert_eq!(s.first_allowed_cpu, Some(2));
    }

    #[test]
    fn a_kernel_without_seccomp_leaves_it_unknown() {
        let s = ProcStatus::parse("CapEff:\t0000000000004000\n").unwrap();
        assert_eq!(s.seccomp, None);
        assert!(s.has_capability(CAP_IPC_LOCK));
        assert!(!s.has_capability(64));
    }

    #[test]
    fn rejects_a_status_without_capabilities() {
        assert_eq!(ProcStatus::parse("Name:\tx\nSeccomp:\t0\n"), None);
        assert_eq!(ProcStatus::parse("CapEff:\tzz\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcStatus::read().unwrap();
        assert!(s.first_allowed_cpu.is_some());
        let sysctl = Sysctl::read().unwrap();
        if let Some(v) = sysctl.io_uring_disabled {
            assert!(v <= 2, "{sysctl:?}");
        }
    }
}
