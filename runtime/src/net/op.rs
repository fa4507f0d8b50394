//! The operations every socket type shares: one receive or send ([`Transfer`]), a receive or
//! send that loops until the descriptor's bytes are all done ([`TransferAll`]), accept and
//! connect. The socket types (modules `stream`, `listener`, `unix`, `udp`) only pick the
//! socket and hand over.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use regio_adapters::ops::net::PeerAddr;
use regio_adapters::Op;
use regio_pool::{BufKey, Descriptor, Message};

use crate::op::{Build, Completed, Route, Submit};
use crate::queues::FdQueues;
use crate::task::JoinHandle;

/// The builder of a socket operation on a message (the type parameter of its [`Submit`]).
pub(crate) struct NetIo(Kind);

#[derive(Clone)]
pub(crate) enum Kind {
    Recv,
    Send,
    SendZc,
    /// A zero-copy send of every byte (`MSG_WAITALL`: the kernel sends the rest of a short
    /// send itself), awaited to its first completion ([`SendZcAll`]).
    SendZcAll,
    Connect(SocketAddr),
    /// A Unix socket's connect, to a path checked by [`check_unix_path`].
    ConnectUnix(Arc<Path>),
    /// A datagram to this address, from a message checked by [`check_datagram`].
    SendTo(SocketAddr),
    /// A datagram and its source, into a message checked by [`check_datagram`].
    RecvFrom(Arc<PeerAddr>),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Recv => "recv",
            Kind::Send => "send",
            Kind::SendZc => "send_zc",
            Kind::SendZcAll => "send_zc_all",
            Kind::Connect(_) => "connect",
            Kind::ConnectUnix(_) => "connect (Unix)",
            Kind::SendTo(_) => "send_to",
            Kind::RecvFrom(_) => "recv_from",
        })
    }
}

impl Build for NetIo {
    #[inline(always)]
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        match (self.0, buf) {
            (Kind::Recv, Some(buf)) => Op::recv(buf, 0, cookie),
            (Kind::Send, Some(buf)) => Op::send(buf, 0, cookie),
            (Kind::SendZc, Some(buf)) => Op::send_zc(buf, 0, cookie),
            (Kind::SendZcAll, Some(buf)) => Op::send_zc(buf, libc::MSG_WAITALL, cookie),
            (Kind::Connect(addr), None) => Op::connect(addr, cookie),
            (Kind::ConnectUnix(path), None) => Op::connect_unix(&path, cookie)
                .unwrap_or_else(|e| unreachable!("the path was checked: {e}")),
            (Kind::SendTo(addr), Some(buf)) => Op::send_to(buf, addr, cookie)
                .unwrap_or_else(|(_, e)| unreachable!("the descriptor was checked: {e}")),
            (Kind::RecvFrom(from), Some(buf)) => Op::recv_from(buf, from, cookie)
                .unwrap_or_else(|(_, e)| unreachable!("the descriptor was checked: {e}")),
            (kind, buf) => unreachable!(
                "{kind:?} is made {} a buffer",
                if buf.is_some() { "without" } else { "with" }
            ),
        }
    }
}

/// Submits `kind` on `queues` with `buf`.
fn submit(queues: Arc<FdQueues>, kind: Kind, buf: Option<Message>) -> Submit<NetIo> {
    Submit::new(Route::Fd(queues), buf, NetIo(kind))
}

/// The count and the buffer of a completed receive or send.
fn with_buffer(done: Completed) -> (io::Result<usize>, Message) {
    let result = done.io_result().map(|n| n as usize);
    let buf = done.buf.unwrap_or_else(|| {
        panic!(
            "the runtime shut down while this socket operation was in flight; its buffer went \
             back to the pool"
        )
    });
    (result, buf)
}

/// Connects the socket of `queues`: `kind` is a `Connect` or a `ConnectUnix`.
pub(crate) async fn connect(queues: Arc<FdQueues>, kind: Kind) -> io::Result<()> {
    submit(queues, kind, None).await.io_result().map(drop)
}

