//! Time: [`sleep`], [`timeout`] and [`interval`], on each worker's timer structure.
//!
//! A sleep never becomes a kernel operation. Its first poll on a worker puts its deadline and
//! waker in that worker's timer map (module `timers`); once per loop turn the worker wakes the
//! tasks whose deadlines have passed, and a worker with nothing to do sleeps in the kernel at
//! most until its earliest deadline (one timeout per park, not one per sleep). Deadlines are
//! met to within the kernel's timer slack (about 50 µs) plus the length of the loop turn in
//! which they fall due.
//!
//! Polled off the workers (inside [`Runtime::block_on`](crate::Runtime::block_on)), a sleep
//! runs as a small task on a worker and waits for it.

mod timers;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) use timers::Timers;

use crate::context;
use crate::task::JoinHandle;
use timers::TimerKey;

const NO_RUNTIME: &str = "a regio timer was polled outside a regio runtime: run it on a worker \
                          (a spawned task) or inside Runtime::block_on";

/// About thirty years: what a deadline too far to represent becomes.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `instant + duration`, or a deadline about thirty years after `instant` when that sum cannot
/// be represented (`Duration::MAX`, a "forever"): such a deadline never comes in practice, and
/// no caller of [`sleep`], [`timeout`] or [`interval`] gets an overflow panic.
pub(crate) fn deadline_after(instant: Instant, duration: Duration) -> Instant {
    instant
        .checked_add(duration)
        .or_else(|| instant.checked_add(FAR_FUTURE))
        .unwrap_or(instant)
}

/// Waits until `duration` has passed. A duration too long to add to the clock
/// (`Duration::MAX`) waits for about thirty years, in effect forever.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
/// let start = Instant::now();
/// rt.block_on(regio_runtime::time::sleep(Duration::from_millis(10)));
/// assert!(start.elapsed() >= Duration::from_millis(10));
/// # Ok::<(), regio_runtime::BuildError>(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(Instant::now(), duration))
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        state: SleepState::Idle,
    }
}

enum SleepState {
    /// Not registered anywhere.
    Idle,
    /// In the timer map of worker `worker`.
    Local { worker: u64, key: TimerKey },
    /// Running as a task on a worker, for a sleep polled off the workers.
    Remote(JoinHandle<()>),
    /// The deadline has passed.
    Done,
}

/// The future of [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    state: SleepState,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Sleep {
    /// The instant this sleep ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed (as of the last poll).
    pub fn is_elapsed(&self) -> bool {
        matches!(self.state, SleepState::Done)
    }

    /// Moves the deadline, whether or not the sleep has ended.
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    /// Takes the sleep out of the worker's timers (or stops its task): back to `Idle`.
    fn unregister(&mut self) {
        match std::mem::replace(&mut self.state, SleepState::Idle) {
            SleepState::Local { worker, key } => {
                // Dropped on another thread than its worker, the entry stays until it fires,
                // and then wakes a task that no longer waits for it: harmless.
                context::with_owner(worker, |local| local.timers.borrow_mut().remove(key));
            }
            SleepState::Remote(handle) => handle.abort(),
            SleepState::Idle | SleepState::Done => {}
        }
    }

    /// Registers the sleep where this thread can: in its worker's timers, or as a task.
    fn register(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.state = SleepState::Done;
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let registered = context::with_worker(|local| SleepState::Local {
            worker: local.uid,
            key: local.timers.borrow_mut().insert(deadline, cx.waker()),
        });
        match registered {
            Some(state) => {
                self.state = state;
                Poll::Pending
            }
            None => {
                let shared = context::runtime().unwrap_or_else(|| panic!("{NO_RUNTIME}"));
                self.state = SleepState::Remote(shared.spawn(sleep_until(deadline)));
                self.poll_state(cx)
            }
        }
    }

    fn poll_state(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let fired = match &mut self.state {
            SleepState::Done => return Poll::Ready(()),
            SleepState::Idle => return self.register(cx),
            SleepState::Local { worker, key } => {
                let key = *key;
                match context::with_owner(*worker, |local| {
                    local.timers.borrow_mut().poll(key, cx.waker())
                }) {
                    Some(fired) => fired,
                    // Moved to another thread: register again there.
                    None => {
                        self.state = SleepState::Idle;
                        return self.register(cx);
                    }
                }
            }
            // A cancelled task (runtime shutdown) ends the sleep too: nothing will run it.
            SleepState::Remote(handle) => Pin::new(handle).poll(cx).is_ready(),
        };
        if fired {
            self.state = SleepState::Done;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_state(cx)
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deadline passed before the future completed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] (and the future is dropped,
/// which cancels the operations it has in flight).
///
/// ```
/// use std::time::Duration;
/// use regio_runtime::time::{sleep, timeout};
///
/// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
/// let slow = rt.block_on(timeout(Duration::from_millis(5), sleep(Duration::from_secs(60))));
/// assert!(slow.is_err());
/// # Ok::<(), regio_runtime::BuildError>(())
/// ```
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    timeout_at(deadline_after(Instant::now(), duration), future)
}

/// Runs `future` until `deadline` at most; see [`timeout`].
pub fn timeout_at<F: IntoFuture>(deadline: Instant, future: F) -> Timeout<F::IntoFuture> {
    Timeout {
        future: future.into_future(),
        sleep: sleep_until(deadline),
    }
}

/// The future of [`timeout`] and [`timeout_at`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F> Timeout<F> {
    /// The wrapped future.
    pub fn get_ref(&self) -> &F {
        &self.future
    }

    /// Unwraps the future (the timer is dropped).
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is pinned structurally: it is never moved out of a pinned `Timeout`
        // (`into_inner` takes the `Timeout` by value, so it was never pinned), `Timeout` has no
        // `Drop` of its own, and it is `Unpin` only when `F` is (`Sleep` is `Unpin`).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut this.sleep)
            .poll(cx)
            .map(|()| Err(Elapsed(())))
    }
}

/// Ticks every `period`, the first tick at once. Missed ticks are skipped: after a stall the
/// next tick is the next multiple of `period` after now.
///
/// # Panics
///
/// If `period` is zero.
///
/// ```
/// use std::time::Duration;
///
/// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let mut every = regio_runtime::time::interval(Duration::from_millis(2));
///     let first = every.tick().await;
///     let second = every.tick().await;
///     assert!(second - first >= Duration::from_millis(2)); // on the grid of the period
/// });
/// # Ok::<(), regio_runtime::BuildError>(())
/// ```
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks every `period` from `start` (the first tick at `start`); see [`interval`].
///
/// # Panics
///
/// If `period` is zero.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(!period.is_zero(), "an interval's period must not be zero");
    Interval {
        period,
        sleep: sleep_until(start),
    }
}

/// The timer of [`interval`]: call [`tick`](Self::tick) for each tick.
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    /// Sleeps until the next tick.
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick; returns the instant it was due.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick; returns the instant it was due.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let due = self.sleep.deadline();
        let mut next = deadline_after(due, self.period);
        let now = Instant::now();
        if next <= now {
            // Skip the ticks missed: the next multiple of the period after now. The remainder
            // is at most the time elapsed, so its seconds fit a u64.
            let late = (now - due).as_nanos() % self.period.as_nanos();
            let late = Duration::new((late / 1_000_000_000) as u64, (late % 1_000_000_000) as u32);
            next = deadline_after(now, self.period - late);
        }
        self.sleep.reset(next);
        Poll::Ready(due)
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}
