//! The sleep loop shared by [`CompletionQueue::wait`](crate::CompletionQueue::wait) and
//! [`CqSet::wait`](crate::CqSet::wait): RIONotify with a wait.

use std::time::{Duration, Instant};

use crate::error::Error;

/// Reaps until something arrives or `timeout` passes, and returns how many were reaped (0 on
/// timeout).
///
/// When a reap finds nothing, the eventfds are drained and the CQs reaped once more before
/// sleeping: a completion posted between the first reap and the drain has already signalled the
/// eventfd, so without the second reap its wake-up would be lost.
///
/// A timeout too long to add to the current time (`Duration::MAX`) waits as if there were none.
pub(crate) fn reap_or_sleep(
    timeout: Option<Duration>,
    mut reap: impl FnMut() -> Result<usize, Error>,
    mut drain: impl FnMut(),
    mut sleep: impl FnMut(Option<Duration>) -> Result<(), Error>,
) -> Result<usize, Error> {
    // `checked_add`: `Instant + Duration::MAX` panics; a deadline past the clock's range is none.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let n = reap()?;
        if n > 0 {
            return Ok(n);
        }
        drain();
        let n = reap()?;
        if n > 0 {
            return Ok(n);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => Some(left),
                None => return Ok(0),
            },
            None => None,
        };
        sleep(left)?;
    }
}
