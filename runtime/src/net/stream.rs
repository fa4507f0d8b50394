//! [`Stream`]: a connected stream socket (TCP or Unix) on the workers' rings, and what is
//! particular to TCP ([`TcpStream`]).

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use regio_pool::Message;

use super::op::{self, Kind, SendZcAll, Transfer, TransferAll};
use super::sendfile;
use crate::buf::{IoBuf, Lent};
use crate::fs::File;
use crate::queues::{AnyFd, FdQueues};

/// A standard stream socket that a [`Stream`] can wrap: `std::net::TcpStream` or
/// `std::os::unix::net::UnixStream`.
pub trait StreamSocket: AsRawFd + Send + Sync + 'static + sealed::Sealed {
    /// Shuts down the reading side, the writing side, or both.
    ///
    /// # Errors
    ///
    /// As for `shutdown(2)`.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

pub(crate) mod sealed {
    /// Only the socket types of this crate's choosing.
    pub trait Sealed {}
    impl Sealed for std::net::TcpStream {}
    impl Sealed for std::os::unix::net::UnixStream {}
}

impl StreamSocket for std::net::TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        std::net::TcpStream::shutdown(self, how)
    }
}

impl StreamSocket for std::os::unix::net::UnixStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        std::os::unix::net::UnixStream::shutdown(self, how)
    }
}

/// A connected stream socket, used through the workers' rings: [`TcpStream`] or
/// [`UnixStream`](super::UnixStream).
///
/// Operations take a pool [`Message`] and give it back with the result; each acts on the bytes
/// the message's descriptor names (a fresh message's whole capacity;
/// `msg.descriptor_mut().truncate(n)` makes it `n` bytes). `recv`, `recv_exact`, `send` and
/// `send_all` take a plain `Vec<u8>`, `Box<[u8]>` or `BytesMut` too, copied through a pool
/// message ([`buf`](crate::buf) module). See the [module docs](super) for
/// ownership and cancellation.
pub struct Stream<S> {
    pub(crate) queues: Arc<FdQueues<S>>,
}

/// A TCP connection.
pub type TcpStream = Stream<std::net::TcpStream>;

impl<S: StreamSocket> std::fmt::Debug for Stream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("fd", &self.queues.handle().as_raw_fd())
            .finish()
    }
}

impl<S: StreamSocket> Stream<S> {
    /// Wraps a connected standard socket. It is bound to the runtime whose worker first uses
    /// it.
    pub(crate) fn wrap(socket: S) -> Self {
        Self {
            queues: Arc::new(FdQueues::fixed(socket)),
        }
    }

    /// The socket's queues, as operations hold them.
    pub(crate) fn erased(&self) -> Arc<FdQueues> {
        let queues: Arc<FdQueues<AnyFd>> = self.queues.clone();
        queues
    }

    /// The fixed-file slot its operations name (with `IOSQE_FIXED_FILE`), once a worker has
    /// used it; `None` before, and when it names its plain descriptor (no slot was free). See
    /// [`net`](crate::net#descriptors-and-fixed-file-slots).
    pub fn fixed_slot(&self) -> Option<u32> {
        self.queues.fixed_slot()
    }

    /// The standard socket, for options this type does not cover.
    pub fn as_std(&self) -> &S {
        self.queues.handle()
    }

    /// One receive into `buf` (a [`Message`]: the bytes its descriptor names; a plain
    /// [`IoBuf`]: its whole length, copied out of a pool message); gives back the count and
    /// the buffer. `Ok(0)` means the peer closed its side (or the buffer names no bytes). The
    /// descriptor (or the plain buffer's length) is left as it was: truncate it to the count
    /// to pass on just the data.
    pub fn recv<B: IoBuf>(&self, buf: B) -> Lent<B, Transfer, usize> {
        let queues = self.erased();
        Lent::one(buf, true, move |msg| Transfer::new(queues, Kind::Recv, msg))
    }

    /// Receives until the bytes `buf` names are all filled.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::UnexpectedEof`] if the peer closes first, or the failed receive's
    /// error; the bytes received until then are in the buffer but not counted.
    pub fn recv_exact<B: IoBuf>(&self, buf: B) -> Lent<B, TransferAll, ()> {
        Lent::all(buf, true, self.erased(), |queues, msg| {
            TransferAll::new(queues, Kind::Recv, msg)
        })
    }

    /// One send of the bytes `buf` names (a plain [`IoBuf`] is copied into a pool message
    /// first); gives back the count (which may be short) and the buffer.
    pub fn send<B: IoBuf>(&self, buf: B) -> Lent<B, Transfer, usize> {
        let queues = self.erased();
        Lent::one(buf, false, move |msg| {
            Transfer::new(queues, Kind::Send, msg)
        })
    }

