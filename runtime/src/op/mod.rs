//! Operations as futures: [`submit`], [`Submit`], [`nop`], and the explicit [`Cancel`].
//!
//! An operation's future does nothing until it is first polled. Polled on a worker, it takes a
//! slot in the worker's operation table (its cookie is the slot and the slot's generation),
//! builds its [`Op`] with that cookie and writes it into the ring's SQ staging (the worker holds
//! its ring as a batch while it polls its tasks); the worker submits everything in one
//! `io_uring_enter` at the end of the step, reaps, and routes each completion to its slot by
//! cookie, waking the task. Polled anywhere else in a runtime (inside
//! [`Runtime::block_on`](crate::Runtime::block_on)), it runs as a small task on a worker and
//! waits for that task.
//!
//! # Ownership and cancellation
//!
//! The adapter owns an operation's buffer from the post to the final completion, and hands it
//! back then (the contract, with what "final" means for each kind of operation, is
//! [regio_adapters' "Ownership until the final completion"](regio_adapters#ownership-until-the-final-completion));
//! the future gives the buffer to its caller in [`Completed::buf`].
//!
//! - **Dropping the future** (a timeout that fired, an aborted task, a `select!` that took
//!   another branch) abandons the operation. If it was not posted yet, it is never posted and
//!   its buffer goes back to the pool at the next submit step. If the kernel has it, the worker
//!   posts an `ASYNC_CANCEL` for its cookie on the same work queue, and when the operation's
//!   final completion comes (cancelled or not) the buffer goes back to the pool. A cancel that
//!   the ring cannot take yet waits in the staging queue, first in line: it is never dropped.
//!   Cancel-on-drop is best effort: an operation that completes while the cancel is on its way
//!   has done its work (a read has consumed its data), and that result is lost.
//! - An operation whose result is a resource (an accept's new descriptor) names a
//!   [`Build::ORPHAN`] handler: a dropped operation that succeeded anyway hands its result to
//!   it on the worker (which closes the descriptor), so nothing leaks in that race.
//! - A *multishot* operation (the runtime's own, such as
//!   [`Listener::incoming`](crate::net::Listener::incoming)'s accept) completes many times: its
//!   slot keeps each result until its future takes it, and once the future is dropped, every
//!   result it did not take, and every one that comes until the final completion, goes to the
//!   orphan handler.
//! - A *zero-copy send* completes twice: its result, then the `F_NOTIF` notification that the
//!   kernel let go of the buffer. A future that resolves at the first completion
//!   ([`Stream::send_zc_all`](crate::net::Stream::send_zc_all),
//!   [`Stream::send_region`](crate::net::Stream::send_region)) lets go of the operation then:
//!   the worker keeps its slot until the notification and gives the buffer back to the pool
//!   (or drops the region's lease) with it. Dropping a send's future after its first
//!   completion posts no cancel either: only the notification is left, which no cancel hurries.
//! - **[`Submit::cancel`]** is the explicit form: it cancels the operation and waits for its
//!   final completion, so the caller gets the real result (`-ECANCELED`, or what the operation
//!   did if it won the race) and the buffer.
//! - A future moved to another thread after its first poll (rare: tasks never change
//!   threads) may still be dropped there: the abandonment is mailed to its worker. Polling it
//!   there panics.

mod io;
mod multishot;
mod table;
mod wakers;

use std::future::Future;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub(crate) use self::io::{open_batches, Io, Posting};
pub(crate) use self::multishot::Multishot;
use self::table::Queue;
pub(crate) use self::table::Shot;
use crate::context;
use crate::queues::FdQueues;
use crate::remote::{self, Mail};
use crate::task::JoinHandle;

pub use regio_adapters::Op;
pub use regio_pool::Message;

const MOVED: &str = "a regio operation future was polled on another thread than the worker \
                     that started it; keep it on its task";
const NO_RUNTIME: &str = "a regio operation was polled outside a regio runtime: run it on a \
                          worker (a spawned task) or inside Runtime::block_on";

/// What an operation's final completion brought back.
#[derive(Debug)]
pub struct Completed {
    /// The kernel's result: a count or a negated errno. For send_zc, the result of the first
    /// completion (the bytes sent); the final one only says the kernel is done with the buffer.
    pub result: i32,
    /// The final completion's CQE flags.
    pub flags: u32,
    /// The operation's buffer, back from the kernel.
    pub buf: Option<Message>,
}

