//! Control operations: nop, timeout, async cancel, msg_ring and share_file (a fixed file sent to
//! another ring's table).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types, types::Timespec};

use super::{FileSlot, Op, PostAction, Retained, Side};

/// `IORING_MSG_RING_CQE_SKIP` (include/uapi/linux/io_uring.h): post no CQE on the target ring.
pub(crate) const MSG_RING_CQE_SKIP: u32 = 1 << 0;

/// A ring whose io_uring a resize may replace.
pub(crate) trait RingFd: Send + Sync {
    /// A duplicate of the current io_uring's fd.
    fn target_fd(&self) -> Arc<OwnedFd>;
}

/// The target of a msg_ring or share_file: its ring, and once the operation is posted, the fd
/// its SQE names.
pub(crate) struct RingRef {
    ring: Arc<dyn RingFd>,
    pinned: Option<Arc<OwnedFd>>,
}

impl RingRef {
    pub(crate) fn new(ring: Arc<dyn RingFd>) -> Self {
        Self { ring, pinned: None }
    }

    /// The fd to put in the SQE, read when the SQE is built (so a message posted after the
    /// target was resized goes to its new ring) and held until the operation's final CQE (so
    /// the number names that ring for as long as the kernel may read it, even if a resize closes
    /// the ring's own fd meanwhile).
    pub(crate) fn pin(&mut self) -> RawFd {
        let fd = self.ring.target_fd();
        let raw = fd.as_raw_fd();
        self.pinned = Some(fd);
        raw
    }
}

impl<B> Op<B> {
    /// Does nothing, and completes with 0.
    pub fn nop(cookie: u64) -> Self {
        Self::new(opcode::Nop::new().build(), &"nop", Side::Send, cookie)
    }

    /// Does nothing and completes with 0, carrying `buf` through the ring untouched (the SQE
    /// does not name it): what a read or write of no bytes becomes when its caller gets its
    /// buffer back from the final completion. The buffer is still checked at post time.
    pub fn nop_carrying(buf: B, cookie: u64) -> Self {
        Self::nop(cookie).with_buf(buf, super::BufUse::None)
    }

    /// Completes with `-ETIME` after `after`.
    pub fn timeout(after: Duration, cookie: u64) -> Self {
        let ts = Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos());
        let keep = Box::new(Retained::Timespec(ts));
        let Retained::Timespec(ts) = &*keep else {
            unreachable!("just made")
        };
        // The SQE points into the box, which the operation keeps until its final completion.
        let e = opcode::Timeout::new(ts as *const Timespec).build();
        Self::new(e, &"timeout", Side::Send, cookie).retaining(keep)
    }

    /// Cancels the in-flight operation that was posted on the same work queue with cookie
    /// `target`. Completes with 0 when it was found, or `-ENOENT`/`-EALREADY` as the kernel says;
    /// the cancelled operation still delivers its own final completion (usually `-ECANCELED`),
    /// and its buffer comes back only then.
    ///
    /// A cancel never waits for credit: on a queue whose send credits are all taken (by
    /// operations that may never complete on their own, such as sends to a peer that does not
    /// read) it overdraws the send side by one, which its completion gives back.
    pub fn cancel(target: u64, cookie: u64) -> Self {
        // The target's cookie waits in `addr` for the ring to swap in its `user_data`.
        let e = opcode::AsyncCancel::new(target).build();
        Self::new(e, &"async_cancel", Side::Send, cookie).on_post(PostAction::Cancel)
    }

    /// Posts a completion with `message` as its cookie and `result` as its result on another
    /// completion queue, where it is reaped as a message ([`Completion::wq`](crate::Completion)
    /// is `None`). `message` must fit in 63 bits.
    pub fn msg_ring<T: Send + Sync + 'static>(
        target: &crate::Ring<T>,
        message: u64,
        result: i32,
        cookie: u64,
    ) -> Self {
        let data = (message & !crate::ring::MESSAGE_BIT) | crate::ring::MESSAGE_BIT;
        let e = opcode::MsgRingData::new(super::file::UNSET, result, data, None).build();
        Self::new(e, &"msg_ring", Side::Send, cookie)
            .retaining(Box::new(Retained::Ring(target.ring_ref())))
            .on_post(PostAction::MsgRing)
    }

    /// Copies fixed file `slot` of this work queue's ring into slot `dest` of `to`'s ring, so
    /// that work queues of `to` can use it (`IORING_OP_MSG_RING` with `IORING_MSG_SEND_FD`,
    /// Linux 6.0). Both rings then hold the file; each slot is closed on its own (a close, or
    /// [`Adapter::clear_file`](crate::Adapter::clear_file), which empties the slot on every
    /// ring). A file already in `dest` on `to` is replaced.
    ///
    /// This is how a connection accepted with [`accept_direct`](Op::accept_direct) or
    /// [`accept_multishot`](Op::accept_multishot), which exists only in the table of the ring
    /// that accepted it, reaches a work queue of another completion queue. Post it on a work
    /// queue of `slot` (`Target::Fixed(slot)`) on the ring that has the file: a slot's file is
    /// its queues' to give, so that whoever may post on a ring cannot copy out the files that
    /// others' queues use there. Any other work queue gets it back with
    /// [`DescriptorError::WrongQueue`](crate::DescriptorError::WrongQueue).
    ///
    /// Completes with 0 once the file is in `to`'s table, or with a negated errno: `-EBADF` when
    /// `slot` is empty or outside the table, `-EINVAL` when `dest` is outside `to`'s table or
    /// `to` is this work queue's own completion queue. `to` sees no completion. Like
    /// [`msg_ring`](Op::msg_ring), it reads `to`'s ring when the SQE is built: if `to` is
    /// resized while the operation is in flight, the file may land in the replaced ring.
    pub fn share_file<T: Send + Sync + 'static>(
        slot: FileSlot,
        to: &crate::Ring<T>,
        dest: FileSlot,
        cookie: u64,
    ) -> Self {
        let op = |e| {
            Self::new(e, &"share_file", Side::Send, cookie)
                .retaining(Box::new(Retained::Ring(to.ring_ref())))
        };
        match types::DestinationSlot::try_from_slot_target(dest.0) {
            // No CQE on the target: the file is the message, and the outcome is this
            // operation's own completion. The target ring's fd is filled in when posting.
            Ok(to) => {
                op(
                    opcode::MsgRingSendFd::new(super::file::UNSET, types::Fixed(slot.0), to, 0)
                        .opcode_flags(MSG_RING_CQE_SKIP)
                        .build(),
                )
                .on_post(PostAction::ShareFile(slot.0))
            }
            Err(_) => op(opcode::Nop::new().build()).on_post(PostAction::BadSlot(dest.0)),
        }
    }
}
