//! Socket operations: send, recv and send_zc on registered buffers; accept; connect.

use std::net::SocketAddr;

use io_uring::{opcode, types};

use super::file::UNSET;
use super::{BufUse, FileSlot, FileUse, Keep, Op, Side, Special};

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
        let e = opcode::Send::new(UNSET, std::ptr::null(), 0)
            .flags(flags)
            .build();
        Self::new(e, &"send", Side::Send, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, BufUse::Addr)
    }

    /// Receives into `buf` from the work queue's socket.
    pub fn recv(buf: B, flags: i32, cookie: u64) -> Self {
        let e = opcode::Recv::new(UNSET, std::ptr::null_mut(), 0)
            .flags(flags)
            .build();
        Self::new(e, &"recv", Side::Recv, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, BufUse::Addr)
    }

    /// Sends `buf` with zero copies, from the fixed buffer. It completes twice: first with the
    /// byte count (flag `F_MORE`), then with the `F_NOTIF` notification when the kernel no longer
    /// reads the buffer. The buffer comes back only with the second one.
    pub fn send_zc(buf: B, flags: i32, cookie: u64) -> Self {
        let e = opcode::SendZc::new(UNSET, std::ptr::null(), 0)
            .buf_index(Some(0))
            .flags(flags)
            .build();
        Self::new(e, &"send_zc", Side::Send, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, BufUse::Fixed)
    }

    /// Accepts one connection straight into fixed-file slot `slot` (a direct descriptor).
    /// Completes with 0. The slot is installed on the ring of this work queue.
    pub fn accept_direct(slot: FileSlot, cookie: u64) -> Self {
        let op = |e| Self::new(e, &"accept_direct", Side::Recv, cookie).on(FileUse::Fd);
        match types::DestinationSlot::try_from_slot_target(slot.0) {
            Ok(dest) => op(
                opcode::Accept::new(UNSET, std::ptr::null_mut(), std::ptr::null_mut())
                    .file_index(Some(dest))
                    .build(),
            ),
            Err(_) => op(opcode::Nop::new().build()).special(Special::BadSlot(slot.0)),
        }
    }

    /// Accepts connections until cancelled, each into a fixed-file slot the kernel allocates on
    /// this work queue's ring; each completion's result is the slot number. The last
    /// completion has no `F_MORE`.
    pub fn accept_multishot(cookie: u64) -> Self {
        let e = opcode::AcceptMulti::new(UNSET)
            .allocate_file_index(true)
            .build();
        Self::new(e, &"accept_multishot", Side::Recv, cookie).on(FileUse::Fd)
    }

    /// Receives until cancelled (or until the group runs dry), each completion into a buffer the
    /// kernel picks from provided-buffer group `group` (a [`ProvidedRing`](crate::ProvidedRing)
    /// on this work queue's CQ); [`Completion::buffer_id`](crate::Completion::buffer_id) names
    /// it. The last completion has no `F_MORE`.
    pub fn recv_multishot(group: u16, cookie: u64) -> Self {
        let e = opcode::RecvMulti::new(UNSET, group).build();
        Self::new(e, &"recv_multishot", Side::Recv, cookie).on(FileUse::Fd)
    }

    /// Connects the work queue's socket to `addr`.
    pub fn connect(addr: SocketAddr, cookie: u64) -> Self {
        let keep = Box::new(Keep::Addr(SockAddr::new(addr)));
        let Keep::Addr(addr) = &*keep else {
            unreachable!("just made")
        };
        let (ptr, len) = addr.raw();
        // The SQE points into the box, which the operation keeps until its final completion.
        let e = opcode::Connect::new(UNSET, ptr, len).build();
        Self::new(e, &"connect", Side::Send, cookie)
            .on(FileUse::Fd)
            .keeping(keep)
    }
}