impl Completed {
    /// The result as an [`std::io::Result`]: a count, or the errno as an error.
    pub fn io_result(&self) -> std::io::Result<u32> {
        if self.result < 0 {
            Err(std::io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as u32)
        }
    }

    fn cancelled(buf: Option<Message>) -> Self {
        Self {
            result: -libc::ECANCELED,
            flags: 0,
            buf,
        }
    }
}

/// Which work queue an operation is posted on.
pub(crate) enum Route {
    /// The worker's own queue of the current adapter (module `adapter`), on no file.
    Control,
    /// The file's or socket's queue on the worker's ring of the descriptor's adapter.
    Fd(Arc<FdQueues>),
}

enum State<F> {
    /// Not polled yet.
    Unstarted {
        route: Route,
        buf: Option<Message>,
        build: F,
    },
    /// In the table of worker `worker` under `cookie`.
    Local { worker: u64, cookie: u64 },
    /// Running as a task on a worker, for a future polled off the workers.
    Remote(JoinHandle<Completed>),
    /// Completed, and its output handed out.
    Finished,
}

/// An operation's state, shared by [`Submit`] and [`Cancel`]; dropping it abandons the
/// operation.
struct Inner<F> {
    state: State<F>,
}

/// The builder of an operation: given the buffer and the cookie, the [`Op`]. Closures
/// `|buf, cookie| ...` are builders.
pub trait Build: Send + 'static {
    /// What to do with the result of an operation whose future was dropped but which succeeded
    /// anyway (its final completion's result, when not negative): an accept's new descriptor
    /// must be closed, for one. Called on the worker, for each such completion.
    const ORPHAN: Option<fn(i32)> = None;

    /// Makes the operation, with `buf` as its buffer and `cookie` as its cookie.
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message>;

    /// Makes the operation for a ring of adapter `adapter` (its index among the runtime's
    /// adapters). This is what the runtime calls; by default it is [`build`](Self::build). An
    /// operation on memory registered once per adapter (a [`Region`](crate::region::Region)'s
    /// send) overrides it to name that adapter's registration.
    #[inline(always)]
    fn build_on(self, adapter: usize, buf: Option<Message>, cookie: u64) -> Op<Message>
    where
        Self: Sized,
    {
        let _ = adapter;
        self.build(buf, cookie)
    }
}

impl<F> Build for F
where
    F: FnOnce(Option<Message>, u64) -> Op<Message> + Send + 'static,
{
    #[inline(always)]
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        self(buf, cookie)
    }
}

/// Submits the operation that `build` makes, on the current worker's own work queue (one that
/// acts on no file: nop, timeout, cancel, msg_ring) of the current adapter
/// ([`current_adapter`](crate::current_adapter)), and resolves to its final completion.
///
/// `build` is called at the first poll, with `buf` and the cookie the operation must carry (the
/// runtime routes its completions by it): `|buf, cookie| Op::nop(cookie)`, or for a pool
/// message, set `descriptor_mut().cookie` and use [`Op::from_message`]. The buffer comes back
/// in [`Completed::buf`]. The worker's own queue names no file, and reaches no fixed-file slot
/// of the ring either: those hold the runtime's sockets and files, and an [`Op::share_file`]
/// of one is refused (`EINVAL`), as it goes only on a work queue of the slot it shares. Dropping the future cancels the operation (see the [module
/// docs](self)); [`Submit::cancel`] cancels it and gives back the real result and the buffer.
///
/// ```
/// use regio_runtime::{op::{submit, Op}, Runtime};
///
/// let rt = Runtime::builder().worker_threads(1).build()?;
/// let done = rt.block_on(submit(None, |_, cookie| Op::nop(cookie)));
/// assert_eq!(done.result, 0);
/// # Ok::<(), regio_runtime::BuildError>(())
/// ```
pub fn submit<F>(buf: Option<Message>, build: F) -> Submit<F>
where
    F: FnOnce(Option<Message>, u64) -> Op<Message> + Send + 'static,
{
    Submit::new(Route::Control, buf, build)
}

/// The future of [`submit`]: resolves to the operation's [`Completed`] final completion.
#[must_use = "futures do nothing unless polled; a dropped operation is cancelled"]
pub struct Submit<F> {
    inner: Inner<F>,
}

