//! Which adapter I/O goes to: [`AdapterHandle`] (whose docs give the rules), the
//! [`OnAdapter`] scope, and [`current_adapter`].
//!
//! The current adapter is a plain thread-local, read when an operation starts (`start_on`)
//! and when a descriptor is bound (`FdQueues::for_worker`): a scope sets it before each poll of
//! its future and puts the previous value back after (on unwinding too), so nested scopes see
//! the innermost one and nothing leaks to the next task the worker polls. Every spawned task is
//! wrapped in a scope of its spawner's current adapter (`Shared::spawn`, `spawn_local`).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::task::JoinHandle;

thread_local! {
    /// The adapter that operations started on this thread now go to.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The index of the adapter that operations started here go to (0 outside any
/// [`AdapterHandle::scope`]). [`AdapterHandle`] says what the choice covers.
pub fn current_adapter() -> usize {
    CURRENT.with(Cell::get)
}

/// Why an adapter cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The runtime has fewer adapters.
    #[error("adapter {index} does not exist: the runtime has {count}")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// The runtime's number of adapters.
        count: usize,
    },
    /// Called outside a regio runtime (neither on a worker nor inside
    /// [`Runtime::block_on`](crate::Runtime::block_on)).
    #[error("not inside a regio runtime: use Runtime::adapter")]
    NoRuntime,
}

/// One adapter of a runtime, checked to exist there: from
/// [`Runtime::adapter`](crate::Runtime::adapter) or [`adapter`](crate::adapter).
///
/// Every worker has a ring of every adapter, so the choice is made per operation, not by
/// placing tasks: [`scope`](Self::scope) makes the adapter *current* while a future is polled
/// ([`current_adapter`]; 0 outside any scope), and
///
/// - an operation on no descriptor ([`nop`](crate::nop), [`op::submit`](crate::op::submit))
///   goes to the current adapter's work queue of its worker;
/// - a socket or file belongs to the adapter that is current at its **first** operation; its
///   later operations go there from any task (its work queues live on that adapter's rings);
/// - a task inherits the current adapter of the code that spawns it ([`spawn`](crate::spawn),
///   [`Runtime::spawn`](crate::Runtime::spawn), [`spawn_local`](crate::spawn_local)), so the
///   connections an accept loop hands to new tasks stay on the listener's adapter.
///
/// ```
/// use regio_runtime::{AdapterSpec, Builder};
///
/// let rt = Builder::new()
///     .worker_threads(1)
///     .adapter(AdapterSpec::new())
///     .adapter(AdapterSpec::new().interrupt())
///     .build()?;
/// let second = rt.adapter(1)?;
/// let on = rt.block_on(rt.spawn(second.scope(async {
///     regio_runtime::nop().await.unwrap();
///     regio_runtime::current_adapter()
/// })));
/// assert_eq!(on.unwrap(), 1);
/// assert!(rt.adapter(2).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdapterHandle {
    index: usize,
}

impl AdapterHandle {
    /// The handle of adapter `index` of a runtime with `count` adapters.
    pub(crate) fn checked(index: usize, count: usize) -> Result<Self, AdapterError> {
        if index < count {
            Ok(Self { index })
        } else {
            Err(AdapterError::OutOfRange { index, count })
        }
    }

    /// The adapter's index, in the order the builder was given them.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `future`, with this adapter current while it is polled: its operations, the sockets
    /// and files it uses first, and the tasks it spawns go to this adapter (see the type's
    /// docs). Polled on a runtime with fewer adapters, its operations fail with `ENODEV`.
    pub fn scope<F: Future>(&self, future: F) -> OnAdapter<F> {
        OnAdapter::new(self.index, future)
    }

    /// Spawns `future` on the current runtime with this adapter current for it:
    /// [`spawn`](crate::spawn) of [`scope`](Self::scope).
    ///
    /// # Panics
    ///
    /// Outside a regio runtime, as [`spawn`](crate::spawn).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        crate::spawn(self.scope(future))
    }
}

/// The future of [`AdapterHandle::scope`]: polls its future with its adapter current.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct OnAdapter<F> {
    adapter: usize,
    future: F,
}

impl<F> OnAdapter<F> {
    pub(crate) fn new(adapter: usize, future: F) -> Self {
        Self { adapter, future }
    }

    /// `future` with the current adapter of this thread, for a task spawned from here.
    pub(crate) fn inherit(future: F) -> Self {
        Self::new(current_adapter(), future)
    }
}

/// Puts the previous current adapter back when dropped (after a poll, or while it unwinds).
struct Restore(usize);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl<F: Future> Future for OnAdapter<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and
        // `OnAdapter` has no `Drop` or `Unpin` impl of its own that could move it.
        let (adapter, future) = unsafe {
            let this = self.get_unchecked_mut();
            (this.adapter, Pin::new_unchecked(&mut this.future))
        };
        let _restore = Restore(CURRENT.with(|c| c.replace(adapter)));
        future.poll(cx)
    }
}
