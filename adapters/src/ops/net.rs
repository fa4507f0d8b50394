//! Socket operations: send, recv and send_zc on registered buffers; accept; connect.
//!
//! # Send and recv on registered buffers
//!
//! [`Op::send`] and [`Op::recv`] have the kernel reach the buffer through its registration (pages
//! pinned once, at registration) rather than through the process's page tables, wherever this
//! kernel allows it. The bytes are still copied into or out of socket buffers; only
//! [`Op::send_zc`] avoids that. The SQE depends on the kernel and the flags:
//!
//! | kernel | flags | SQE |
//! |---|---|---|
//! | Linux 7.2 and later | any | `SEND`/`RECV` with `IORING_RECVSEND_FIXED_BUF` and `buf_index` |
//! | before 7.2 | `0` | `WRITE_FIXED`/`READ_FIXED` on the socket, at offset 0 |
//! | before 7.2 | not `0` | plain `SEND`/`RECV` at the buffer's address: the registration is not used |
//!
//! Plain `SEND` and `RECV` take `IORING_RECVSEND_FIXED_BUF` from Linux 7.2 on (commit
//! 57ed21fad402, "io_uring/net: support registered buffer for plain send and recv"); before
//! that only the zero-copy sends accept the flag, and `SEND` or `RECV` with it fail with
//! `EINVAL`. Which row applies is found out once per process, when the first
//! [`Adapter`](crate::Adapter) is built, by sending and receiving a few bytes with the flag on a
//! throwaway ring and socket pair; any failure there selects the fallback, which works on every
//! kernel.
//!
//! The fallback for flags 0 is a fixed-buffer `write(2)` or `read(2)` on the socket, which the
//! kernel carries out as `send(2)` or `recv(2)` with flags 0, with one difference on the send
//! side: `IORING_OP_SEND` always adds `MSG_NOSIGNAL` and a write does not, so a send with flags 0
//! on a stream whose peer has gone away completes with `-EPIPE` and also sends `SIGPIPE` to the
//! thread that carried it out, as `write(2)` does. Without SQPOLL that is usually the program's
//! thread that submitted it, and a process that keeps `SIGPIPE`'s default action dies of it
//! (seen on Linux 6.18); with SQPOLL it is the kernel's SQPOLL thread, and the process lives.
//! Rust programs ignore `SIGPIPE` unless they opt out; a program that restores the default action
//! should send with `libc::MSG_NOSIGNAL`.
//!
//! A write or a read takes no flags, so before 7.2 a send or recv with flags (`MSG_NOSIGNAL`,
//! `MSG_PEEK`, `MSG_WAITALL`, `MSG_DONTWAIT`, ...) keeps the plain form: the flags are honoured
//! and the bytes are the same, only the registration goes unused. And on a work queue whose
//! target is not a socket, the fallback reads or writes the file at offset 0 where `SEND`/`RECV`
//! would fail with `ENOTSOCK`: use [`Op::write_fixed`] and [`Op::read_fixed`] for files.

use std::cell::UnsafeCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use io_uring::{opcode, types, IoUring};

use super::file::UNSET;
use super::{BufUse, FileSlot, FileUse, Op, PostAction, Retained, Side, Sqe};
use crate::buf::RegionSlice;

/// A socket address in the form the kernel reads, kept alive until the connect completes.
pub(crate) struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    pub(crate) fn new(addr: SocketAddr) -> Self {
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

    /// A Unix socket address for `path`.
    fn unix(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: all-zero bytes are a valid sockaddr_un.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        // One byte stays for the terminating NUL.
        if bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a Unix socket path must be shorter than 108 bytes and hold no NUL byte",
            ));
        }
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (to, from) in sun.sun_path.iter_mut().zip(bytes) {
            *to = *from as libc::c_char;
        }
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
        unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_un, sun) };
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
        Ok(Self {
            storage,
            len: len as libc::socklen_t,
        })
    }

    pub(crate) fn raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        (&self.storage as *const _ as *const libc::sockaddr, self.len)
    }
}

