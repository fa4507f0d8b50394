//! Socket operations: send, recv and send_zc on registered buffers; accept; connect.

use std::net::SocketAddr;

use super::{FileSlot, Kind, Op};

/// A socket address in the form the kernel reads, kept alive until the connect completes.
pub(crate) struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    fn new(addr: SocketAddr) -> Self {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        Self {
            storage,
            len: len as libc::socklen_t,
        }
    }

    pub(crate) fn raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        (&self.storage as *const _ as *const libc::sockaddr, self.len)
    }
}

impl<B> Op<B> {
    /// Sends `buf` on the work queue's socket. The kernel copies from the registered slice.
    pub fn send(buf: B, flags: i32, cookie: u64) -> Self {
        Self::new(Kind::Send { buf, flags }, cookie)
    }

    /// Receives into `buf` from the work queue's socket.
    pub fn recv(buf: B, flags: i32, cookie: u64) -> Self {
        Self::new(Kind::Recv { buf, flags }, cookie)
    }

    /// Sends `buf` with zero copies, from the fixed buffer. It completes twice: first with the
    /// byte count (flag `F_MORE`), then with the `F_NOTIF` notification when the kernel no longer
    /// reads the buffer. The buffer comes back only with the second one.
    pub fn send_zc(buf: B, flags: i32, cookie: u64) -> Self {
        Self::new(Kind::SendZc { buf, flags }, cookie)
    }

    /// Accepts one connection straight into fixed-file slot `slot` (a direct descriptor).
    /// Completes with 0. The slot is installed on the ring of this work queue only;
    /// [`share_file`](Op::share_file) copies it to another ring.
    pub fn accept_direct(slot: FileSlot, cookie: u64) -> Self {
        Self::new(Kind::Accept { slot }, cookie)
    }

    /// Accepts connections until cancelled, each into a fixed-file slot the kernel allocates on
    /// this work queue's ring (only; [`share_file`](Op::share_file) copies a slot to another
    /// ring); each completion's result is the slot number. The last completion has no `F_MORE`.
    pub fn accept_multishot(cookie: u64) -> Self {
        Self::new(Kind::AcceptMulti, cookie)
    }

    /// Receives until cancelled (or until the group runs dry), each completion into a buffer the
    /// kernel picks from provided-buffer group `group` (a [`ProvidedRing`](crate::ProvidedRing)
    /// on this work queue's CQ); [`Completion::buffer_id`](crate::Completion::buffer_id) names
    /// it. The last completion has no `F_MORE`.
    pub fn recv_multishot(group: u16, cookie: u64) -> Self {
        Self::new(Kind::RecvMulti { group }, cookie)
    }

    /// Connects the work queue's socket to `addr`.
    pub fn connect(addr: SocketAddr, cookie: u64) -> Self {
        Self::new(
            Kind::Connect {
                addr: Box::new(SockAddr::new(addr)),
            },
            cookie,
        )
    }
}
