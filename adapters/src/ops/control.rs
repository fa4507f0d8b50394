//! Control operations: nop, timeout, async cancel and msg_ring.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types::Timespec};

use super::{Keep, Op, Side, Special};

/// A ring whose io_uring fd a resize may replace.
pub(crate) trait RingFd: Send + Sync {
    /// The current io_uring's fd.
    fn ring_fd(&self) -> RawFd;
}

/// Keeps a target ring open while a `msg_ring` to it is in flight.
pub(crate) struct RingRef {
    ring: Arc<dyn RingFd>,
}

impl RingRef {
    pub(crate) fn new(ring: Arc<dyn RingFd>) -> Self {
        Self { ring }
    }

    /// The target's current fd, read when the SQE is built, so a message posted after the
    /// target was resized goes to its new ring.
    pub(crate) fn fd(&self) -> RawFd {
        self.ring.ring_fd()
    }
}

impl<B> Op<B> {
    /// Does nothing, and completes with 0.
    pub fn nop(cookie: u64) -> Self {
        Self::new(opcode::Nop::new().build(), &"nop", Side::Send, cookie)
    }

    /// Completes with `-ETIME` after `after`.
    pub fn timeout(after: Duration, cookie: u64) -> Self {
        let ts = Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos());
        let keep = Box::new(Keep::Timespec(ts));
        let Keep::Timespec(ts) = &*keep else {
            unreachable!("just made")
        };
        // The SQE points into the box, which the operation keeps until its final completion.
        let e = opcode::Timeout::new(ts as *const Timespec).build();
        Self::new(e, &"timeout", Side::Send, cookie).keeping(keep)
    }

    /// Cancels the in-flight operation that was posted on the same work queue with cookie
    /// `target`. Completes with 0 when it was found, or `-ENOENT`/`-EALREADY` as the kernel says;
    /// the cancelled operation still delivers its own final completion (usually `-ECANCELED`),
    /// and its buffer comes back only then.
    pub fn cancel(target: u64, cookie: u64) -> Self {
        // The target's cookie waits in `addr` for the ring to swap in its `user_data`.
        let e = opcode::AsyncCancel::new(target).build();
        Self::new(e, &"async_cancel", Side::Send, cookie).special(Special::Cancel)
    }

    /// Posts a completion with `message` as its cookie and `result` as its result on another
    /// completion queue, where it is reaped as a message ([`Completion::wq`](crate::Completion)
    /// is `None`). `message` must fit in 63 bits.
    pub fn msg_ring<T: Send + Sync + 'static>(
        target: &crate::CompletionQueue<T>,
        message: u64,
        result: i32,
        cookie: u64,
    ) -> Self {
        let data = (message & !crate::ring::MESSAGE_BIT) | crate::ring::MESSAGE_BIT;
        let e = opcode::MsgRingData::new(super::file::UNSET, result, data, None).build();
        Self::new(e, &"msg_ring", Side::Send, cookie)
            .keeping(Box::new(Keep::Ring(target.ring_ref())))
            .special(Special::MsgRing)
    }
}