/// Where an [`Op::accept`] writes the address of the peer it accepted.
///
/// The operation holds one reference until its final completion, and the kernel writes the
/// address before that completion; [`take`](Self::take) reads it once the operation has let
/// go.
pub struct PeerAddr {
    storage: UnsafeCell<libc::sockaddr_storage>,
    len: UnsafeCell<libc::socklen_t>,
}

impl std::fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAddr").finish_non_exhaustive()
    }
}

// SAFETY: the kernel writes the cells only while an operation holds a reference, and `take`
// reads them only once it holds the last one (after that operation's completion): no access
// races with another.
unsafe impl Send for PeerAddr {}
// SAFETY: as for `Send`: shared references touch the cells only through `take`, as above.
unsafe impl Sync for PeerAddr {}

impl PeerAddr {
    /// Room for an address, for one accept.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            storage: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            len: UnsafeCell::new(std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t),
        })
    }

    /// The storage and its size, for the kernel to write into.
    pub(crate) fn room(&self) -> (*mut libc::sockaddr, libc::socklen_t) {
        (
            self.storage.get().cast(),
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        )
    }

    /// The address and its length, once no operation holds `this` any more (the accept it was
    /// given has had its final completion); `None` while one does. The kernel writes nothing
    /// (the length stays the whole storage's) for an accept that failed.
    pub fn take(this: Arc<Self>) -> Option<(libc::sockaddr_storage, libc::socklen_t)> {
        // `try_unwrap` succeeds only for the last reference, with an acquire that pairs with the
        // release of the operation's drop of its own, after its completion.
        let this = Arc::try_unwrap(this).ok()?;
        Some((this.storage.into_inner(), this.len.into_inner()))
    }
}

/// The SQE of a send from a registered buffer with `flags`, for a kernel that takes
/// `IORING_RECVSEND_FIXED_BUF` on `SEND` (`fixed`) or not, and how it names the buffer.
fn send_entry(flags: i32, fixed: bool) -> (io_uring::squeue::Entry, BufUse) {
    if fixed {
        let e = opcode::Send::new(UNSET, std::ptr::null(), 0)
            .ioprio(RECVSEND_FIXED_BUF)
            .flags(flags);
        (e.build(), BufUse::Fixed)
    } else if flags == 0 {
        // Offset 0: a socket's write_iter refuses any other position with ESPIPE.
        let e = opcode::WriteFixed::new(UNSET, std::ptr::null(), 0, 0).offset(0);
        (e.build(), BufUse::Fixed)
    } else {
        let e = opcode::Send::new(UNSET, std::ptr::null(), 0).flags(flags);
        (e.build(), BufUse::Addr)
    }
}

impl<B> Op<B> {
    /// Sends `buf` on the work queue's socket, through the buffer's registration: with
    /// `IORING_RECVSEND_FIXED_BUF` (Linux 7.2), else, for flags 0, as a fixed-buffer write, which
    /// can raise `SIGPIPE` on a broken stream; with other flags before 7.2, at the buffer's address
    /// without the registration. See [the module docs](self#send-and-recv-on-registered-buffers).
    pub fn send(buf: B, flags: i32, cookie: u64) -> Self {
        Self::send_as(buf, flags, cookie, fixed_recvsend())
    }

    /// Receives into `buf` from the work queue's socket, through the buffer's registration: with
    /// `IORING_RECVSEND_FIXED_BUF` (Linux 7.2), else, for flags 0, as a fixed-buffer read; with
    /// other flags before 7.2, at the buffer's address without the registration. See
    /// [the module docs](self#send-and-recv-on-registered-buffers).
    pub fn recv(buf: B, flags: i32, cookie: u64) -> Self {
        Self::recv_as(buf, flags, cookie, fixed_recvsend())
    }

