//! [`JoinHandle`] and [`JoinError`]: waiting for a task's output.
//!
//! # Synchronization
//!
//! The output goes from the owner worker to the handle through the task's join-slot mutex; the
//! handle's waker is stored under the same mutex, so a completion either finds it (and wakes
//! it) or comes before the handle looks (and the handle finds the output). See `task/mod.rs`
//! for the state word that [`JoinHandle::is_finished`] reads.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// What a task's owner and its join handle share, under the join mutex.
pub(crate) struct JoinSlot<T> {
    /// The outcome, from the moment the task completes until the handle takes it.
    pub(crate) output: Option<Result<T, JoinError>>,
    /// The handle's waker, while it waits.
    pub(crate) waker: Option<Waker>,
    /// The handle was dropped: an outcome is dropped by the owner at once.
    pub(crate) detached: bool,
    /// The handle has taken the outcome.
    pub(crate) taken: bool,
}

impl<T> Default for JoinSlot<T> {
    fn default() -> Self {
        Self {
            output: None,
            waker: None,
            detached: false,
            taken: false,
        }
    }
}

/// A task as its join handle sees it.
pub(crate) trait Join<T>: Send + Sync {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn abort(self: Arc<Self>);
    fn is_finished(&self) -> bool;
    fn detach(&self);
}

/// An owned permission to wait for a spawned task's output: `.await` it for
/// `Result<T, JoinError>`.
///
/// Dropping the handle detaches the task, which goes on running; [`abort`](Self::abort) stops
/// it. A task that panics gives [`JoinError`] with [`JoinError::is_panic`], and its worker goes
/// on; an aborted task, or one dropped at shutdown, gives [`JoinError::is_cancelled`].
///
/// The handle may be awaited on any thread (it is `Send` when `T` is).
#[must_use = "dropping a JoinHandle detaches the task; .await it for the output"]
pub struct JoinHandle<T> {
    task: Arc<dyn Join<T>>,
    /// The handle hands a `T` to whichever thread holds it: it is `Send` (and `Sync`) only as
    /// `T` is, whatever the task is.
    _output: PhantomData<T>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: Arc<dyn Join<T>>) -> Self {
        Self {
            task,
            _output: PhantomData,
        }
    }

    /// Asks the task to stop: its future is dropped at its worker's next look at it (which
    /// cancels the operations it has in flight), and the handle then gives
    /// [`JoinError::is_cancelled`]. A task that has already completed keeps its output.
    pub fn abort(&self) {
        Arc::clone(&self.task).abort();
    }

    /// Whether the task has completed (its output, or its error, is ready).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.task.detach();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task gave no output: it was cancelled, or it panicked.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    /// The payload behind a mutex, so that the error is `Sync` (the payload is only `Send`).
    Panic(Mutex<Box<dyn Any + Send>>),
}

impl JoinError {
    pub(crate) fn cancelled() -> Self {
        Self {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send>) -> Self {
        Self {
            repr: Repr::Panic(Mutex::new(payload)),
        }
    }

    /// The task was aborted, or dropped when its runtime shut down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The panic's payload, to resume the unwind with [`std::panic::resume_unwind`].
    ///
    /// # Errors
    ///
    /// Gives the error back if the task was cancelled rather than panicking.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, Self> {
        match self.repr {
            Repr::Panic(p) => Ok(p.into_inner().unwrap_or_else(|p| p.into_inner())),
            Repr::Cancelled => Err(self),
        }
    }

    /// The panic's message, when the payload is a string (as `panic!` makes it).
    fn panic_message(&self) -> Option<String> {
        let Repr::Panic(p) = &self.repr else {
            return None;
        };
        let payload = p.lock().unwrap_or_else(|p| p.into_inner());
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("the task was cancelled"),
            (Repr::Panic(_), Some(msg)) => write!(f, "the task panicked: {msg}"),
            (Repr::Panic(_), None) => f.write_str("the task panicked"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic(_) => write!(f, "JoinError::Panic({:?})", self.panic_message()),
        }
    }
}

impl std::error::Error for JoinError {}