/// A new socket of `domain` (`SOCK_STREAM`, close-on-exec), for a connect.
///
/// # Errors
///
/// As for `socket(2)`.
pub(crate) fn socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) succeeded: a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Checks that `fd` is a socket of type `ty` (`SOCK_STREAM`, `SOCK_DGRAM`) in one of
/// `domains`, as a `from_std` needs: a standard socket type can be made from any descriptor in
/// safe code (`From<OwnedFd>`), and a send with flags 0 on a regular file would write it at
/// offset 0.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] for a descriptor that is no socket, or a socket of another
/// type or domain; `getsockopt(2)`'s other errors.
pub(crate) fn check_socket(
    fd: &impl std::os::fd::AsRawFd,
    ty: libc::c_int,
    domains: &[libc::c_int],
) -> io::Result<()> {
    let option = |name| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the value is a live c_int and `len` its size, which getsockopt may only
        // write within.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        match rc {
            0 => Ok(value),
            _ => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENOTSOCK) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the descriptor is not a socket",
                )),
                e => Err(e),
            },
        }
    };
    if option(libc::SO_TYPE)? != ty || !domains.contains(&option(libc::SO_DOMAIN)?) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is not of the type or domain this wrapper takes",
        ));
    }
    Ok(())
}

/// Checks that a `sockaddr_un` can hold `path`.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] for a path longer than 107 bytes or holding a NUL byte.
pub(crate) fn check_unix_path(path: &Path) -> io::Result<()> {
    Op::<Message>::connect_unix(path, 0).map(drop)
}

/// Checks that `msg`'s descriptor names one non-empty slice of its own buffers, as a datagram
/// operation needs.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] otherwise.
pub(crate) fn check_datagram(msg: &Message) -> io::Result<()> {
    let invalid = |why| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    match msg.descriptor().slices() {
        [] => invalid("an empty descriptor: a datagram operation needs at least one byte"),
        &[key] if key.len > 0 && msg.owns(key) => Ok(()),
        &[_] => invalid("the descriptor names bytes outside the message's buffers"),
        _ => invalid("a datagram operation takes a descriptor of one slice"),
    }
}

/// The future of one receive or send (`recv`, `send`, `send_zc` of the socket types): the
/// count and the buffer. Dropping it cancels the operation; the buffer goes back to the pool
/// with the operation's final completion (for `send_zc`, its `F_NOTIF` notification).
#[must_use = "futures do nothing unless polled; a dropped receive or send is cancelled"]
#[derive(Debug)]
pub struct Transfer(TransferState);

#[derive(Debug)]
enum TransferState {
    Running(Submit<NetIo>),
    /// Resolved without the kernel (an empty descriptor).
    Ready(Option<(io::Result<usize>, Message)>),
}

impl Transfer {
    /// One `kind` on the socket of `queues`, on the bytes `buf`'s descriptor names. An empty
    /// descriptor completes at once with 0 (the adapters would read an empty descriptor as the
    /// whole first buffer).
    pub(crate) fn new(queues: Arc<FdQueues>, kind: Kind, buf: Message) -> Self {
        if buf.descriptor().is_empty() {
            return Self(TransferState::Ready(Some((Ok(0), buf))));
        }
        Self(TransferState::Running(submit(queues, kind, Some(buf))))
    }

    /// A send of one datagram to `addr`.
    pub(crate) fn send_to(queues: Arc<FdQueues>, buf: Message, addr: SocketAddr) -> Self {
        if let Err(e) = check_datagram(&buf) {
            return Self(TransferState::Ready(Some((Err(e), buf))));
        }
        Self(TransferState::Running(submit(
            queues,
            Kind::SendTo(addr),
            Some(buf),
        )))
    }
}

impl Future for Transfer {
    type Output = (io::Result<usize>, Message);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            TransferState::Running(op) => Pin::new(op).poll(cx).map(with_buffer),
            TransferState::Ready(out) => Poll::Ready(
                out.take()
                    .expect("a receive or send future was polled after it completed"),
            ),
        }
    }
}

/// The future of `send_zc_all` (of [`Stream`](super::Stream) and
/// [`OwnedWriteHalf`](super::OwnedWriteHalf)): resolves at the send's own completion, to the
/// count of bytes the socket took (all of them), while the kernel keeps the buffer until its
/// `F_NOTIF` notification, after which the runtime gives it back to the pool. See the
/// [module docs](super#zero-copy-sends). Dropping it before it resolves cancels the send; the
/// buffer goes back to the pool with the send's final completion, as ever.
#[must_use = "futures do nothing unless polled; a dropped send is cancelled"]
#[derive(Debug)]
pub struct SendZcAll {
    /// `None` once resolved, or for an empty descriptor (which is never posted).
    op: Option<Submit<NetIo>>,
    len: usize,
}

