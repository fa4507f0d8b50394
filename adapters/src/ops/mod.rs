//! The operations a work queue can post: one small constructor per opcode.
//!
//! An [`Op`] names no file: it acts on its work queue's socket or file, as a Registered I/O
//! request does on its request queue's socket. Buffers are owned [`IoBuf`](crate::IoBuf)s; the
//! operation holds them until its final completion and hands them back then. Each operation
//! carries a caller-chosen `cookie` that comes back in its completions.
//!
//! Constructors live by area: [`file`](mod@file) (read/write fixed, fsync, fdatasync, fallocate, splice,
//! close), [`net`] (send, recv, send_zc, accept, connect) and [`control`] (nop, timeout, cancel,
//! msg_ring). A pool message's descriptor becomes an operation with
//! [`Op::from_message`].

pub mod control;
mod datagram;
pub mod file;
mod message;
pub mod net;
mod sqe;

use std::mem::ManuallyDrop;
use std::os::fd::RawFd;

use io_uring::squeue::Entry;

pub(crate) use crate::uring_abi::Sqe;

/// `IOSQE_IO_DRAIN` (include/uapi/linux/io_uring.h).
const IOSQE_IO_DRAIN: u8 = 1 << 1;
/// `IOSQE_IO_LINK`: the next SQE starts only after this one succeeds.
pub(crate) const IOSQE_IO_LINK: u8 = 1 << 2;
/// `IOSQE_IO_HARDLINK`: the next SQE starts after this one, whatever its result.
pub(crate) const IOSQE_IO_HARDLINK: u8 = 1 << 3;
/// `IOSQE_ASYNC`.
const IOSQE_ASYNC: u8 = 1 << 4;

pub use regio_pool::FileSlot;

/// What a work queue, or the output of a splice, acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A plain file descriptor. A work queue made on it keeps a duplicate of its own (the
    /// caller may close theirs), so the number in its SQEs always names this file; the
    /// duplicate closes once the queue is removed and its last handle dropped. A negative
    /// number names no file (operations that need one fail with `EBADF`). As a splice's output,
    /// the fd is the caller's, and must stay open until the splice completes.
    Fd(RawFd),
    /// A slot in the adapter's fixed-file table.
    Fixed(FileSlot),
}

/// Which depth credit an operation consumes: Registered I/O's send and receive queue depths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Writes, sends, connects, syncs and control operations.
    Send,
    /// Reads, receives and accepts.
    Recv,
}

/// One operation, ready to post on a [`WorkQueue`](crate::WorkQueue).
///
/// Its SQE is built when the operation is made; posting fills in only the fields that depend
/// on the work queue and the buffer.
///
/// It is kept within 128 bytes (with a pool message as its buffer), so that moving it costs a
/// few vector moves: the cookie waits in the SQE's `user_data`, and what the kernel reads late
/// sits behind one thin box.
pub struct Op<B> {
    /// The SQE; its `user_data` holds the cookie until the operation is posted.
    pub(crate) sqe: Sqe,
    pub(crate) buf: Option<B>,
    pub(crate) retained: Option<Box<Retained>>,
    pub(crate) post_action: PostAction,
    pub(crate) file: FileUse,
    pub(crate) buf_use: BufUse,
    side: Side,
    name: &'static &'static str,
}

impl<B> std::fmt::Debug for Op<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("op", &self.name())
            .field("cookie", &self.cookie())
            .finish()
    }
}

/// Where the work queue's file goes in the SQE (ordered: the common cases first).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FileUse {
    /// The operation acts on no file (nop, timeout, cancel, msg_ring).
    None,
    /// `fd`, with `IOSQE_FIXED_FILE` for a fixed slot.
    Fd,
    /// A splice's input (`splice_fd_in`); `fd` is the output, set when the op was made.
    SpliceIn,
    /// A close: `fd`, or `file_index` for a fixed slot.
    Close,
}

/// How the resolved buffer goes into the SQE.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufUse {
    /// No buffer.
    None,
    /// `addr` and `len`: the kernel copies through the address.
    Addr,
    /// `addr`, `len` and `buf_index`: the registered buffer.
    Fixed,
}

