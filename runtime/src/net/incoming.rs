//! [`Incoming`]: a listener's connections from one multishot accept.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use regio_adapters::Op;
use regio_pool::Message;

use super::listener::ListenSocket;
use super::op;
use super::stream::Stream;
use crate::context;
use crate::op::{Build, Multishot, Route, Shot};
use crate::queues::{AnyFd, FdQueues};

/// The connections a [`Listener`](super::Listener) accepts, from
/// [`Listener::incoming`](super::Listener::incoming): one multishot accept
/// (`IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT`) armed on the current worker's ring of
/// the listener's adapter (the one current at the listener's first operation), whose
/// completions [`accept`](Self::accept) hands out in order; it is armed again when the
/// kernel ends it (a completion without `F_MORE`: an error, a full completion queue).
///
/// Dropping it cancels the multishot accept; connections it accepted and [`accept`](Self::accept)
/// did not hand out yet, and those the kernel accepts until the final completion, are closed:
/// a client that connects just after the drop may see its connection closed rather than
/// wait for the listener's next accept. The same goes for an `Incoming` moved to a task on
/// another worker, or used off the workers: it is armed anew there (off the workers, each
/// call is a single-shot accept), and the old multishot accept is cancelled. Keep one
/// `Incoming`, on one task, for as long as the listener accepts.
///
/// It holds the listening socket open while it lives, even after the
/// [`Listener`](super::Listener) itself is dropped.
///
/// Accepted connections are plain descriptors (each gets a fixed-file slot at its first
/// operation, as every stream does): see the [module docs](super#descriptors-and-fixed-file-slots) for why the
/// kernel does not put them straight into slots.
pub struct Incoming<L> {
    listener: Arc<FdQueues<L>>,
    armed: Option<Multishot<AcceptMany>>,
}

impl<L: ListenSocket> std::fmt::Debug for Incoming<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener.handle().as_raw_fd())
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

impl<L: ListenSocket> Incoming<L> {
    pub(crate) fn new(listener: Arc<FdQueues<L>>) -> Self {
        Self {
            listener,
            armed: None,
        }
    }

    /// The next connection. Dropping the future loses none: the multishot accept stays armed
    /// in the `Incoming`, and its connections wait there for the next call. Off the workers (in
    /// [`Runtime::block_on`](crate::Runtime::block_on)) it is one single-shot accept on a
    /// worker, as [`Listener::accept`](super::Listener::accept) does; a multishot accept armed
    /// by an earlier call on a worker is cancelled first (it would take every connection, which
    /// only its worker can hand out), as if the `Incoming` had moved (type docs).
    ///
    /// # Errors
    ///
    /// An accept's error (`EMFILE` when out of descriptors, ...); the next call goes on
    /// accepting.
    pub async fn accept(&mut self) -> io::Result<Stream<L::Stream>> {
        if !context::on_worker() {
            // An accept armed on a worker would take the connections from under this one, and
            // only that worker can hand them out: cancel it (type docs).
            self.armed = None;
            let queues: Arc<FdQueues<AnyFd>> = self.listener.clone();
            let (fd, _) = op::accept(queues).await?;
            return Ok(Stream::wrap(L::stream(fd)));
        }
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// [`accept`](Self::accept) on a worker: arms the multishot accept on this worker's ring if it
    /// is not, and takes its next result.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Stream<L::Stream>>> {
        let armed = match &mut self.armed {
            Some(armed) if armed.is_here() => armed,
            stale => {
                // Dropping one armed on another worker cancels it there (module docs).
                let queues: Arc<FdQueues<AnyFd>> = self.listener.clone();
                stale.insert(Multishot::new(Route::Fd(queues), AcceptMany))
            }
        };
        let result = match std::task::ready!(armed.poll_shot(cx)) {
            Shot::More(result) => result,
            Shot::Last(result) => {
                self.armed = None;
                result
            }
        };
        if result < 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(-result)));
        }
        // SAFETY: a successful accept's result is a new descriptor, handed to no one else: this
        // completion is its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(result) };
        Poll::Ready(Ok(Stream::wrap(L::stream(fd))))
    }
}

/// The builder of the multishot accept: each result is a new descriptor, closed if nobody
/// takes it.
pub(crate) struct AcceptMany;

impl Build for AcceptMany {
    const ORPHAN: Option<fn(i32)> = Some(op::close_orphan);

    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        drop(buf);
        Op::accept_multishot_fds(cookie)
    }
}
