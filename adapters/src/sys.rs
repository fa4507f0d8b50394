//! Thin wrappers over the eventfd and epoll system calls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `timeout` in whole milliseconds for poll and epoll_wait: -1 for none, rounded up so that a
/// timeout under a millisecond sleeps rather than spins until its deadline.
fn millis(timeout: Option<Duration>) -> libc::c_int {
    timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int
    })
}

/// A new descriptor for the file `fd` names (`F_DUPFD_CLOEXEC`), owned by the caller. A number
/// that names no open file fails with `EBADF`; nothing is assumed about who owns `fd`.
pub(crate) fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: a plain fcntl on a number; the kernel checks it, and no memory is passed.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `new` was just created by the kernel for this call and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A non-blocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant flags.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resets an eventfd's counter; returns whether it was signalled.
pub(crate) fn eventfd_drain(fd: &OwnedFd) -> bool {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a valid u64 on a non-blocking eventfd.
    let n = unsafe { libc::read(fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    n == 8
}

/// Adds 1 to an eventfd's counter, waking its pollers. A counter at its maximum (the write
/// refused with `EAGAIN`) is signalled already, so the result is not needed.
pub(crate) fn eventfd_signal(fd: RawFd) {
    let v = 1u64;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    let _ = unsafe { libc::write(fd, &v as *const u64 as *const libc::c_void, 8) };
}

/// Waits until `fd` is readable or `timeout` passes; returns whether it became readable.
pub(crate) fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    match cvt(unsafe { libc::poll(&mut p, 1, millis(timeout)) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// An epoll instance.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: freshly created and unowned.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for readability (level-triggered), tagged with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: a valid epoll fd and event struct.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Waits for any watched fd; returns how many are ready (0 on timeout or signal).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<usize> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
        // SAFETY: `evs` is valid for 16 entries.
        let rc =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), 16, millis(timeout)) };
        match cvt(rc) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_rounds_up_to_whole_milliseconds() {
        assert_eq!(millis(None), -1);
        assert_eq!(millis(Some(Duration::ZERO)), 0);
        assert_eq!(millis(Some(Duration::from_micros(500))), 1);
        assert_eq!(millis(Some(Duration::from_micros(2_001))), 3);
        assert_eq!(millis(Some(Duration::from_millis(2))), 2);
        assert_eq!(millis(Some(Duration::MAX)), libc::c_int::MAX);
    }
}
