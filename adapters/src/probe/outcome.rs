//! The result of trying one kernel feature for real.

use std::fmt;
use std::io;

use serde::Serialize;

/// What happened when the probe tried a feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The kernel accepted it.
    Supported,
    /// The kernel refused it.
    Rejected {
        /// The errno the kernel returned, when there was one.
        errno: Option<i32>,
        /// The error as text, for example `EINVAL (Invalid argument)`.
        error: String,
    },
    /// It was not tried, because something it needs is missing.
    NotTried {
        /// What is missing.
        reason: String,
    },
}

impl Outcome {
    /// `Supported` for `Ok`, and `Rejected` with the errno for `Err`.
    pub(super) fn of<T>(result: io::Result<T>) -> Self {
        match result {
            Ok(_) => Outcome::Supported,
            Err(e) => Outcome::rejected(&e),
        }
    }

    /// `Rejected` with the errno of `e`.
    pub(super) fn rejected(e: &io::Error) -> Self {
        Outcome::Rejected {
            errno: e.raw_os_error(),
            error: describe(e),
        }
    }

    /// `NotTried` with a reason.
    pub(super) fn not_tried(reason: impl Into<String>) -> Self {
        Outcome::NotTried {
            reason: reason.into(),
        }
    }

    /// Whether the kernel accepted it.
    pub fn is_supported(&self) -> bool {
        matches!(self, Outcome::Supported)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Supported => f.write_str("yes"),
            Outcome::Rejected { error, .. } => write!(f, "no: {error}"),
            Outcome::NotTried { reason } => write!(f, "not tried: {reason}"),
        }
    }
}

/// An error as `NAME (message)`, for example `EINVAL (Invalid argument)`.
pub(super) fn describe(e: &io::Error) -> String {
    let Some(errno) = e.raw_os_error() else {
        return e.to_string();
    };
    // An OS error displays as "<message> (os error <n>)"; keep the message.
    let text = e.to_string();
    let message = text.split(" (os error").next().unwrap_or(&text);
    match errno_name(errno) {
        Some(name) => format!("{name} ({message})"),
        None => format!("errno {errno} ({message})"),
    }
}

/// The symbolic name of the errnos that io_uring setup and registration return.
pub(super) fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENXIO => "ENXIO",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_errno() {
        let o = Outcome::of::<()>(Err(io::Error::from_raw_os_error(libc::EINVAL)));
        assert_eq!(
            o,
            Outcome::Rejected {
                errno: Some(libc::EINVAL),
                error: "EINVAL (Invalid argument)".into()
            }
        );
        assert_eq!(o.to_string(), "no: EINVAL (Invalid argument)");
        assert!(Outcome::of(Ok(())).is_supported());
    }

    #[test]
    fn keeps_errors_without_an_errno() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "too many entries");
        assert_eq!(describe(&e), "too many entries");
    }
}