/// What posting needs to do beyond filling in the SQE.
#[derive(Clone, Copy)]
pub(crate) enum PostAction {
    None,
    /// Cancel the operation of the same work queue whose cookie waits in the SQE's `addr`
    /// (the SQE needs that operation's `user_data`, known only on the ring).
    Cancel,
    /// A message to another ring (kept as [`Retained::Ring`]): its fd is read when posting, so a
    /// message posted after the target was resized goes to its new ring.
    MsgRing,
    /// A [`MsgRing`](Self::MsgRing) that copies fixed-file slot `.0` of the posting ring:
    /// only a work queue on that slot may post it (a slot's file is its queues' to give).
    ShareFile(u32),
    /// A splice whose output slot must be checked against the file table.
    SpliceOut(Target),
    /// An accept into a slot that cannot be named in an SQE.
    BadSlot(u32),
    /// A close, which only a work queue on a fixed slot may post (a plain-fd queue's fd is its
    /// own duplicate, closed when the queue goes).
    Close,
}

/// An operation's plain part: everything but what it owns (its buffer and keep-alive).
///
/// Posting takes an operation apart into this and its owned parts first
/// ([`Op::into_parts`]). This part needs no drop, so the paths that may unwind (a cold call
/// can panic) have nothing of it to drop, and the compiler need not keep the operation whole in
/// memory for them: the fields it knows (most of a constructor's SQE) are never stored.
pub(crate) struct Request {
    /// The SQE; its `user_data` holds the cookie.
    pub sqe: Sqe,
    pub post_action: PostAction,
    pub file: FileUse,
    pub buf_use: BufUse,
    pub side: Side,
    name: &'static &'static str,
}

impl Request {
    /// The io_uring opcode, for the kernel-support probe.
    #[inline(always)]
    pub fn opcode(&self) -> u8 {
        self.sqe.opcode
    }

    /// Whether this is a cancel ([`Op::cancel`]), which may overdraw its work queue's credit.
    #[inline(always)]
    pub fn is_cancel(&self) -> bool {
        matches!(self.post_action, PostAction::Cancel)
    }
}

/// An operation taken apart for posting ([`Op::into_parts`]): its plain part, its buffer and
/// its keep-alive.
///
/// The owned parts travel in `ManuallyDrop` until they reach their slab entry (or go back
/// whole, [`Op::from_parts`]): a panic on the way (none is expected: the calls there panic only
/// on a broken invariant) leaks them rather than drops them. So no unwinding path holds them,
/// and the compiler can follow a `None` from the constructor to the test of it at the slab
/// entry, with no store and no load between.
pub(crate) type Parts<B> = (
    Request,
    ManuallyDrop<Option<B>>,
    ManuallyDrop<Option<Box<Retained>>>,
);

/// What the SQE needs from the adapter's tables: a resolved buffer.
pub(crate) struct Resolved {
    pub addr: *mut u8,
    pub len: u32,
    pub index: u16,
}

/// What an operation keeps alive until its final completion, besides its buffer: memory the
/// kernel reads after the SQE was consumed, or the ring a message goes to.
pub(crate) enum Retained {
    Timespec(io_uring::types::Timespec),
    Addr(net::SockAddr),
    Peer(std::sync::Arc<net::PeerAddr>),
    Msg(Box<datagram::MsgHdr>),
    Ring(control::RingRef),
    /// A splice's output descriptor, kept open until the splice's final completion.
    Fd(std::sync::Arc<dyn std::os::fd::AsRawFd + Send + Sync>),
    /// The registered slice a buffer-less send reads ([`Op::send_zc_region`]), resolved at
    /// post like a buffer.
    Region(crate::buf::RegionSlice),
}

impl<B> Op<B> {
    /// An operation from its SQE (built with a placeholder file), acting on no file and carrying
    /// no buffer; the `on_*`/`with_*` methods say the rest.
    #[inline(always)]
    pub(crate) fn new(entry: Entry, name: &'static &'static str, side: Side, cookie: u64) -> Self {
        let mut sqe = Sqe::from_entry(entry);
        sqe.user_data = cookie;
        Self {
            sqe,
            buf: None,
            retained: None,
            post_action: PostAction::None,
            file: FileUse::None,
            buf_use: BufUse::None,
            side,
            name,
        }
    }

