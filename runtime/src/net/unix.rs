//! Unix domain stream sockets: [`UnixListener`] and [`UnixStream`], the [`Listener`] and
//! [`Stream`] types over the standard library's Unix sockets (the same operations as TCP's).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::listener::{ListenSocket, Listener};
use super::op::{self, Kind, RawAddr};
use super::stream::Stream;

/// A Unix domain listening socket.
pub type UnixListener = Listener<std::os::unix::net::UnixListener>;

/// A Unix domain stream connection.
pub type UnixStream = Stream<std::os::unix::net::UnixStream>;

impl ListenSocket for std::os::unix::net::UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    type Addr = SocketAddr;

    fn stream(fd: std::os::fd::OwnedFd) -> std::os::unix::net::UnixStream {
        fd.into()
    }

    fn peer(raw: &RawAddr) -> io::Result<SocketAddr> {
        unix_addr(raw)
    }
}

impl Listener<std::os::unix::net::UnixListener> {
    /// Binds a Unix listening socket to `path` (which must not exist yet).
    ///
    /// # Errors
    ///
    /// As for [`std::os::unix::net::UnixListener::bind`].
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        std::os::unix::net::UnixListener::bind(path).map(Self::from_std)
    }

    /// The address it listens on.
    ///
    /// # Errors
    ///
    /// As for `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.as_std().local_addr()
    }
}

impl Stream<std::os::unix::net::UnixStream> {
    /// Connects to the socket bound at `path` (a new socket, and `IORING_OP_CONNECT` on a
    /// worker's ring).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a path longer than 107 bytes or holding a NUL
    /// byte; the connect's error ([`io::ErrorKind::NotFound`] when nothing is bound there,
    /// [`io::ErrorKind::ConnectionRefused`] when nothing listens); or the socket's creation
    /// error.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path: Arc<Path> = Arc::from(path.as_ref());
        op::check_unix_path(&path)?;
        let socket = op::socket(libc::AF_UNIX)?;
        let stream = Self::wrap(std::os::unix::net::UnixStream::from(socket));
        op::connect(stream.erased(), Kind::ConnectUnix(path)).await?;
        Ok(stream)
    }

    /// Wraps a connected standard Unix stream.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for checks on the socket.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        Ok(Self::wrap(stream))
    }

    /// A connected pair (`socketpair(2)`).
    ///
    /// # Errors
    ///
    /// As for [`std::os::unix::net::UnixStream::pair`].
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((Self::wrap(a), Self::wrap(b)))
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As for `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.as_std().peer_addr()
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// As for `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.as_std().local_addr()
    }
}

/// A Unix socket address from its raw form: a path, an abstract name, or unnamed (the usual
/// peer of a listener: clients rarely bind).
fn unix_addr((storage, len): &RawAddr) -> io::Result<SocketAddr> {
    if libc::c_int::from(storage.ss_family) != libc::AF_UNIX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a Unix socket address",
        ));
    }
    // SAFETY: the family says the storage holds a sockaddr_un, which it is large and aligned
    // enough for.
    let sun = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
    let header = std::mem::size_of::<libc::sa_family_t>();
    let path_len = (*len as usize)
        .saturating_sub(header)
        .min(sun.sun_path.len());
    let bytes: Vec<u8> = sun.sun_path[..path_len].iter().map(|&c| c as u8).collect();
    match bytes.split_first() {
        None => unnamed(),
        Some((0, name)) => SocketAddr::from_abstract_name(name),
        Some(_) => {
            use std::os::unix::ffi::OsStrExt;
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(&bytes[..end]))
        }
    }
}

/// The unnamed Unix socket address: the standard library makes one only as an unbound
/// socket's own address, so one is taken from such a socket, once.
fn unnamed() -> io::Result<SocketAddr> {
    static UNNAMED: OnceLock<SocketAddr> = OnceLock::new();
    if let Some(addr) = UNNAMED.get() {
        return Ok(addr.clone());
    }
    let addr = UnixDatagram::unbound()?.local_addr()?;
    Ok(UNNAMED.get_or_init(|| addr).clone())
}
