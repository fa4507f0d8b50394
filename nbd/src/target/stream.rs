//! The two halves of a client connection, as the server uses them: [`RecvHalf`] and
//! [`SendHalf`], implemented for the runtime's stream sockets (TCP and Unix), so one connection
//! code serves both. A runtime stream takes its operations by `&self` from any task, so its
//! halves are two handles to it.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use regio_pool::Message;
use regio_runtime::net::{Stream, StreamSocket};
use regio_runtime::region::Region;

/// The receiving half of a connection.
pub trait RecvHalf: Send + Sync + 'static {
    /// One receive into the descriptor's bytes: the count, 0 if the peer closed.
    fn recv(&self, buf: Message) -> impl Future<Output = (io::Result<usize>, Message)> + Send;
    /// Receives until the descriptor's bytes are all filled; `UnexpectedEof` if the peer
    /// closes first.
    fn recv_exact(&self, buf: Message) -> impl Future<Output = (io::Result<()>, Message)> + Send;
}

/// The sending half of a connection (a clone is another handle to it).
pub trait SendHalf: Clone + Send + Sync + 'static {
    /// Sends all the descriptor's bytes.
    fn send_all(&self, buf: Message) -> impl Future<Output = (io::Result<()>, Message)> + Send;
    /// Sends the descriptor's bytes without copying them (`SEND_ZC`); resolves once the kernel
    /// is done with the buffer, with the count sent (which may be short) and the buffer.
    fn send_zc(&self, buf: Message) -> impl Future<Output = (io::Result<usize>, Message)> + Send;
    /// Sends all the descriptor's bytes without copying them (`SEND_ZC`); resolves once the
    /// socket took them all, with the count, while the kernel may still read the buffer: the
    /// runtime gives it back to the pool when the kernel is done with it. A send made after
    /// this resolved goes out after these bytes.
    fn send_zc_all(&self, buf: Message) -> impl Future<Output = io::Result<usize>> + Send;
    /// Sends the `len` bytes of `region` from `offset` without copying them (`SEND_ZC` from
    /// the registered region); resolves once the socket took them all, while the kernel may
    /// still read the region (each send keeps a lease on it until the kernel is done).
    /// `EOPNOTSUPP` (and nothing sent) where the socket has no zero-copy sends.
    fn send_region(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends the `len` bytes of `region` from `offset`, copied by the kernel while the sends
    /// run; resolves once the socket took them all.
    fn send_region_copied(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// The bytes sent on the connection that the client has not acknowledged yet (TCP) or not
    /// read yet (a Unix socket), those the socket has not sent included: `SIOCOUTQ`. 0 for a
    /// TCP connection that is closed (the client reset it): its socket dropped what it queued,
    /// though `SIOCOUTQ` still counts those bytes.
    ///
    /// # Errors
    ///
    /// As for `ioctl(2)`.
    fn unacknowledged(&self) -> io::Result<usize>;
    /// Shuts the connection down both ways.
    fn close(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Resets a TCP connection at once (`connect` to `AF_UNSPEC`, which disconnects it): the
    /// bytes it still queues are dropped rather than kept for a client that stopped reading
    /// them, and with them the hold of the zero-copy sends that queued them on their memory.
    /// Operations in flight on it end. Other sockets are left as they are.
    fn abort(&self);
}

/// A connection that splits into halves the server can use on two tasks.
pub trait Connection: Send + 'static {
    /// The receiving half.
    type Recv: RecvHalf;
    /// The sending half.
    type Send: SendHalf;
    /// Splits the connection.
    fn split(self) -> (Self::Recv, Self::Send);
    /// Whether the client is on this host's loopback interface, where the kernel copies a
    /// zero-copy send's bytes when the receiving socket queues them: there `SEND_ZC` only adds
    /// a notification to a copy. That is a client at a loopback address (127.0.0.0/8, `::1`,
    /// or an IPv4 one mapped into IPv6), and one of this host that reached the server at
    /// another of its addresses (the host's traffic to itself goes through the loopback
    /// interface whatever the address): such a connection has the same address at both ends.
    fn peer_is_loopback(&self) -> bool;
}

impl<S: StreamSocket> RecvHalf for Arc<Stream<S>> {
    fn recv(&self, buf: Message) -> impl Future<Output = (io::Result<usize>, Message)> + Send {
        Stream::recv(self, buf)
    }

    fn recv_exact(&self, buf: Message) -> impl Future<Output = (io::Result<()>, Message)> + Send {
        Stream::recv_exact(self, buf)
    }
}

impl<S: StreamSocket> SendHalf for Arc<Stream<S>> {
    fn send_all(&self, buf: Message) -> impl Future<Output = (io::Result<()>, Message)> + Send {
        Stream::send_all(self, buf)
    }

    fn send_zc(&self, buf: Message) -> impl Future<Output = (io::Result<usize>, Message)> + Send {
        Stream::send_zc(self, buf)
    }

    fn send_zc_all(&self, buf: Message) -> impl Future<Output = io::Result<usize>> + Send {
        Stream::send_zc_all(self, buf)
    }

    fn send_region(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> impl Future<Output = io::Result<()>> + Send {
        let send = Stream::send_region(self, region, offset, len);
        async move { send?.await }
    }

    fn send_region_copied(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> impl Future<Output = io::Result<()>> + Send {
        let send = Stream::send_region_copied(self, region, offset, len);
        async move { send?.await }
    }

    fn unacknowledged(&self) -> io::Result<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int, into a live local; the descriptor is
        // the stream's own, open while `self` lives.
        let done = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        if queued > 0 && tcp_state(self.as_raw_fd()) == Some(TCP_CLOSE) {
            return Ok(0);
        }
        Ok(queued.max(0) as usize)
    }

    async fn close(&self) -> io::Result<()> {
        match self.shutdown(Shutdown::Both).await {
            // The peer closed first: nothing left to shut.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            other => other,
        }
    }

    fn abort(&self) {
        let unspec = libc::sockaddr {
            sa_family: libc::AF_UNSPEC as libc::sa_family_t,
            sa_data: [0; 14],
        };
        // SAFETY: `connect` reads `size_of::<sockaddr>()` bytes from `unspec`, a local that
        // outlives the call; the descriptor is the stream's own, open while `self` lives.
        let done = unsafe {
            libc::connect(
                self.as_raw_fd(),
                &raw const unspec,
                std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
            )
        };
        if done != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "aborting a connection");
        }
    }
}

