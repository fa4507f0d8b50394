//! [`Multishot`]: an operation that completes many times (a multishot accept), each result
//! taken in turn by [`Multishot::poll_shot`].
//!
//! It starts as any operation does (its first poll, on a worker), and its slot in the worker's
//! table keeps every non-final result until it is taken (the `table` module). Dropping it
//! abandons the operation as dropping a [`Submit`](super::Submit) does: a cancel goes to the
//! kernel, and every result that comes until the final completion, as well as those not taken
//! yet, goes to the builder's [`ORPHAN`](super::Build::ORPHAN) handler (for an accept, which
//! closes the descriptor).

use std::task::{Context, Poll};

use super::{Build, Inner, Route, Shot, State, MOVED};
use crate::context;

/// A multishot operation, polled on the worker that started it.
pub(crate) struct Multishot<F> {
    inner: Inner<F>,
}

impl<F: Build> Multishot<F> {
    /// The operation `build` makes, on `route`; nothing happens until the first poll.
    pub(crate) fn new(route: Route, build: F) -> Self {
        Self {
            inner: Inner {
                state: State::Unstarted {
                    route,
                    buf: None,
                    build,
                },
            },
        }
    }

    /// Whether it can be polled on this thread: it has not started, or it started on this
    /// thread's worker.
    pub(crate) fn is_here(&self) -> bool {
        match self.inner.state {
            State::Unstarted { .. } => context::on_worker(),
            State::Local { worker, .. } => context::with_owner(worker, |_| ()).is_some(),
            State::Remote(_) | State::Finished => false,
        }
    }

    /// The next result: [`Shot::More`] for each non-final completion, then [`Shot::Last`]
    /// with the final one (after which the operation is over: make a new one to go on).
    ///
    /// # Panics
    ///
    /// Off the worker threads (the caller checks [`context::on_worker`]), on another worker
    /// than the one that started it, or after it gave its [`Shot::Last`].
    pub(crate) fn poll_shot(&mut self, cx: &mut Context<'_>) -> Poll<Shot> {
        match self.inner.start_here(cx) {
            Some(Ok(())) => {
                if let State::Local { worker, cookie } = self.inner.state {
                    // Before the worker's next reap: no completion has been routed yet.
                    context::with_owner(worker, |local| {
                        local.io.borrow_mut().table.set_multishot(cookie)
                    });
                }
                return Poll::Pending;
            }
            Some(Err(errno)) => return Poll::Ready(Shot::Last(self.inner.fail(errno).result)),
            None => {}
        }
        let State::Local { worker, cookie } = self.inner.state else {
            panic!("a multishot operation was polled off the workers or after its last result")
        };
        let polled = context::with_owner(worker, |local| {
            local.io.borrow_mut().table.poll_shot(cookie, cx)
        })
        .unwrap_or_else(|| panic!("{MOVED}"));
        if let Poll::Ready(Shot::Last(_)) = polled {
            self.inner.set_plain(State::Finished);
        }
        polled
    }
}