impl SendZcAll {
    pub(crate) fn new(queues: Arc<FdQueues>, buf: Message) -> Self {
        let len = buf.descriptor().len();
        let op = (len > 0).then(|| submit(queues, Kind::SendZcAll, Some(buf)));
        Self { op, len }
    }
}

impl Future for SendZcAll {
    type Output = io::Result<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(op) = this.op.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let result = ready!(op.poll_first(cx));
        // Finished: dropping it posts nothing (the send runs on to its notification).
        this.op = None;
        Poll::Ready(match result {
            n if n < 0 => Err(io::Error::from_raw_os_error(-n)),
            n if n as usize == this.len => Ok(this.len),
            0 => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the socket took no bytes",
            )),
            // With MSG_WAITALL only an error (reported as the count so far) cuts it short.
            n => Err(io::Error::other(format!(
                "a zero-copy send was cut short: the socket took {n} of {} bytes",
                this.len
            ))),
        })
    }
}

/// The future of `recv_exact` and `send_all`: receives or sends until every byte the
/// descriptor names is done, one operation at a time, each on what is left. The descriptor is
/// given back as it came. Dropping it cancels the operation in flight; the bytes moved before
/// are lost with it.
#[must_use = "futures do nothing unless polled; a dropped receive or send is cancelled"]
#[derive(Debug)]
pub struct TransferAll {
    queues: Arc<FdQueues>,
    kind: Kind,
    /// The descriptor as the caller gave it.
    whole: Descriptor,
    /// The slice of `whole` in progress, and the bytes of it done.
    slice: usize,
    done: u32,
    state: TransferState,
}

impl TransferAll {
    /// `kind` (a receive or a send) on the socket of `queues` until `buf`'s descriptor's bytes
    /// are all done.
    pub(crate) fn new(queues: Arc<FdQueues>, kind: Kind, buf: Message) -> Self {
        let whole = buf.descriptor().clone();
        let mut this = Self {
            queues,
            kind,
            whole,
            slice: 0,
            done: 0,
            state: TransferState::Ready(None),
        };
        this.next(buf);
        this
    }

    /// What is left of the slice in progress (the next slice once one is done), if any.
    fn rest(&mut self) -> Option<BufKey> {
        let slices = self.whole.slices();
        while let Some(key) = slices.get(self.slice) {
            if self.done < key.len {
                return Some(BufKey {
                    region: key.region,
                    offset: key.offset + self.done,
                    len: key.len - self.done,
                });
            }
            self.slice += 1;
            self.done = 0;
        }
        None
    }

    /// Starts the next operation on what is left, or finishes.
    fn next(&mut self, mut buf: Message) {
        match self.rest() {
            Some(rest) => {
                buf.descriptor_mut()
                    .set_slices(&[rest])
                    .expect("one slice always fits");
                let op = submit(Arc::clone(&self.queues), self.kind.clone(), Some(buf));
                self.state = TransferState::Running(op);
            }
            None => self.finish(Ok(()), buf),
        }
    }

    fn finish(&mut self, result: io::Result<()>, mut buf: Message) {
        *buf.descriptor_mut() = self.whole.clone();
        self.state = TransferState::Ready(Some((result.map(|()| 0), buf)));
    }
}

impl Future for TransferAll {
    type Output = (io::Result<()>, Message);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let op = match &mut this.state {
                TransferState::Running(op) => op,
                TransferState::Ready(out) => {
                    let (result, buf) = out
                        .take()
                        .expect("a receive or send future was polled after it completed");
                    return Poll::Ready((result.map(drop), buf));
                }
            };
            let (result, buf) = with_buffer(ready!(Pin::new(op).poll(cx)));
            match result {
                Ok(0) if matches!(this.kind, Kind::Recv) => this.finish(
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection before the buffer was filled",
                    )),
                    buf,
                ),
                Ok(0) => this.finish(
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the socket took no bytes",
                    )),
                    buf,
                ),
                Ok(n) => {
                    this.done += n as u32;
                    this.next(buf);
                }
                Err(e) => this.finish(Err(e), buf),
            }
        }
    }
}

/// The future of a datagram socket's `recv_from`: the count and the source address, and the
/// buffer. Dropping it cancels the receive; the buffer goes back to the pool with its final
/// completion.
#[must_use = "futures do nothing unless polled; a dropped receive is cancelled"]
#[derive(Debug)]
pub struct RecvFrom {
    op: TransferState,
    from: Option<Arc<PeerAddr>>,
}

