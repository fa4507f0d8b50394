//! [`MemlockLimit`]: `RLIMIT_MEMLOCK`, which caps how much memory a process may lock (`mlock`)
//! or pin (io_uring's registered buffers).

use std::fmt;

/// The process's `RLIMIT_MEMLOCK` and whether it applies.
///
/// The kernel charges locked regions and every registered buffer's pinned pages against this
/// limit and refuses what goes beyond the soft limit (`ENOMEM`, or `EAGAIN` for `mlock`), unless
/// the process holds `CAP_IPC_LOCK`, in which case nothing is charged. The pool's errors carry
/// one, and the adapters' kernel probe reports one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MemlockLimit {
    /// The soft limit in bytes; `None` means unlimited.
    pub soft: Option<u64>,
    /// The hard limit in bytes; `None` means unlimited.
    pub hard: Option<u64>,
    /// Whether the calling thread holds `CAP_IPC_LOCK` (in its effective set), which makes the
    /// limit moot.
    pub cap_ipc_lock: bool,
}

impl MemlockLimit {
    /// Reads the limit (`getrlimit(2)`) and the capability (`capget(2)`) now. A limit that
    /// cannot be read is reported as 0 bytes, and a capability that cannot be read as absent.
    pub fn current() -> Self {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` writes one `rlimit` through a valid, exclusive pointer.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
        let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        Self {
            soft: if read { finite(lim.rlim_cur) } else { Some(0) },
            hard: if read { finite(lim.rlim_max) } else { Some(0) },
            cap_ipc_lock: holds_ipc_lock(),
        }
    }

    /// How many bytes this process may lock or pin in all, or `None` for no limit.
    pub fn lockable_bytes(&self) -> Option<u64> {
        if self.cap_ipc_lock {
            None
        } else {
            self.soft
        }
    }

    /// The limit and how to raise it, when the limit applies.
    pub fn advice(&self) -> Option<String> {
        let soft = self.lockable_bytes()?;
        let beyond = "set `LimitMEMLOCK=` (systemd) or `memlock` in /etc/security/limits.conf, \
                      or grant CAP_IPC_LOCK";
        let raise = match self.hard {
            None => "`ulimit -l unlimited` lifts it, since the hard limit is unlimited".to_owned(),
            Some(hard) if hard > soft => format!(
                "`ulimit -l {}` raises it to the hard limit; beyond that, {beyond}",
                hard / 1024
            ),
            Some(_) => format!("To raise it, {beyond}"),
        };
        Some(format!(
            "registered buffers may pin at most {} per user, and a larger message pool fails \
             with ENOMEM. {raise}.",
            Bytes(soft)
        ))
    }
}

impl fmt::Display for MemlockLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show =
            |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |b| format!("{b} bytes"));
        write!(
            f,
            "RLIMIT_MEMLOCK is {} (hard {})",
            show(self.soft),
            show(self.hard)
        )?;
        if self.cap_ipc_lock {
            f.write_str("; CAP_IPC_LOCK is held, so the limit does not apply")?;
        }
        Ok(())
    }
}

/// Whether the calling thread's effective capability set holds `CAP_IPC_LOCK` (`capget(2)`).
fn holds_ipc_lock() -> bool {
    use rustix::thread::{capabilities, CapabilitySet};
    capabilities(None).is_ok_and(|sets| sets.effective.contains(CapabilitySet::IPC_LOCK))
}

/// A byte count shown in the largest binary unit that divides it evenly.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["GiB", "MiB", "KiB", "B"];
        let mut value = self.0;
        let mut unit = 3;
        while unit > 0 && value >= 1024 && value % 1024 == 0 {
            value /= 1024;
            unit -= 1;
        }
        write!(f, "{value} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_bytes_in_whole_units() {
        assert_eq!(Bytes(8 << 20).to_string(), "8 MiB");
        assert_eq!(Bytes(65536).to_string(), "64 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 B");
        assert_eq!(Bytes(3 << 30).to_string(), "3 GiB");
        assert_eq!(Bytes(0).to_string(), "0 B");
    }

    #[test]
    fn capability_makes_the_limit_moot() {
        let lim = MemlockLimit {
            soft: Some(8 << 20),
            hard: Some(8 << 20),
            cap_ipc_lock: true,
        };
        assert_eq!(lim.lockable_bytes(), None);
        assert_eq!(lim.advice(), None);
        assert!(lim.to_string().ends_with("so the limit does not apply"));
    }

    #[test]
    fn advises_raising_a_limited_soft_limit() {
        let lim = MemlockLimit {
            soft: Some(64 << 10),
            hard: Some(1 << 30),
            cap_ipc_lock: false,
        };
        assert_eq!(lim.lockable_bytes(), Some(64 << 10));
        let advice = lim.advice().unwrap();
        assert!(advice.contains("64 KiB"), "{advice}");
        assert!(advice.contains("ulimit -l 1048576"), "{advice}");
        assert_eq!(
            lim.to_string(),
            "RLIMIT_MEMLOCK is 65536 bytes (hard 1073741824 bytes)"
        );
    }

    #[test]
    fn reads_the_limit() {
        let lim = MemlockLimit::current();
        if let (Some(soft), Some(hard)) = (lim.soft, lim.hard) {
            assert!(soft <= hard);
        }
    }
}
