//! Control operations: nop, timeout, async cancel and msg_ring.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::Timespec;

use super::{Kind, Op};

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
        Self::new(Kind::Nop, cookie)
    }

    /// Completes with `-ETIME` after `after`.
    pub fn timeout(after: Duration, cookie: u64) -> Self {
        let ts = Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos());
        Self::new(Kind::Timeout { ts: Box::new(ts) }, cookie)
    }

    /// Cancels the in-flight operation that was posted on the same work queue with cookie
    /// `target`. Completes with 0 when it was found, or `-ENOENT`/`-EALREADY` as the kernel says;
    /// the cancelled operation still delivers its own final completion (usually `-ECANCELED`),
    /// and its buffer comes back only then.
    pub fn cancel(target: u64, cookie: u64) -> Self {
        Self::new(Kind::Cancel { target }, cookie)
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
        Self::new(
            Kind::MsgRing {
                keep: target.ring_ref(),
                cookie: message & !crate::ring::MESSAGE_BIT,
                result,
            },
            cookie,
        )
    }
}
