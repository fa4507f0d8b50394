//! `RLIMIT_MEMLOCK`, which caps how much memory registered buffers may pin.

use std::fmt;
use std::io;

use serde::Serialize;

/// The memory-lock limit as it applies to io_uring buffer registration.
///
/// The kernel charges every registered buffer's pinned pages to the user's locked memory and
/// refuses a registration beyond the soft limit with `ENOMEM`, unless the process holds
/// `CAP_IPC_LOCK`, in which case nothing is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemlockLimit {
    /// The soft limit in bytes; `None` means unlimited.
    pub soft: Option<u64>,
    /// The hard limit in bytes; `None` means unlimited.
    pub hard: Option<u64>,
    /// Whether this process holds `CAP_IPC_LOCK`, which makes the limit moot.
    pub cap_ipc_lock: bool,
}

impl MemlockLimit {
    /// Reads `RLIMIT_MEMLOCK` with `getrlimit(2)`.
    pub(super) fn read(cap_ipc_lock: bool) -> io::Result<Self> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` into `lim`, which is valid and exclusively ours.
        if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        Ok(MemlockLimit {
            soft: bytes(lim.rlim_cur),
            hard: bytes(lim.rlim_max),
            cap_ipc_lock,
        })
    }

    /// How many bytes of buffers this process may register in all, or `None` for no limit.
    pub fn registrable_bytes(&self) -> Option<u64> {
        if self.cap_ipc_lock {
            None
        } else {
            self.soft
        }
    }

    /// The limit and how to raise it, when the limit applies.
    pub fn advice(&self) -> Option<String> {
        let soft = self.registrable_bytes()?;
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
        let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |b| Bytes(b).to_string());
        write!(f, "soft {}, hard {}", show(self.soft), show(self.hard))?;
        if self.cap_ipc_lock {
            f.write_str("; CAP_IPC_LOCK is held, so the limit does not apply")?;
        }
        Ok(())
    }
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
        assert_eq!(lim.registrable_bytes(), None);
        assert_eq!(lim.advice(), None);
    }

    #[test]
    fn advises_raising_a_limited_soft_limit() {
        let lim = MemlockLimit {
            soft: Some(64 << 10),
            hard: Some(1 << 30),
            cap_ipc_lock: false,
        };
        assert_eq!(lim.registrable_bytes(), Some(64 << 10));
        let advice = lim.advice().unwrap();
        assert!(advice.contains("64 KiB"), "{advice}");
        assert!(advice.contains("ulimit -l 1048576"), "{advice}");
    }

    #[test]
    fn reads_the_limit() {
        let lim = MemlockLimit::read(false).unwrap();
        if let (Some(soft), Some(hard)) = (lim.soft, lim.hard) {
            assert!(soft <= hard);
        }
    }
}