    /// Sends all the bytes `buf` names, sending the rest again after a short send.
    pub fn send_all<B: IoBuf>(&self, buf: B) -> Lent<B, TransferAll, ()> {
        Lent::all(buf, false, self.erased(), |queues, msg| {
            TransferAll::new(queues, Kind::Send, msg)
        })
    }

    /// Sends the bytes `buf`'s descriptor names without copying them (`IORING_OP_SEND_ZC` on
    /// the registered buffer); resolves, with the count (which may be short) and the buffer,
    /// once the kernel has let go of the buffer (its `F_NOTIF` notification). Dropping the
    /// future cancels the send; the buffer stays parked until that notification. See the
    /// [module docs](super#zero-copy-sends).
    pub fn send_zc(&self, buf: Message) -> Transfer {
        Transfer::new(self.erased(), Kind::SendZc, buf)
    }

    /// Sends every byte `buf`'s descriptor names without copying them (`IORING_OP_SEND_ZC`
    /// with `MSG_WAITALL`, so the kernel sends the rest of a short send itself), and keeps
    /// the buffer: the future resolves at the send's own completion, with the count (all the
    /// bytes), while the kernel still reads the buffer; the runtime gives it back to the pool
    /// after the `F_NOTIF` notification. A send posted on this socket after the future
    /// resolved goes out after these bytes, so a stream writer can go on at once. Dropping the
    /// future before it resolves cancels the send. See the
    /// [module docs](super#zero-copy-sends).
    ///
    /// # Errors
    ///
    /// The send's error (`EOPNOTSUPP` on a socket without zero-copy sends, such as a Unix
    /// socket: nothing was sent then); [`io::ErrorKind::WriteZero`] if the socket took no
    /// bytes, and an error of kind `Other` if it took some only (both mean the connection
    /// failed). An empty descriptor resolves at once to `Ok(0)`.
    pub fn send_zc_all(&self, buf: Message) -> SendZcAll {
        SendZcAll::new(self.erased(), buf)
    }

    /// Sends `len` bytes of `file` from `offset` without copying them through user space
    /// (io_uring splices through a pipe; see the [module docs](super#sending-a-file)); resolves
    /// to the bytes sent, `len` on success.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::UnexpectedEof`] if the file ends before `offset + len`;
    /// [`io::ErrorKind::InvalidInput`] if `offset + len` passes `i64::MAX`; a failed splice's
    /// error (`EPIPE` or `ECONNRESET` when the peer has gone).
    pub fn send_file(
        &self,
        file: &File,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = io::Result<u64>> + Send + 'static {
        let socket: Arc<dyn AsRawFd + Send + Sync> = self.queues.clone();
        sendfile::send_file(file.erased(), socket, offset, len)
    }

    /// Shuts down the reading side, the writing side, or both (`shutdown(2)`, which does not
    /// wait). Operations in flight are not cancelled: a receive then sees the end, a send an
    /// error.
    ///
    /// # Errors
    ///
    /// As for `shutdown(2)`: `ENOTCONN` on a socket that is not connected.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.queues.handle().shutdown(how)
    }
}

impl<S: StreamSocket> AsRawFd for Stream<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.queues.handle().as_raw_fd()
    }
}

impl Stream<std::net::TcpStream> {
    /// Connects to `addr` (a new socket, and `IORING_OP_CONNECT` on a worker's ring).
    ///
    /// # Errors
    ///
    /// The connect's error: [`io::ErrorKind::ConnectionRefused`] when nothing listens there,
    /// and so on; or the socket's creation error.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let domain = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let socket = op::socket(domain)?;
        let stream = Self::wrap(std::net::TcpStream::from(socket));
        op::connect(stream.erased(), Kind::Connect(addr)).await?;
        Ok(stream)
    }

    /// Wraps a connected standard TCP stream.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if its descriptor is not a TCP socket (a
    /// `std::net::TcpStream` can be made from any `OwnedFd`).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        op::check_socket(&stream, libc::SOCK_STREAM, &[libc::AF_INET, libc::AF_INET6])?;
        Ok(Self::wrap(stream))
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As for `getpeername(2)`: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.queues.handle().peer_addr()
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// As for `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.queues.handle().local_addr()
    }

    /// Turns Nagle's algorithm off (`TCP_NODELAY` on) or back on.
    ///
    /// # Errors
    ///
    /// As for `setsockopt(2)`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.queues.handle().set_nodelay(on)
    }
}
