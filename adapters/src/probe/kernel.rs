//! The running kernel's identity, from `uname(2)`.

use std::io;
use std::mem::MaybeUninit;

use serde::Serialize;

/// The kernel that answered the probe, as `uname(2)` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelRelease {
    /// The full release string, for example `6.18.44-fc-v669`.
    pub release: String,
    /// The machine hardware name, for example `x86_64`.
    pub machine: String,
    /// The major version: `6` in `6.18.44`.
    pub major: u32,
    /// The minor version: `18` in `6.18.44`.
    pub minor: u32,
    /// The patch level: `44` in `6.18.44`, or 0 when the release has none.
    pub patch: u32,
}

impl KernelRelease {
    /// Asks the running kernel with `uname(2)`.
    pub fn current() -> io::Result<Self> {
        let mut uts = MaybeUninit::<libc::utsname>::uninit();
        // SAFETY: `uts` is valid for writes of one `utsname`, which is all that uname writes.
        if unsafe { libc::uname(uts.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: uname returned 0, so it filled in every field of the struct.
        let uts = unsafe { uts.assume_init() };
        let release = c_field(&uts.release);
        Self::parse(&release, c_field(&uts.machine)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("uname returned a release that is not <major>.<minor>...: {release:?}"),
            )
        })
    }

    /// Parses a release string such as `6.18.44-fc-v669`, `5.15.0-91-generic` or `6.8-rc1`.
    ///
    /// Returns `None` when there is no `<major>.<minor>` at its start.
    pub fn parse(release: &str, machine: String) -> Option<Self> {
        let mut parts = release.split('.').map(leading_number);
        let major = parts.next().flatten()?;
        let minor = parts.next().flatten()?;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self {
            release: release.to_owned(),
            machine,
            major,
            minor,
            patch,
        })
    }

    /// Whether this kernel is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// The number made of the digits that start `part`, if it starts with one.
fn leading_number(part: &str) -> Option<u32> {
    let end = part
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(part.len());
    part[..end].parse().ok()
}

/// A NUL-terminated `utsname` field as a string.
fn c_field(field: &[libc::c_char]) -> String {
    // `c_char` is `i8` or `u8` depending on the target; `as u8` keeps the byte either way.
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(release: &str) -> Option<(u32, u32, u32)> {
        KernelRelease::parse(release, "x86_64".into()).map(|k| (k.major, k.minor, k.patch))
    }

    #[test]
    fn parses_common_release_strings() {
        assert_eq!(parse("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse("5.15.0-91-generic"), Some((5, 15, 0)));
        assert_eq!(parse("6.8-rc1"), Some((6, 8, 0)));
        assert_eq!(parse("6.1"), Some((6, 1, 0)));
        assert_eq!(parse("4.19.0+"), Some((4, 19, 0)));
    }

    #[test]
    fn rejects_releases_without_major_and_minor() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("6"), None);
        assert_eq!(parse("linux-6.1"), None);
        assert_eq!(parse("6.x"), None);
    }

    #[test]
    fn compares_versions() {
        let k = KernelRelease::parse("6.12.3", String::new()).unwrap();
        assert!(k.at_least(6, 12));
        assert!(k.at_least(5, 19));
        assert!(!k.at_least(6, 13));
        assert!(!k.at_least(7, 0));
    }

    #[test]
    fn reads_the_running_kernel() {
        let k = KernelRelease::current().unwrap();
        assert!(k.major >= 2, "{k:?}");
        assert!(!k.machine.is_empty());
    }
}