// The builder is consumed by value and never pinned; nothing in `Submit` refers to itself.
impl<F> Unpin for Submit<F> {}

impl<F> std::fmt::Debug for Submit<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.inner.state {
            State::Unstarted { .. } => "unstarted",
            State::Local { .. } => "in flight",
            State::Remote(_) => "in flight on a worker",
            State::Finished => "finished",
        };
        f.debug_struct("Submit").field("state", &state).finish()
    }
}

impl<F: Build> Submit<F> {
    pub(crate) fn new(route: Route, buf: Option<Message>, build: F) -> Self {
        Self {
            inner: Inner {
                state: State::Unstarted { route, buf, build },
            },
        }
    }

    /// Cancels the operation and resolves to its final completion: the real result (usually
    /// `-ECANCELED`, or the operation's own if it completed first) and the buffer. An operation
    /// never polled resolves at once to `-ECANCELED` with its buffer. One that was handed to a
    /// worker from outside the workers (first polled in `block_on`) is stopped by aborting that
    /// task; its buffer then goes back to the pool.
    pub fn cancel(self) -> Cancel<F> {
        Cancel {
            inner: self.inner,
            requested: false,
        }
    }
}

impl<F: Build> Submit<F> {
    /// Polls for the operation's *first* completion: for an operation that completes twice (a
    /// zero-copy send: its result, then the `F_NOTIF` notification that the kernel let go of
    /// the buffer), ready with the first one's result while the kernel still holds the
    /// buffer. The operation then runs on without its future: its final completion gives the
    /// buffer back to the pool, and no cancel is ever posted for it. An operation that
    /// completes once is ready at that completion (its buffer goes back to the pool). Once
    /// ready, the future is finished: poll it no more.
    ///
    /// Off the workers (first polled inside `block_on`, where the operation runs as a task on
    /// a worker) it is ready at the final completion only: that task waits for it.
    #[inline]
    pub(crate) fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<i32> {
        self.inner.poll_first(cx)
    }
}

impl<F: Build> Future for Submit<F> {
    type Output = Completed;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completed> {
        self.inner.poll(cx, false)
    }
}

impl<F: Build> Inner<F> {
    /// Polls the operation, starting it first if it is not; with `cancel`, asks for its
    /// cancellation first (once). The common cases (a first poll on a worker, an operation in
    /// flight on this worker) take the short paths.
    #[inline(always)]
    fn poll(&mut self, cx: &mut Context<'_>, cancel: bool) -> Poll<Completed> {
        if !cancel {
            match self.start_here(cx) {
                Some(Ok(())) => return Poll::Pending,
                Some(Err(errno)) => return Poll::Ready(self.fail(errno)),
                None => {}
            }
            if let State::Local { worker, cookie } = self.state {
                let polled = context::with_owner(worker, |local| {
                    local.io.borrow_mut().table.poll(cookie, cx)
                });
                if let Some(polled) = polled {
                    if polled.is_ready() {
                        self.set_plain(State::Finished);
                    }
                    return polled;
                }
            }
        }
        self.poll_other(cx, cancel)
    }

    /// [`poll`](Self::poll) for an operation without a buffer: its result alone (a word, not a
    /// [`Completed`], which would be copied out after being written field by field, and stall
    /// on store forwarding).
    #[inline(always)]
    fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<i32> {
        match self.start_here(cx) {
            Some(Ok(())) => return Poll::Pending,
            Some(Err(errno)) => return Poll::Ready(self.fail(errno).result),
            None => {}
        }
        if let State::Local { worker, cookie } = self.state {
            let polled = context::with_owner(worker, |local| {
                local.io.borrow_mut().table.poll_result(cookie, cx)
            });
            if let Some(polled) = polled {
                if polled.is_ready() {
                    self.set_plain(State::Finished);
                }
                return polled;
            }
        }
        self.poll_other(cx, false).map(|done| done.result)
    }

