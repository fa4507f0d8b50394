//! [`EventFdBell`]: a worker's doorbell, which is its completion queues' own eventfds.
//!
//! The adapter registers an eventfd on each ring (`IORING_REGISTER_EVENTFD`), which the kernel
//! signals when it posts completions (and, in single-issuer mode, when it defers task work to
//! the owner). An eventfd is a counter: any write makes it readable, whoever wrote. A worker has
//! one ring of every adapter, so its bell holds the eventfd of each: it sleeps in `ppoll` on all
//! of them, and wakes for a completion on any of its rings; other threads ring the first one.
//! So one set of fds serves both wake-ups (`tests/tasks.rs` checks that a remote spawn wakes a
//! parked worker through it, `tests/adapters.rs` that a completion on a second adapter does).
//!
//! The park handshake (module `park`) clears the bell before its last look at the rings, so a
//! completion on any ring either is found by that look or signals its eventfd after the clear
//! and ends the sleep.
//!
//! The bell holds its own duplicate of each fd (`F_DUPFD_CLOEXEC`), which names the same
//! eventfd: a waker that rings after the runtime has gone writes to an eventfd that is still
//! open, never to a number some other file has taken since.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::park::Doorbell;
use crate::spec::MAX_ADAPTERS;

/// Duplicates of a worker's completion queues' eventfds, as one [`Doorbell`].
#[derive(Debug)]
pub(crate) struct EventFdBell {
    /// At least one: `ring` writes the first.
    fds: Box<[OwnedFd]>,
}

impl EventFdBell {
    /// Duplicates `fds`, the eventfds of a worker's completion queues
    /// (`Ring::notify_fd`), one per adapter.
    ///
    /// # Panics
    ///
    /// If `fds` is empty or longer than [`MAX_ADAPTERS`] (a worker has a ring of each adapter,
    /// and the builder allows from 1 to that many).
    pub(crate) fn duplicate(fds: impl IntoIterator<Item = RawFd>) -> io::Result<Self> {
        let fds = fds
            .into_iter()
            .map(|fd| {
                // SAFETY: the caller's completion queues keep each `fd` open for the length of
                // this call; the borrow ends before it returns.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                borrowed.try_clone_to_owned()
            })
            .collect::<io::Result<Box<[OwnedFd]>>>()?;
        assert!(
            (1..=MAX_ADAPTERS).contains(&fds.len()),
            "a bell has one eventfd per adapter"
        );
        Ok(Self { fds })
    }
}

impl Doorbell for EventFdBell {
    fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this bell owns (there is at least
        // one). A counter at its maximum refuses with EAGAIN, and is readable already, which is
        // all a ring asks.
        let _ = unsafe { libc::write(self.fds[0].as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        for fd in self.fds.iter() {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64. The adapter made the eventfd non-blocking
            // (the flag belongs to the open file, which the duplicate shares), so an unsignalled
            // counter fails with EAGAIN instead of blocking.
            let _ = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
    }

    fn wait(&self, timeout: Option<Duration>) {
        // On the stack: a bell has at most one eventfd per adapter.
        let mut pfds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; MAX_ADAPTERS];
        for (pfd, fd) in pfds.iter_mut().zip(self.fds.iter()) {
            pfd.fd = fd.as_raw_fd();
        }
        let n = self.fds.len().min(MAX_ADAPTERS);
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `n` live pollfds, a timespec that outlives the call (or null for no
        // timeout), and no signal mask. An error (EINTR: a signal, or the kernel's task-work
        // notification) only ends the wait early, which the caller treats as a wake-up.
        let _ = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                n as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
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
        let bell = EventFdBell::duplicate([original.as_raw_fd()]).unwrap();
        bell.ring();
        let t = Instant::now();
        bell.wait(Some(Duration::from_secs(5)));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the ring did not wake the wait"
        );
        clear_and_assert_silent(&bell);
        drop(original);
        bell.ring();
        bell.wait(Some(Duration::from_secs(5)));
    }

    /// Clears `bell` and asserts that a wait of 20 ms on it then sleeps it out.
    fn clear_and_assert_silent(bell: &EventFdBell) {
        bell.clear();
        let t = Instant::now();
        bell.wait(Some(Duration::from_millis(20)));
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "a cleared bell still rang"
        );
    }

    fn signal(fd: &OwnedFd) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd the test owns.
        let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        assert_eq!(n, 8);
    }

    #[test]
    fn a_signal_on_any_eventfd_of_the_bell_wakes_its_wait_and_a_clear_forgets_them_all() {
        let (first, second) = (eventfd(), eventfd());
        let bell = EventFdBell::duplicate([first.as_raw_fd(), second.as_raw_fd()]).unwrap();
        signal(&second);
        let t = Instant::now();
        bell.wait(Some(Duration::from_secs(60)));
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a signal on the second eventfd did not wake the wait"
        );
        signal(&first);
        clear_and_assert_silent(&bell);
    }
}
