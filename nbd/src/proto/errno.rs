//! The error values of transmission replies, and the mapping from host errors to them.

use std::fmt;
use std::io;

use super::consts::{
    NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM,
    NBD_ESHUTDOWN,
};

/// An NBD error value: the only values the spec allows in a reply's error field.
///
/// The variants carry the errno names the spec uses (`NBD_EPERM` is [`Errno::EPERM`]); their
/// wire values are the spec's, which are Linux's, whatever the host.
#[allow(clippy::upper_case_acronyms)] // the errno names everyone reads, as the spec spells them
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// `NBD_EPERM` (1): operation not permitted, e.g. a write to a read-only export.
    EPERM,
    /// `NBD_EIO` (5): input/output error.
    EIO,
    /// `NBD_ENOMEM` (12): cannot allocate memory (the spec asks servers to avoid it).
    ENOMEM,
    /// `NBD_EINVAL` (22): invalid argument; also what clients assume for unknown values.
    EINVAL,
    /// `NBD_ENOSPC` (28): no space left on device, e.g. a write past the end of the export.
    ENOSPC,
    /// `NBD_EOVERFLOW` (75): value too large; only for oversized reads and payload-free commands.
    EOVERFLOW,
    /// `NBD_ENOTSUP` (95): operation not supported; only for `NBD_CMD_FLAG_FAST_ZERO`.
    ENOTSUP,
    /// `NBD_ESHUTDOWN` (108): the server is shutting down.
    ESHUTDOWN,
}

impl Errno {
    /// The value sent in a reply's error field.
    pub const fn code(self) -> u32 {
        match self {
            Self::EPERM => NBD_EPERM,
            Self::EIO => NBD_EIO,
            Self::ENOMEM => NBD_ENOMEM,
            Self::EINVAL => NBD_EINVAL,
            Self::ENOSPC => NBD_ENOSPC,
            Self::EOVERFLOW => NBD_EOVERFLOW,
            Self::ENOTSUP => NBD_ENOTSUP,
            Self::ESHUTDOWN => NBD_ESHUTDOWN,
        }
    }

    /// The error of a nonzero wire value. The spec tells clients to treat a value it does not
    /// define as `NBD_EINVAL`, so that is what an unknown value becomes; zero (no error) is
    /// `None`.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => return None,
            NBD_EPERM => Self::EPERM,
            NBD_EIO => Self::EIO,
            NBD_ENOMEM => Self::ENOMEM,
            NBD_ENOSPC => Self::ENOSPC,
            NBD_EOVERFLOW => Self::EOVERFLOW,
            NBD_ENOTSUP => Self::ENOTSUP,
            NBD_ESHUTDOWN => Self::ESHUTDOWN,
            _ => Self::EINVAL,
        })
    }

    /// The NBD error for a host `errno` value from a failed storage operation.
    ///
    /// `EPERM`, `EACCES` and `EROFS` become `NBD_EPERM`; `EIO`, `ENOMEM` and `EINVAL` keep their
    /// meaning; `ENOSPC`, and `EDQUOT` and `EFBIG` as the spec asks, become `NBD_ENOSPC`. Every
    /// other value becomes `NBD_EINVAL`, the value the spec tells clients to read an unknown
    /// error as. `NBD_EOVERFLOW`, `NBD_ENOTSUP` and `NBD_ESHUTDOWN` are never produced here: the
    /// spec allows each only in one situation (an oversized request, a fast-zero request that
    /// would not be fast, a server shutting down), which the server names itself.
    pub const fn from_os_error(errno: i32) -> Self {
        match errno {
            libc::EPERM | libc::EACCES | libc::EROFS => Self::EPERM,
            libc::EIO => Self::EIO,
            libc::ENOMEM => Self::ENOMEM,
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => Self::ENOSPC,
            _ => Self::EINVAL,
        }
    }
}

impl From<&io::Error> for Errno {
    /// Maps by [`Errno::from_os_error`] when the error carries an OS error code, otherwise by its
    /// kind: permission, memory, space and short-transfer kinds map to their NBD errors, every
    /// other kind to `NBD_EINVAL`.
    fn from(error: &io::Error) -> Self {
        if let Some(errno) = error.raw_os_error() {
            return Self::from_os_error(errno);
        }
        match error.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => Self::EPERM,
            io::ErrorKind::OutOfMemory => Self::ENOMEM,
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge => Self::ENOSPC,
            io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => Self::EIO,
            _ => Self::EINVAL,
        }
    }
}

impl From<io::Error> for Errno {
    fn from(error: io::Error) -> Self {
        Self::from(&error)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::EPERM => "operation not permitted",
            Self::EIO => "input/output error",
            Self::ENOMEM => "cannot allocate memory",
            Self::EINVAL => "invalid argument",
            Self::ENOSPC => "no space left on device",
            Self::EOVERFLOW => "value too large",
            Self::ENOTSUP => "operation not supported",
            Self::ESHUTDOWN => "server is shutting down",
        };
        write!(f, "NBD_{self:?} ({}): {text}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Errno; 8] = [
        Errno::EPERM,
        Errno::EIO,
        Errno::ENOMEM,
        Errno::EINVAL,
        Errno::ENOSPC,
        Errno::EOVERFLOW,
        Errno::ENOTSUP,
        Errno::ESHUTDOWN,
    ];

    #[test]
    fn wire_values_are_the_spec_values() {
        let codes: Vec<u32> = ALL.iter().map(|errno| errno.code()).collect();
        assert_eq!(codes, [1, 5, 12, 22, 28, 75, 95, 108]);
        for errno in ALL {
            assert_eq!(Errno::from_code(errno.code()), Some(errno));
        }
    }

    #[test]
    fn zero_is_success_and_unknown_values_read_as_einval() {
        assert_eq!(Errno::from_code(0), None);
        assert_eq!(Errno::from_code(2), Some(Errno::EINVAL));
        assert_eq!(Errno::from_code(u32::MAX), Some(Errno::EINVAL));
    }

    #[test]
    fn host_errors_map_as_the_spec_asks() {
        assert_eq!(Errno::from_os_error(libc::EACCES), Errno::EPERM);
        assert_eq!(Errno::from_os_error(libc::EROFS), Errno::EPERM);
        assert_eq!(Errno::from_os_error(libc::EIO), Errno::EIO);
        assert_eq!(Errno::from_os_error(libc::EDQUOT), Errno::ENOSPC);
        assert_eq!(Errno::from_os_error(libc::EFBIG), Errno::ENOSPC);
        assert_eq!(Errno::from_os_error(libc::EOPNOTSUPP), Errno::EINVAL);
        assert_eq!(Errno::from_os_error(libc::EOVERFLOW), Errno::EINVAL);
        assert_eq!(Errno::from_os_error(libc::EBADF), Errno::EINVAL);
    }

    #[test]
    fn io_errors_map_by_code_then_kind() {
        assert_eq!(
            Errno::from(io::Error::from_raw_os_error(libc::ENOSPC)),
            Errno::ENOSPC
        );
        assert_eq!(
            Errno::from(io::Error::from(io::ErrorKind::PermissionDenied)),
            Errno::EPERM
        );
        assert_eq!(
            Errno::from(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Errno::EIO
        );
        assert_eq!(Errno::from(io::Error::other("backend gone")), Errno::EINVAL);
    }

    #[test]
    fn display_names_the_spec_constant() {
        assert_eq!(
            Errno::ENOSPC.to_string(),
            "NBD_ENOSPC (28): no space left on device"
        );
    }
}