    /// [`poll_result`](Self::poll_result) that resolves at the operation's first completion
    /// (see [`Submit::poll_first`]).
    #[inline(always)]
    fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<i32> {
        // Started, the operation is polled in the table at once: that poll asks for the wake at
        // the first completion.
        if let Some(Err(errno)) = self.start_here(cx) {
            return Poll::Ready(self.fail(errno).result);
        }
        if let State::Local { worker, cookie } = self.state {
            let polled = context::with_owner(worker, |local| {
                local.io.borrow_mut().table.poll_first(cookie, cx)
            });
            if let Some(polled) = polled {
                if polled.is_ready() {
                    self.set_plain(State::Finished);
                }
                return polled;
            }
        }
        self.poll_other(cx, false).map(|done| done.result)
    }

    /// Replaces a state that holds nothing to drop (`Local`, `Finished`) with `next`: a store,
    /// not a call to the state's drop glue.
    #[inline(always)]
    fn set_plain(&mut self, next: State<F>) {
        debug_assert!(matches!(self.state, State::Local { .. } | State::Finished));
        std::mem::forget(std::mem::replace(&mut self.state, next));
    }

    /// The first poll on a worker: starts the operation there (see [`start_on`]). `None` if
    /// the operation has started already, or this thread is no worker.
    ///
    /// [`start_on`]: Self::start_on
    #[inline(always)]
    fn start_here(&mut self, cx: &mut Context<'_>) -> Option<Result<(), i32>> {
        if !matches!(self.state, State::Unstarted { .. }) {
            return None;
        }
        context::with_worker(|local| self.start_on(local, cx))
    }

    /// The completion of an operation that could not start (its file's queue could not be
    /// made, or its adapter does not exist): `errno`, with its buffer.
    #[cold]
    fn fail(&mut self, errno: i32) -> Completed {
        let State::Unstarted { buf, .. } = std::mem::replace(&mut self.state, State::Finished)
        else {
            unreachable!("called on an unstarted operation")
        };
        Completed {
            result: -errno,
            flags: 0,
            buf,
        }
    }

    /// Starts the operation on `local`'s ring of its adapter (the current one, or its
    /// descriptor's). Started, it cannot complete before the worker's next submit step, so the
    /// caller's poll is `Pending`. An errno if its file's queue could not be made, or the
    /// adapter does not exist (it stays unstarted; [`fail`](Self::fail) completes it).
    #[inline(always)]
    fn start_on(&mut self, local: &crate::worker::Local, cx: &mut Context<'_>) -> Result<(), i32> {
        let queue = match &self.state {
            State::Unstarted {
                route: Route::Control,
                ..
            } => Queue::Control(local.current_adapter()?),
            State::Unstarted {
                route: Route::Fd(files),
                ..
            } => {
                let (adapter, wq) = files.for_worker(local)?;
                Queue::Fd {
                    adapter,
                    wq,
                    _file: Arc::clone(files),
                }
            }
            _ => unreachable!("called on an unstarted operation"),
        };
        let cookie = local.io.borrow_mut().reserve(cx.waker(), &queue, F::ORPHAN);
        let adapter = queue.adapter();
        let State::Unstarted { route, buf, build } = std::mem::replace(
            &mut self.state,
            State::Local {
                worker: local.uid,
                cookie,
            },
        ) else {
            unreachable!("matched above")
        };
        drop(route);
        // The builder runs inside `start`, where the operation goes from the builder straight
        // into the ring's SQE staging (all inlined): it is never copied as a whole, which would
        // read back the fields just stored with wide loads and stall (see the adapters' notes
        // on the hot path). A panic in the builder frees the slot as it unwinds.
        let unwinding = Discard { local, cookie };
        local
            .io
            .borrow_mut()
            .start(queue, cookie, || build.build_on(adapter, buf, cookie));
        std::mem::forget(unwinding);
        Ok(())
    }

