//! Datagram operations with an address: [`Op::send_to`] and [`Op::recv_from`], on the bytes a
//! pool message's descriptor names, as `SENDMSG` and `RECVMSG`.
//!
//! These go through a `msghdr` and an `iovec` pointing at the message's buffer: the kernel
//! copies through the address, so the buffer's registration is not used (io_uring takes no
//! fixed buffer for `SENDMSG`/`RECVMSG`). The header, the iovec and the destination address
//! live in the operation's keep until its final completion; the source address of a receive
//! goes into a [`PeerAddr`] that the caller reads after it.

use std::net::SocketAddr;
use std::sync::Arc;

use io_uring::opcode;
use regio_pool::{BufKey, Message};

use super::file::UNSET;
use super::net::{PeerAddr, SockAddr};
use super::{BufUse, FileUse, Keep, Op, Side};
use crate::error::DescriptorError;

/// A message header and its one iovec, as the kernel reads them for `SENDMSG`/`RECVMSG`.
pub(crate) struct MsgHdr {
    hdr: libc::msghdr,
    iov: libc::iovec,
    /// A send's destination.
    to: Option<SockAddr>,
    /// A receive's source, written by the kernel.
    from: Option<Arc<PeerAddr>>,
}

// SAFETY: the raw pointers in `hdr` and `iov` point into this same value (boxed in the
// operation's keep, so it does not move), into `from`'s allocation, which it holds, or into the
// operation's own buffer, which the operation owns: nothing they reach is shared with another
// thread, so the value may move between threads with its operation.
unsafe impl Send for MsgHdr {}

impl Op<Message> {
    /// Sends the bytes `msg`'s descriptor names as one datagram to `addr` (`SENDMSG`).
    ///
    /// # Errors
    ///
    /// Hands the message back with the [`DescriptorError`] its descriptor earns (more than one
    /// slice, or a slice outside the message's buffers).
    pub fn send_to(
        msg: Message,
        addr: SocketAddr,
        cookie: u64,
    ) -> Result<Self, (Message, DescriptorError)> {
        Self::with_msghdr(msg, Some(SockAddr::new(addr)), None, cookie)
    }

    /// Receives one datagram into the bytes `msg`'s descriptor names (`RECVMSG`), writing its
    /// source address into `from` (read it with [`PeerAddr::take`] after the final
    /// completion). A datagram longer than the slice is cut to it.
    ///
    /// # Errors
    ///
    /// As for [`send_to`](Self::send_to).
    pub fn recv_from(
        msg: Message,
        from: Arc<PeerAddr>,
        cookie: u64,
    ) -> Result<Self, (Message, DescriptorError)> {
        Self::with_msghdr(msg, None, Some(from), cookie)
    }

    fn with_msghdr(
        msg: Message,
        to: Option<SockAddr>,
        from: Option<Arc<PeerAddr>>,
        cookie: u64,
    ) -> Result<Self, (Message, DescriptorError)> {
        let (base, len) = match slice_address(&msg) {
            Ok(at) => at,
            Err(e) => return Err((msg, e)),
        };
        let send = to.is_some();
        // SAFETY: all-zero bytes are a valid msghdr and iovec (null pointers, zero lengths).
        let zeroed = unsafe { std::mem::zeroed::<libc::msghdr>() };
        let mut keep = Box::new(Keep::Msg(Box::new(MsgHdr {
            hdr: zeroed,
            iov: libc::iovec {
                iov_base: base.cast(),
                iov_len: len as usize,
            },
            to,
            from,
        })));
        let Keep::Msg(m) = &mut *keep else {
            unreachable!("just made")
        };
        m.hdr.msg_iov = &mut m.iov;
        m.hdr.msg_iovlen = 1;
        if let Some(to) = &m.to {
            let (name, namelen) = to.raw();
            m.hdr.msg_name = name.cast_mut().cast();
            m.hdr.msg_namelen = namelen;
        }
        if let Some(from) = &m.from {
            let (name, namelen) = from.room();
            m.hdr.msg_name = name.cast();
            m.hdr.msg_namelen = namelen;
        }
        let hdr: *mut libc::msghdr = &mut m.hdr;
        // The SQE points into the inner box, which the operation keeps until its final completion.
        let op = if send {
            let e = opcode::SendMsg::new(UNSET, hdr).build();
            Self::new(e, &"send_to", Side::Send, cookie)
        } else {
            let e = opcode::RecvMsg::new(UNSET, hdr).build();
            Self::new(e, &"recv_from", Side::Recv, cookie)
        };
        Ok(op.on(FileUse::Fd).keeping(keep).with_buf(msg, BufUse::None))
    }
}

/// The address and length of the one slice `msg`'s descriptor names (its whole first buffer
/// if it names none), which must lie inside one of its buffers.
fn slice_address(msg: &Message) -> Result<(*mut u8, u32), DescriptorError> {
    let key = match msg.descriptor().slices() {
        [] => msg.key(),
        &[key] => key,
        many => {
            return Err(DescriptorError::Scatter {
                slices: many.len() as u8,
            })
        }
    };
    let not_owned = DescriptorError::NotOwned {
        region: key.region.0,
        offset: key.offset,
        len: key.len,
    };
    (0..msg.buf_count())
        .find_map(|i| {
            let whole: BufKey = msg.key_of(i);
            let inside = whole.region == key.region
                && key.offset >= whole.offset
                && key.end() <= whole.end();
            if !inside {
                return None;
            }
            let at = (key.offset - whole.offset) as usize;
            // SAFETY: `key` lies inside buffer `i` (checked just above), so the offset stays
            // inside that buffer's allocation.
            Some((unsafe { msg.ptr_of(i).add(at) }, key.len))
        })
        .ok_or(not_owned)
}
