//! [`Listener`]: a listening socket (TCP or Unix) that accepts connections through the
//! workers' rings, and what is particular to TCP ([`TcpListener`]).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::incoming::Incoming;
use super::op::{self, RawAddr};
use super::stream::{Stream, StreamSocket};
use crate::queues::{AnyFd, FdQueues};

/// A standard listening socket that a [`Listener`] can wrap: `std::net::TcpListener` or
/// `std::os::unix::net::UnixListener`.
pub trait ListenSocket: AsRawFd + Send + Sync + 'static + sealed::Sealed {
    /// The connected sockets it accepts.
    type Stream: StreamSocket;
    /// The address of a peer.
    type Addr: Send + 'static;

    /// The stream socket of an accepted descriptor.
    fn stream(fd: OwnedFd) -> Self::Stream;

    /// The peer's address, as the accept wrote it.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidData`] for an address of another family.
    fn peer(raw: &RawAddr) -> io::Result<Self::Addr>;
}

pub(crate) mod sealed {
    /// Only the socket types of this crate's choosing.
    pub trait Sealed {}
    impl Sealed for std::net::TcpListener {}
    impl Sealed for std::os::unix::net::UnixListener {}
}

impl ListenSocket for std::net::TcpListener {
    type Stream = std::net::TcpStream;
    type Addr = SocketAddr;

    fn stream(fd: OwnedFd) -> std::net::TcpStream {
        fd.into()
    }

    fn peer(raw: &RawAddr) -> io::Result<SocketAddr> {
        op::inet_addr(raw)
    }
}

/// A listening socket whose accepts go through the workers' rings: [`TcpListener`] or
/// [`UnixListener`](super::UnixListener).
pub struct Listener<L> {
    queues: Arc<FdQueues<L>>,
}

/// A TCP listening socket.
pub type TcpListener = Listener<std::net::TcpListener>;

impl<L: ListenSocket> std::fmt::Debug for Listener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.queues.handle().as_raw_fd())
            .finish()
    }
}

impl<L: ListenSocket> Listener<L> {
    /// Wraps a standard listening socket. It is bound to the runtime whose worker first uses
    /// it.
    pub fn from_std(listener: L) -> Self {
        Self {
            queues: Arc::new(FdQueues::fixed(listener)),
        }
    }

    /// The fixed-file slot its operations name (with `IOSQE_FIXED_FILE`), once a worker has
    /// used it; `None` before, and when it names its plain descriptor (no slot was free). See
    /// [`net`](crate::net#descriptors-and-fixed-file-slots).
    pub fn fixed_slot(&self) -> Option<u32> {
        self.queues.fixed_slot()
    }

    /// The standard socket, for options this type does not cover.
    pub fn as_std(&self) -> &L {
        self.queues.handle()
    }

    /// Accepts one connection (`IORING_OP_ACCEPT` on the current worker's ring): the stream and
    /// the peer's address. Dropping the future cancels the accept; a connection accepted in
    /// the meantime is closed.
    ///
    /// # Errors
    ///
    /// The accept's error (`EMFILE` when out of descriptors, ...).
    pub fn accept(
        &self,
    ) -> impl Future<Output = io::Result<(Stream<L::Stream>, L::Addr)>> + Send + 'static {
        let queues: Arc<FdQueues<AnyFd>> = self.queues.clone();
        async move {
            let (fd, raw) = op::accept(queues).await?;
            let stream = L::stream(fd);
            Ok((Stream::wrap(stream), L::peer(&raw)?))
        }
    }
}

impl<L: ListenSocket> Listener<L> {
    /// Its connections, from one multishot accept armed on the current worker's ring and armed
    /// again whenever the kernel ends it; dropping the [`Incoming`] cancels it, and closes the
    /// connections accepted meanwhile.
    ///
    /// ```
    /// use regio_runtime::net::{TcpListener, TcpStream};
    ///
    /// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let served = rt.spawn(async move {
    ///     let mut incoming = listener.incoming();
    ///     for _ in 0..3 {
    ///         let stream = incoming.accept().await?;
    ///         stream.send_all(b"hi".to_vec()).await.0?;
    ///     }
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// rt.block_on(async {
    ///     for _ in 0..3 {
    ///         let client = TcpStream::connect(addr).await?;
    ///         let (got, buf) = client.recv_exact(vec![0u8; 2]).await;
    ///         got?;
    ///         assert_eq!(buf, b"hi");
    ///     }
    ///     served.await.unwrap()
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn incoming(&self) -> Incoming<L> {
        Incoming::new(Arc::clone(&self.queues))
    }
}

impl<L: ListenSocket> AsRawFd for Listener<L> {
    fn as_raw_fd(&self) -> RawFd {
        self.queues.handle().as_raw_fd()
    }
}

impl Listener<std::net::TcpListener> {
    /// Binds a TCP listening socket to the first address of `addr` that takes it, with
    /// `SO_REUSEADDR` (as the standard library's `TcpListener::bind` sets it on Unix).
    ///
    /// # Errors
    ///
    /// As for [`std::net::TcpListener::bind`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        std::net::TcpListener::bind(addr).map(Self::from_std)
    }

    /// The address it listens on.
    ///
    /// # Errors
    ///
    /// As for `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.queues.handle().local_addr()
    }
}
