//! Waiting for SIGINT or SIGTERM: both are blocked in every thread (the mask is set before
//! any thread starts, and threads inherit it), and one thread takes them with `sigwait`.

use std::io;

/// The set of SIGINT and SIGTERM.
fn set() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initializes the set it is given; `sigaddset` adds valid signals to
    // an initialized set. The zeroed value is only storage for `sigemptyset` to fill.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts later.
///
/// # Errors
///
/// As for `pthread_sigmask`.
pub fn block() -> io::Result<()> {
    let set = set();
    // SAFETY: `set` is an initialized signal set; a null old set is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM (blocked by [`block`]) and returns its number.
///
/// # Errors
///
/// As for `sigwait`.
pub fn wait() -> io::Result<i32> {
    let set = set();
    let mut signal = 0;
    // SAFETY: `set` is initialized and `signal` is a valid place for the result.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(signal)
}
