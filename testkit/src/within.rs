//! A bound on how long a call may block.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Runs `f` on a thread of its own and returns its result, or fails the test if it takes more
/// than `limit`: a hang becomes a failure rather than a stuck test run. (The hung thread is left
/// behind; the test process ends with it.) Choose a generous `limit`: it catches hangs, it does
/// not measure speed.
///
/// # Panics
///
/// If `f` does not return within `limit`, or panics (`what` names it in the message).
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within {limit:?}: it hangs")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}