    /// [`send`](Self::send) of a slice of a region registered with
    /// [`Adapter::register_region`](crate::Adapter::register_region), rather than of a buffer
    /// of the adapter's type: the kernel copies the bytes while the operation runs (where
    /// [`send_zc_region`](Self::send_zc_region) does not), and the operation keeps `slice`
    /// (and what it holds) until its completion. The slice is checked at post as a buffer's
    /// is (the region's generation, its bounds).
    pub fn send_region(slice: RegionSlice, cookie: u64) -> Self {
        let (e, how) = send_entry(0, fixed_recvsend());
        let mut op = Self::new(e, &"send", Side::Send, cookie)
            .on(FileUse::Fd)
            .retaining(Box::new(Retained::Region(slice)));
        op.buf_use = how;
        op
    }

    /// [`send`](Self::send), for a kernel that takes `IORING_RECVSEND_FIXED_BUF` on `SEND`
    /// (`fixed`) or not.
    fn send_as(buf: B, flags: i32, cookie: u64, fixed: bool) -> Self {
        let (e, how) = send_entry(flags, fixed);
        Self::new(e, &"send", Side::Send, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, how)
    }

    /// [`recv`](Self::recv), as [`send_as`](Self::send_as) is for send.
    fn recv_as(buf: B, flags: i32, cookie: u64, fixed: bool) -> Self {
        let (e, how) = if fixed {
            // The registration index goes in `buf_index`, which shares its place in the SQE with
            // `buf_group`; without IOSQE_BUFFER_SELECT, a RECV with IORING_RECVSEND_FIXED_BUF
            // reads it as `buf_index`.
            let e = opcode::Recv::new(UNSET, std::ptr::null_mut(), 0)
                .ioprio(RECVSEND_FIXED_BUF)
                .flags(flags);
            (e.build(), BufUse::Fixed)
        } else if flags == 0 {
            // Offset 0: a socket's read_iter refuses any other position with ESPIPE.
            let e = opcode::ReadFixed::new(UNSET, std::ptr::null_mut(), 0, 0).offset(0);
            (e.build(), BufUse::Fixed)
        } else {
            let e = opcode::Recv::new(UNSET, std::ptr::null_mut(), 0).flags(flags);
            (e.build(), BufUse::Addr)
        };
        Self::new(e, &"recv", Side::Recv, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, how)
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

    /// [`send_zc`](Self::send_zc) of a slice of a region registered with
    /// [`Adapter::register_region`](crate::Adapter::register_region), rather than of a buffer
    /// of the adapter's type: the operation carries no buffer, and keeps `slice` (and what it
    /// holds) until its final, `F_NOTIF`, completion. The slice is checked at post as a
    /// buffer's is (the region's generation, its bounds).
    pub fn send_zc_region(slice: RegionSlice, flags: i32, cookie: u64) -> Self {
        let e = opcode::SendZc::new(UNSET, std::ptr::null(), 0)
            .buf_index(Some(0))
            .flags(flags)
            .build();
        let mut op = Self::new(e, &"send_zc", Side::Send, cookie)
            .on(FileUse::Fd)
            .retaining(Box::new(Retained::Region(slice)));
        op.buf_use = BufUse::Fixed;
        op
    }

    /// Accepts one connection on the work queue's listening socket, writing the peer's address
    /// into `peer` (read it with [`PeerAddr::take`] after the final completion). Completes with
    /// the new socket's descriptor, close-on-exec, which the caller then owns (and must close,
    /// even when it no longer wants the connection).
    pub fn accept(peer: Arc<PeerAddr>, cookie: u64) -> Self {
        let keep = Box::new(Retained::Peer(peer));
        let Retained::Peer(peer) = &*keep else {
            unreachable!("just made")
        };
        // The SQE points into `peer`, which the operation keeps until its final completion.
        let e = opcode::Accept::new(UNSET, peer.storage.get().cast(), peer.len.get())
            .flags(libc::SOCK_CLOEXEC)
            .build();
        Self::new(e, &"accept", Side::Recv, cookie)
            .on(FileUse::Fd)
            .retaining(keep)
    }

    /// Accepts one connection straight into fixed-file slot `slot` (a direct descriptor).
    /// Completes with 0. The slot is installed on the ring of this work queue only;
    /// [`share_file`](Op::share_file) copies it to another ring.
    pub fn accept_direct(slot: FileSlot, cookie: u64) -> Self {
        let op = |e| Self::new(e, &"accept_direct", Side::Recv, cookie).on(FileUse::Fd);
        match types::DestinationSlot::try_from_slot_target(slot.0) {
            Ok(dest) => op(
                opcode::Accept::new(UNSET, std::ptr::null_mut(), std::ptr::null_mut())
                    .file_index(Some(dest))
                    .build(),
            ),
            Err(_) => op(opcode::Nop::new().build()).on_post(PostAction::BadSlot(slot.0)),
        }
    }

    /// Accepts connections until cancelled, each into a fixed-file slot the kernel allocates on
    /// this work queue's ring (only; [`share_file`](Op::share_file) copies a slot to another
    /// ring); each completion's result is the slot number. The last completion has no `F_MORE`.
    pub fn accept_multishot(cookie: u64) -> Self {
        let e = opcode::AcceptMulti::new(UNSET)
            .allocate_file_index(true)
            .build();
        Self::new(e, &"accept_multishot", Side::Recv, cookie).on(FileUse::Fd)
    }

    /// Accepts connections until cancelled (or until the kernel ends it, as for
    /// [`accept_multishot`](Op::accept_multishot)), each completion's result a new plain
    /// descriptor, close-on-exec, which the caller owns (and must close, also for the
    /// completions that come after it no longer wants them). The last completion has no
    /// `F_MORE`, and may carry a descriptor too.
    pub fn accept_multishot_fds(cookie: u64) -> Self {
        let e = opcode::AcceptMulti::new(UNSET)
            .flags(libc::SOCK_CLOEXEC)
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
        Self::connect_to(SockAddr::new(addr), cookie)
    }

    /// Connects the work queue's Unix socket to the socket bound at `path`.
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::InvalidInput`] for a path that a `sockaddr_un` cannot hold (longer
    /// than 107 bytes, or holding a NUL byte).
    pub fn connect_unix(path: &std::path::Path, cookie: u64) -> std::io::Result<Self> {
        SockAddr::unix(path).map(|addr| Self::connect_to(addr, cookie))
    }

    fn connect_to(addr: SockAddr, cookie: u64) -> Self {
        let keep = Box::new(Retained::Addr(addr));
        let Retained::Addr(addr) = &*keep else {
            unreachable!("just made")
        };
        let (ptr, len) = addr.raw();
        // The SQE points into the box, which the operation keeps until its final completion.
        let e = opcode::Connect::new(UNSET, ptr, len).build();
        Self::new(e, &"connect", Side::Send, cookie)
            .on(FileUse::Fd)
            .retaining(keep)
    }
}

/// `IORING_RECVSEND_FIXED_BUF` (include/uapi/linux/io_uring.h), set in `sqe->ioprio`: the buffer
/// is registered buffer `sqe->buf_index`.
const RECVSEND_FIXED_BUF: u16 = 1 << 2;

/// Whether this kernel takes `IORING_RECVSEND_FIXED_BUF` on plain `SEND` and `RECV`.
static FIXED_RECVSEND: OnceLock<bool> = OnceLock::new();

/// Whether plain `SEND` and `RECV` can use a registered buffer here (Linux 7.2), tried once per
/// process; [`Adapter::new`](crate::Adapter::new) asks first, so that making an operation only
/// reads the answer.
pub(crate) fn fixed_recvsend() -> bool {
    // OnceLock: the first caller runs the probe; the others read its answer after an acquire
    // load that pairs with the release store publishing it.
    *FIXED_RECVSEND.get_or_init(probe_fixed_recvsend)
}

/// Sends and receives a few bytes with `IORING_RECVSEND_FIXED_BUF` on a throwaway ring and
/// non-blocking Unix socket pair. Any failure (the kernel's `EINVAL` for the flag, or a setup
/// step such as a memlock limit too low for one registered page) means no: the fallback works
/// everywhere.
fn probe_fixed_recvsend() -> bool {
    const MSG: &[u8] = b"regio";
    let mut buf = [0u8; 16];
    buf[..MSG.len()].copy_from_slice(MSG);
    let base = buf.as_mut_ptr();
    let Ok(mut ring) = IoUring::new(2) else {
        return false;
    };
    let iov = libc::iovec {
        iov_base: base.cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `buf` outlives `ring` (declared first, dropped last), and the ring's registration
    // goes with the ring; nothing else touches `buf` while the kernel may.
    if unsafe { ring.submitter().register_buffers(&[iov]) }.is_err() {
        return false;
    }
    let mut fds = [-1; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: socketpair succeeded, so both are new descriptors owned by nobody else.
    let pair = unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] };
    let len = MSG.len() as u32;
    let mut run = |op: Op<()>, fd: &OwnedFd, offset: usize| -> i32 {
        let mut sqe = op.sqe;
        let at = super::Resolved {
            // SAFETY: both offsets used below stay inside the 16-byte `buf`.
            addr: unsafe { base.add(offset) },
            len,
            index: 0,
        };
        sqe.fill(
            op.file,
            super::Target::Fd(fd.as_raw_fd()),
            Some(at),
            op.buf_use,
        );
        let entry = &Sqe::as_entries(std::slice::from_ref(&sqe))[0];
        // SAFETY: the SQE points into `buf`, which is registered and outlives the ring, and
        // this closure waits for the completion before it returns.
        if unsafe { ring.submission().push(entry) }.is_err() || ring.submit_and_wait(1).is_err() {
            return -1;
        }
        ring.completion().next().map_or(-1, |c| c.result())
    };
    let sent = run(Op::send_as((), 0, 0, true), &pair[0], 0);
    // Non-blocking sockets: had the send failed, the receive would end with EAGAIN, not wait.
    let got = run(Op::recv_as((), 0, 0, true), &pair[1], 8);
    let ok = sent == len as i32 && got == len as i32 && buf[8..8 + MSG.len()] == *MSG;
    tracing::debug!(
        sent,
        got,
        ok,
        "probe: IORING_RECVSEND_FIXED_BUF on plain send/recv"
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Resolved, Target};

    /// The SQE `op` becomes when posted on `target` with a buffer at 0x7000_1234, 300 bytes,
    /// registration 9.
    fn posted(op: Op<()>, target: Target) -> Sqe {
        let mut sqe = op.sqe;
        let r = Resolved {
            addr: 0x7000_1234 as *mut u8,
            len: 300,
            index: 9,
        };
        sqe.fill(op.file, target, Some(r), op.buf_use);
        sqe
    }

    #[test]
    fn send_and_recv_name_the_registered_buffer_when_the_kernel_takes_the_flag() {
        for (op, code, flags) in [
            (
                Op::send_as((), libc::MSG_MORE, 1, true),
                opcode::Send::CODE,
                libc::MSG_MORE,
            ),
            (
                Op::recv_as((), libc::MSG_PEEK, 1, true),
                opcode::Recv::CODE,
                libc::MSG_PEEK,
            ),
        ] {
            let s = posted(op, Target::Fd(5));
            assert_eq!(s.opcode, code);
            assert_eq!(s.ioprio, RECVSEND_FIXED_BUF);
            assert_eq!((s.fd, s.addr, s.len), (5, 0x7000_1234, 300));
            assert_eq!(s.buf_index, 9);
            assert_eq!(s.op_flags, flags as u32);
        }
    }

    #[test]
    fn without_the_flag_flags_zero_become_fixed_writes_and_reads_at_offset_zero() {
        let w = posted(Op::send_as((), 0, 1, false), Target::Fd(5));
        let r = posted(Op::recv_as((), 0, 1, false), Target::Fd(5));
        assert_eq!(w.opcode, opcode::WriteFixed::CODE);
        assert_eq!(r.opcode, opcode::ReadFixed::CODE);
        for s in [w, r] {
            assert_eq!((s.fd, s.addr, s.len, s.buf_index), (5, 0x7000_1234, 300, 9));
            assert_eq!((s.off, s.ioprio, s.op_flags), (0, 0, 0));
        }
    }

    #[test]
    fn without_the_flag_other_flags_keep_the_copying_send_and_recv() {
        let s = posted(Op::send_as((), libc::MSG_NOSIGNAL, 1, false), Target::Fd(5));
        assert_eq!(s.opcode, opcode::Send::CODE);
        assert_eq!(s.op_flags, libc::MSG_NOSIGNAL as u32);
        assert_eq!((s.ioprio, s.buf_index), (0, 0), "not the fixed form");
        let s = posted(Op::recv_as((), libc::MSG_WAITALL, 1, false), Target::Fd(5));
        assert_eq!(s.opcode, opcode::Recv::CODE);
        assert_eq!(s.op_flags, libc::MSG_WAITALL as u32);
        assert_eq!((s.ioprio, s.buf_index), (0, 0), "not the fixed form");
    }

    #[test]
    fn a_fixed_file_target_is_a_fixed_file_in_every_form() {
        for fixed in [false, true] {
            for flags in [0, libc::MSG_DONTWAIT] {
                for op in [
                    Op::send_as((), flags, 1, fixed),
                    Op::recv_as((), flags, 1, fixed),
                ] {
                    let s = posted(op, Target::Fixed(FileSlot(4)));
                    assert_eq!(s.fd, 4);
                    assert_ne!(s.flags & io_uring::squeue::Flags::FIXED_FILE.bits(), 0);
                }
            }
        }
    }

    #[test]
    fn a_plain_accept_names_the_listener_and_the_peer_address_and_asks_for_close_on_exec() {
        let peer = PeerAddr::new();
        let op = Op::<()>::accept(Arc::clone(&peer), 1);
        // No buffer: posting resolves none.
        let mut s = op.sqe;
        s.fill(op.file, Target::Fd(5), None, op.buf_use);
        drop(op.retained);
        assert_eq!(s.opcode, opcode::Accept::CODE);
        assert_eq!((s.fd, s.op_flags), (5, libc::SOCK_CLOEXEC as u32));
        assert_eq!(s.addr, peer.storage.get() as u64);
        assert_eq!(s.off, peer.len.get() as u64);
        assert!(PeerAddr::take(peer).is_some(), "the operation let go of it");
    }

    #[test]
    fn a_multishot_accept_into_plain_descriptors_asks_for_close_on_exec_and_no_slot() {
        let op = Op::<()>::accept_multishot_fds(1);
        let mut s = op.sqe;
        s.fill(op.file, Target::Fixed(FileSlot(3)), None, op.buf_use);
        assert_eq!(s.opcode, opcode::AcceptMulti::CODE);
        // IORING_ACCEPT_MULTISHOT (include/uapi/linux/io_uring.h).
        assert_eq!(s.ioprio, 1 << 0);
        assert_eq!(s.op_flags, libc::SOCK_CLOEXEC as u32);
        assert_eq!(s.fd, 3, "the listener may sit in a fixed slot itself");
        let direct = Op::<()>::accept_multishot(1).sqe;
        assert_eq!(s.fd_in, 0, "no file index asked for");
        assert_ne!(direct.fd_in, 0, "as the direct form does");
    }

    #[test]
    fn a_peer_address_is_not_readable_while_an_accept_holds_it() {
        let peer = PeerAddr::new();
        let op = Op::<()>::accept(Arc::clone(&peer), 1);
        let held = PeerAddr::take(peer);
        assert!(held.is_none());
        drop(op);
    }

    #[test]
    fn a_send_with_flags_zero_uses_the_registration_on_this_kernel() {
        let s = posted(Op::send((), 0, 1), Target::Fd(5));
        assert!(
            s.opcode == opcode::WriteFixed::CODE
                || (s.opcode == opcode::Send::CODE && s.ioprio == RECVSEND_FIXED_BUF),
            "opcode {} ioprio {}",
            s.opcode,
            s.ioprio
        );
        assert_eq!(s.buf_index, 9);
    }
}
