//! Control operations: nop, timeout, async cancel and msg_ring.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::Timespec;

use super::{Kind, Op};

/// Keeps a target ring open while a `msg_ring` to it is in flight.
pub(crate) struct RingRef {
    fd: RawFd,
    _keep: Arc<dyn Send + Sync>,
}

impl RingRef {
    pub(crate) fn new(fd: RawFd, keep: Arc<dyn Send + Sync>) -> Self {
        Self { fd, _keep: keep }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
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