impl RecvFrom {
    pub(crate) fn new(queues: Arc<FdQueues>, buf: Message) -> Self {
        if let Err(e) = check_datagram(&buf) {
            return Self {
                op: TransferState::Ready(Some((Err(e), buf))),
                from: None,
            };
        }
        let from = PeerAddr::new();
        let op = submit(queues, Kind::RecvFrom(Arc::clone(&from)), Some(buf));
        Self {
            op: TransferState::Running(op),
            from: Some(from),
        }
    }
}

impl Future for RecvFrom {
    type Output = (io::Result<(usize, SocketAddr)>, Message);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (result, buf) = match &mut this.op {
            TransferState::Running(op) => with_buffer(ready!(Pin::new(op).poll(cx))),
            TransferState::Ready(out) => out
                .take()
                .expect("a receive future was polled after it completed"),
        };
        let from = this.from.take();
        let result = result.and_then(|n| {
            let raw = from.and_then(PeerAddr::take).ok_or_else(|| {
                io::Error::other("the receive's source address is still held by the operation")
            })?;
            Ok((n, inet_addr(&raw)?))
        });
        Poll::Ready((result, buf))
    }
}

/// The builder of an accept: unlike other operations, its result is a resource (the new
/// socket), which is closed if the future is gone when it comes.
pub(crate) struct AcceptIo(Arc<PeerAddr>);

impl Build for AcceptIo {
    const ORPHAN: Option<fn(i32)> = Some(close_orphan);

    #[inline(always)]
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        drop(buf);
        Op::accept(self.0, cookie)
    }
}

/// Closes a connection accepted for a future that was dropped.
pub(crate) fn close_orphan(fd: i32) {
    // SAFETY: `fd` is the result of a successful accept whose future is gone: a new descriptor
    // that nobody else has seen, so this is its only owner.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// A peer's address as the kernel wrote it: the storage and the length used.
pub(crate) type RawAddr = (libc::sockaddr_storage, libc::socklen_t);

/// Accepts one connection on the listening socket of `queues`: the new socket and the peer's
/// address.
///
/// Off the workers (in `block_on`), the whole accept runs as a task on a worker, so that the
/// new descriptor is owned there the moment it exists: a caller that goes away after the
/// accept completed, but before it looked, drops an owned descriptor (closing it) rather than
/// a bare number in a finished operation's result.
pub(crate) async fn accept(queues: Arc<FdQueues>) -> io::Result<(OwnedFd, RawAddr)> {
    match crate::context::runtime() {
        Some(shared) if !crate::context::on_worker() => {
            let mut task = AbortOnDrop(shared.spawn(accept_here(queues)));
            match (&mut task.0).await {
                Ok(accepted) => accepted,
                Err(e) => match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    Err(e) => Err(io::Error::other(e.to_string())),
                },
            }
        }
        _ => accept_here(queues).await,
    }
}

/// Aborts the task when dropped (its operations are cancelled; an output it made is dropped).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`accept`] on this thread's worker.
async fn accept_here(queues: Arc<FdQueues>) -> io::Result<(OwnedFd, RawAddr)> {
    let peer = PeerAddr::new();
    let done = Submit::new(Route::Fd(queues), None, AcceptIo(Arc::clone(&peer))).await;
    let fd = done.io_result()?;
    // SAFETY: a successful accept's result is a new descriptor, handed to no one else: this
    // completion is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The adapter drops the operation (and its reference) before it hands out the final
    // completion, so this is the last one.
    let addr = PeerAddr::take(peer).ok_or_else(|| {
        io::Error::other("the accept's peer address is still held by the operation")
    })?;
    Ok((fd, addr))
}

/// An internet socket address from its raw form.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidData`] for another family, or a length too short for its own.
pub(crate) fn inet_addr((storage, len): &RawAddr) -> io::Result<SocketAddr> {
    let len = *len as usize;
    let family = libc::c_int::from(storage.ss_family);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an internet socket address");
    if family == libc::AF_INET && len >= std::mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: the family says the storage holds a sockaddr_in, which it is large and aligned
        // enough for.
        let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
        Ok(SocketAddr::from((ip, u16::from_be(a.sin_port))))
    } else if family == libc::AF_INET6 && len >= std::mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: as above, for a sockaddr_in6.
        let a =
            unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
        Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
            a.sin6_addr.s6_addr.into(),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        )))
    } else {
        Err(bad())
    }
}
