//! [`UdpSocket`]: datagrams on the workers' rings, on pool messages.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use regio_pool::Message;

use super::op::{self, Kind, RecvFrom, Transfer};
use crate::queues::{AnyFd, FdQueues};

/// A UDP socket. Each operation moves one datagram: `send`/`recv` on a connected socket
/// (registered-buffer sends and receives, as for streams), `send_to`/`recv_from` with an
/// address (`SENDMSG`/`RECVMSG`, which copy through the buffer's address: the registration is
/// not used). A datagram longer than the descriptor's bytes is cut to them.
pub struct UdpSocket {
    queues: Arc<FdQueues<std::net::UdpSocket>>,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl UdpSocket {
    /// Binds a UDP socket to the first address of `addr` that takes it.
    ///
    /// # Errors
    ///
    /// As for [`std::net::UdpSocket::bind`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        std::net::UdpSocket::bind(addr).and_then(Self::from_std)
    }

    /// Wraps a standard UDP socket. It is bound to the runtime whose worker first uses it.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if its descriptor is not a UDP socket (a
    /// `std::net::UdpSocket` can be made from any `OwnedFd`).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        op::check_socket(&socket, libc::SOCK_DGRAM, &[libc::AF_INET, libc::AF_INET6])?;
        Ok(Self {
            queues: Arc::new(FdQueues::fixed(socket)),
        })
    }

    /// The fixed-file slot its operations name (with `IOSQE_FIXED_FILE`), once a worker has
    /// used it; `None` before, and when it names its plain descriptor (no slot was free). See
    /// [`net`](crate::net#descriptors-and-fixed-file-slots).
    pub fn fixed_slot(&self) -> Option<u32> {
        self.queues.fixed_slot()
    }

    /// The standard socket, for options this type does not cover.
    pub fn as_std(&self) -> &std::net::UdpSocket {
        self.queues.handle()
    }

    fn erased(&self) -> Arc<FdQueues> {
        let queues: Arc<FdQueues<AnyFd>> = self.queues.clone();
        queues
    }

    /// Sets the default peer of [`send`](Self::send) and the only source
    /// [`recv`](Self::recv) takes datagrams from (`connect(2)`, which does not wait for UDP).
    ///
    /// # Errors
    ///
    /// As for [`std::net::UdpSocket::connect`].
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.as_std().connect(addr)
    }

    /// This socket's address.
    ///
    /// # Errors
    ///
    /// As for `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.as_std().local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// As for `getpeername(2)`: `ENOTCONN` before [`connect`](Self::connect).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.as_std().peer_addr()
    }

    /// Sends the bytes `buf`'s descriptor names as one datagram to the connected peer. An
    /// empty descriptor sends nothing and completes with 0.
    pub fn send(&self, buf: Message) -> Transfer {
        Transfer::new(self.erased(), Kind::Send, buf)
    }

    /// Receives one datagram from the connected peer into the bytes `buf`'s descriptor names.
    pub fn recv(&self, buf: Message) -> Transfer {
        Transfer::new(self.erased(), Kind::Recv, buf)
    }

    /// Sends the bytes `buf`'s descriptor names as one datagram to `addr`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an empty descriptor or one of several slices; the
    /// send's error.
    pub fn send_to(&self, buf: Message, addr: SocketAddr) -> Transfer {
        Transfer::send_to(self.erased(), buf, addr)
    }

    /// Receives one datagram into the bytes `buf`'s descriptor names: its length and its
    /// source.
    ///
    /// # Errors
    ///
    /// As for [`send_to`](Self::send_to).
    pub fn recv_from(&self, buf: Message) -> RecvFrom {
        RecvFrom::new(self.erased(), buf)
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.queues.handle().as_raw_fd()
    }
}