    /// [`poll`](Self::poll) for the other cases: a first poll off the workers, a cancel, an
    /// operation that runs as a task, one polled on the wrong thread.
    fn poll_other(&mut self, cx: &mut Context<'_>, cancel: bool) -> Poll<Completed> {
        if matches!(self.state, State::Unstarted { .. }) {
            if cancel {
                let State::Unstarted { buf, .. } =
                    std::mem::replace(&mut self.state, State::Finished)
                else {
                    unreachable!("matched above")
                };
                return Poll::Ready(Completed::cancelled(buf));
            }
            match self.start_here(cx) {
                Some(Ok(())) => return Poll::Pending,
                Some(Err(errno)) => return Poll::Ready(self.fail(errno)),
                None => self.start_remote(),
            }
        }
        let polled = match &mut self.state {
            State::Local { worker, cookie } => {
                let cookie = *cookie;
                context::with_owner(*worker, |local| {
                    let mut io = local.io.borrow_mut();
                    if cancel {
                        io.cancel(cookie);
                    }
                    io.table.poll(cookie, cx)
                })
                .unwrap_or_else(|| panic!("{MOVED}"))
            }
            State::Remote(handle) => {
                if cancel {
                    handle.abort();
                }
                Pin::new(handle).poll(cx).map(|joined| match joined {
                    Ok(done) => done,
                    Err(e) => match e.try_into_panic() {
                        Ok(payload) => resume_unwind(payload),
                        Err(_) => Completed::cancelled(None),
                    },
                })
            }
            State::Unstarted { .. } => unreachable!("started above"),
            State::Finished => panic!("an operation future was polled after it completed"),
        };
        if polled.is_ready() {
            self.state = State::Finished;
        }
        polled
    }

    /// The first poll off the workers (inside `block_on`): the operation runs as a task on a
    /// worker.
    fn start_remote(&mut self) {
        let State::Unstarted { route, buf, build } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            unreachable!("called on an unstarted operation")
        };
        let shared = context::runtime().unwrap_or_else(|| panic!("{NO_RUNTIME}"));
        self.state = State::Remote(shared.spawn(Submit::new(route, buf, build)));
    }
}

/// Frees an operation's slot if its builder panics.
struct Discard<'a> {
    local: &'a crate::worker::Local,
    cookie: u64,
}

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        self.local.io.borrow_mut().table.discard(self.cookie);
    }
}

impl<F> Drop for Inner<F> {
    fn drop(&mut self) {
        match &self.state {
            State::Local { worker, cookie } => abandon(*worker, *cookie),
            State::Remote(handle) => handle.abort(),
            State::Unstarted { .. } | State::Finished => {}
        }
    }
}

/// Abandons operation `cookie` of worker `worker`: at once on that worker, by mail from
/// anywhere else (a worker that has stopped has cancelled it already).
fn abandon(worker: u64, cookie: u64) {
    let here = context::with_owner(worker, |local| local.io.borrow_mut().abandon(cookie));
    if here.is_none() {
        if let Some(remote) = remote::find(worker) {
            // A refusal means the worker is stopping, and cancels everything itself.
            let _ = remote.send(Mail::Abandon(cookie));
        }
    }
}

/// The future of [`Submit::cancel`]: resolves to the cancelled operation's final completion.
/// Dropping it abandons the operation, as dropping the [`Submit`] would have.
#[must_use = "futures do nothing unless polled"]
pub struct Cancel<F> {
    inner: Inner<F>,
    requested: bool,
}

// As for `Submit`.
impl<F> Unpin for Cancel<F> {}

impl<F: Build> Future for Cancel<F> {
    type Output = Completed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completed> {
        let this = &mut *self;
        let first = !std::mem::replace(&mut this.requested, true);
        this.inner.poll(cx, first)
    }
}

/// The builder of [`nop`].
#[derive(Debug)]
pub struct NopOp(());

impl Build for NopOp {
    #[inline(always)]
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        // Made without a buffer; a check inline rather than a call to the drop glue.
        if let Some(buf) = buf {
            drop(buf);
        }
        Op::nop(cookie)
    }
}

/// A round trip through the worker's ring that does nothing: an io_uring `NOP`. It measures
/// (and lets benchmarks measure) the runtime's cost per operation.
///
/// ```
/// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(rt.spawn(async { regio_runtime::nop().await })).unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn nop() -> Nop {
    Nop {
        op: Submit::new(Route::Control, None, NopOp(())),
    }
}

/// The future of [`nop`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Nop {
    op: Submit<NopOp>,
}

impl Nop {
    /// The operation, to cancel it explicitly ([`Submit::cancel`]).
    pub fn into_submit(self) -> Submit<NopOp> {
        self.op
    }
}

impl Future for Nop {
    type Output = std::io::Result<()>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.op.inner.poll_result(cx).map(|result| {
            if result < 0 {
                Err(std::io::Error::from_raw_os_error(-result))
            } else {
                Ok(())
            }
        })
    }
}
