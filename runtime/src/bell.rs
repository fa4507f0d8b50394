//! [`EventFdBell`]: a worker's doorbell, which is its completion queue's own eventfd.
//!
//! The adapter registers an eventfd on each ring (`IORING_REGISTER_EVENTFD`), which the kernel
//! signals when it posts completions (and, in single-issuer mode, when it defers task work to
//! the owner). An eventfd is a counter: any write makes it readable, whoever wrote. So one fd
//! serves both wake-ups: a worker sleeps in `ppoll` on it and wakes for its completions and for
//! other threads' rings alike (`tests/runtime.rs` checks that a remote spawn wakes a parked
//! worker through it).
//!
//! The bell holds its own duplicate of the fd (`F_DUPFD_CLOEXEC`), which names the same
//! eventfd: a waker that rings after the runtime has gone writes to an eventfd that is still
//! open, never to a number some other file has taken since.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::park::Doorbell;

/// A duplicate of a completion queue's eventfd, as a [`Doorbell`].
#[derive(Debug)]
pub(crate) struct EventFdBell {
    fd: OwnedFd,
}

impl EventFdBell {
    /// Duplicates `fd`, a completion queue's eventfd (`CompletionQueue::notify_fd`).
    pub(crate) fn duplicate(fd: RawFd) -> io::Result<Self> {
        // SAFETY: the caller's completion queue keeps `fd` open for the length of this call;
        // the borrow ends before it returns.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        Ok(Self {
            fd: borrowed.try_clone_to_owned()?,
        })
    }
}

impl Doorbell for EventFdBell {
    fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this bell owns. A counter at its
        // maximum refuses with EAGAIN, and is readable already, which is all a ring asks.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a live u64. The adapter made the eventfd non-blocking (the
        // flag belongs to the open file, which the duplicate shares), so an unsignalled counter
        // fails with EAGAIN instead of blocking.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }

    fn wait(&self, timeout: Option<Duration>) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one live pollfd, a timespec that outlives the call (or null for no timeout),
        // and no signal mask. An error (EINTR: a signal, or the kernel's task-work
        // notification) only ends the wait early, which the caller treats as a wake-up.
        let _ = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Instant;

    use super::*;

    fn eventfd() -> OwnedFd {
        // SAFETY: a plain system call with constant flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: the fd was just created and nobody else owns it.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
    }

    #[test]
    fn a_ring_through_the_duplicate_wakes_a_wait_and_a_clear_forgets_it() {
        let original = eventfd();
        let bell = EventFdBell::duplicate(original.as_raw_fd()).unwrap();
        bell.ring();
        let t = Instant::now();
        bell.wait(Some(Duration::from_secs(5)));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the ring did not wake the wait"
        );
        bell.clear();
        let t = Instant::now();
        bell.wait(Some(Duration::from_millis(20)));
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "a cleared bell still rang"
        );
        drop(original);
        bell.ring();
        bell.wait(Some(Duration::from_secs(5)));
    }
}