/// `TCP_CLOSE` of `linux/tcp_states.h`: a reset connection is in it, its write queue purged.
const TCP_CLOSE: u8 = 7;

/// The state of a TCP socket (`tcpi_state` of `TCP_INFO`); `None` for another socket.
fn tcp_state(fd: std::os::fd::RawFd) -> Option<u8> {
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, a live local of that size,
    // and the new length into `len`; the descriptor is open while the caller's stream lives.
    let done = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    (done == 0 && len >= 1).then_some(info.tcpi_state)
}

/// A connection's two halves: the stream, shared.
fn halves<S: StreamSocket>(stream: Stream<S>) -> (Arc<Stream<S>>, Arc<Stream<S>>) {
    let both = Arc::new(stream);
    (Arc::clone(&both), both)
}

impl Connection for Stream<std::net::TcpStream> {
    type Recv = Arc<Self>;
    type Send = Arc<Self>;

    fn split(self) -> (Self::Recv, Self::Send) {
        halves(self)
    }

    fn peer_is_loopback(&self) -> bool {
        let Ok(peer) = self.peer_addr() else {
            return false;
        };
        let loopback = match peer.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback(),
            std::net::IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        loopback || self.local_addr().is_ok_and(|local| local.ip() == peer.ip())
    }
}

impl Connection for Stream<std::os::unix::net::UnixStream> {
    type Recv = Arc<Self>;
    type Send = Arc<Self>;

    fn split(self) -> (Self::Recv, Self::Send) {
        halves(self)
    }

    /// A Unix socket takes no zero-copy sends at all.
    fn peer_is_loopback(&self) -> bool {
        false
    }
}