    /// The work queue's file goes where `file` says.
    #[inline(always)]
    pub(crate) fn on(mut self, file: FileUse) -> Self {
        self.file = file;
        self
    }

    /// Carries `buf`, which goes into the SQE as `how` says.
    #[inline(always)]
    pub(crate) fn with_buf(mut self, buf: B, how: BufUse) -> Self {
        self.buf = Some(buf);
        self.buf_use = how;
        self
    }

    /// Keeps `retained` alive until the final completion (memory the SQE points at).
    #[inline(always)]
    pub(crate) fn retaining(mut self, retained: Box<Retained>) -> Self {
        self.retained = Some(retained);
        self
    }

    /// Needs `action` taken when posted.
    #[inline(always)]
    pub(crate) fn on_post(mut self, action: PostAction) -> Self {
        self.post_action = action;
        self
    }

    /// Starts the operation only after every operation submitted before it on the same ring
    /// has completed (`IOSQE_IO_DRAIN`).
    ///
    /// Of io_uring's SQE flags, an operation can ask for this one and
    /// [`force_async`](Self::force_async); the adapter sets `IOSQE_FIXED_FILE` itself from the
    /// work queue's target. An operation cannot set `IOSQE_IO_LINK` on its own: a link ties an
    /// SQE to the next one in the ring, and a ring takes the posts of every work queue and
    /// thread that shares it, so the next SQE could be another caller's, and a post refused for
    /// want of credit would leave the link pointing at whatever comes next. Links are made by
    /// [`Batch::post_chain`](crate::Batch::post_chain) and
    /// [`Batch::post_hard_chain`](crate::Batch::post_hard_chain), which stage a whole chain
    /// at once while the batch owns the ring, or refuse it whole.
    pub fn drain(mut self) -> Self {
        self.sqe.flags |= IOSQE_IO_DRAIN;
        self
    }

    /// Sends the operation to the kernel's async workers at once, rather than trying it inline
    /// first (`IOSQE_ASYNC`): for operations known to block.
    pub fn force_async(mut self) -> Self {
        self.sqe.flags |= IOSQE_ASYNC;
        self
    }

    /// Whether this is a cancel ([`Op::cancel`]).
    pub(crate) fn is_cancel(&self) -> bool {
        matches!(self.post_action, PostAction::Cancel)
    }

    /// The caller's cookie.
    #[inline]
    pub fn cookie(&self) -> u64 {
        self.sqe.user_data
    }

    /// The opcode's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The depth credit this operation consumes.
    #[inline]
    pub fn side(&self) -> Side {
        self.side
    }

    /// The io_uring opcode, for the kernel-support probe.
    #[inline]
    pub(crate) fn opcode(&self) -> u8 {
        self.sqe.opcode
    }

    /// The operation taken apart (see [`Parts`]); [`from_parts`](Self::from_parts) puts it
    /// back together.
    #[inline(always)]
    pub(crate) fn into_parts(self) -> Parts<B> {
        let Op {
            sqe,
            buf,
            retained,
            post_action,
            file,
            buf_use,
            side,
            name,
        } = self;
        let req = Request {
            sqe,
            post_action,
            file,
            buf_use,
            side,
            name,
        };
        (req, ManuallyDrop::new(buf), ManuallyDrop::new(retained))
    }

    /// The operation [`into_parts`](Self::into_parts) took apart.
    #[inline(always)]
    pub(crate) fn from_parts((req, buf, retained): Parts<B>) -> Self {
        let Request {
            sqe,
            post_action,
            file,
            buf_use,
            side,
            name,
        } = req;
        Self {
            sqe,
            buf: ManuallyDrop::into_inner(buf),
            retained: ManuallyDrop::into_inner(retained),
            post_action,
            file,
            buf_use,
            side,
            name,
        }
    }

    /// Takes the buffer out, dropping the rest.
    pub(crate) fn into_buf(self) -> Option<B> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_op_with_a_pool_message_fits_in_128_bytes() {
        assert!(std::mem::size_of::<super::Op<regio_pool::Message>>() <= 128);
    }
}
