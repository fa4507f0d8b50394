//! Wakers run by the worker outside a task's poll, with their panics contained.
//!
//! A task may poll a regio future with a waker of its own (a hand-made combinator), and await
//! a join handle with one: the worker wakes those wakers from its loop (a timer that fires, an
//! operation that completes, a task that finishes), outside the `catch_unwind` of any task's
//! poll. A panic there would unwind the worker loop and take every task of the worker down;
//! here it is caught and logged, and the worker goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Waker;

/// Wakes `waker` (and drops it).
#[inline]
pub(crate) fn wake(waker: Waker) {
    contain(|| waker.wake());
}

/// Wakes `waker`, which stays.
#[inline]
pub(crate) fn wake_by_ref(waker: &Waker) {
    contain(|| waker.wake_by_ref());
}

/// Drops `waker` (its destructor is foreign code too).
#[inline]
pub(crate) fn drop_waker(waker: Waker) {
    contain(|| drop(waker));
}

#[inline(always)]
fn contain(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        contained();
    }
}

#[cold]
fn contained() {
    tracing::error!("a waker panicked when the worker woke or dropped it; the worker goes on");
}
