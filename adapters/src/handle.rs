//! [`Ring`]: the handle on one io_uring of an adapter, its SQ (staged through a [`Batch`]) and its
//! CQ, which coalesces the completions of every work queue bound to it; and [`Completion`], what
//! reaping yields.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::cqueue;

use crate::batch::Batch;
use crate::error::{DescriptorError, Error};
use crate::ring::{Post, RingShared, RingState};
use crate::stats::Stats;
use crate::tables::WqId;
use crate::wait::{Look, Owned};
use crate::IoBuf;
use regio_sync::CombinerGuard;

/// One completion, routed to the work queue that posted its operation.
///
/// It is kept small (72 bytes with a pool [`Message`](regio_pool::Message) as the buffer),
/// because every CQE becomes one: the rare rejection reason is boxed.
pub struct Completion<B> {
    /// The work queue whose operation completed; `None` for a msg_ring message.
    pub wq: Option<WqId>,
    /// The operation's cookie (for a message: the message value).
    pub cookie: u64,
    /// The kernel's result: a count or a negated errno.
    pub result: i32,
    /// The CQE flags (`F_MORE`, `F_NOTIF`, ...).
    pub flags: u32,
    /// The operation's buffer, handed back with its final completion only.
    pub buf: Option<B>,
    /// Why the descriptor was rejected before it reached the kernel, if it was.
    rejection: Option<Box<DescriptorError>>,
}

impl<B> fmt::Debug for Completion<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("wq", &self.wq)
            .field("cookie", &self.cookie)
            .field("result", &self.result)
            .field("flags", &self.flags)
            .field("buf", &self.buf.is_some())
            .field("rejected", &self.rejection)
            .finish()
    }
}

impl<B> Completion<B> {
    #[inline(always)]
    pub(crate) fn from_cqe(wq: WqId, cookie: u64, result: i32, flags: u32, buf: Option<B>) -> Self {
        Self {
            wq: Some(wq),
            cookie,
            result,
            flags,
            buf,
            rejection: None,
        }
    }

    /// Writes a kernel completion straight into `place`, one field at a time, rather than
    /// building it aside and copying it in (which the compiler does with vector loads over
    /// fields it has just stored one by one: a store-forwarding stall per completion).
    #[inline(always)]
    pub(crate) fn write_from_cqe(
        place: &mut std::mem::MaybeUninit<Self>,
        wq: WqId,
        cookie: u64,
        result: i32,
        flags: u32,
        buf: Option<B>,
    ) {
        let p = place.as_mut_ptr();
        // SAFETY: `p` points to memory valid for writes of a `Completion` (the place), and each
        // field is written exactly once through its own raw pointer, never read; afterwards
        // every field is initialised, so the place holds a valid `Completion`.
        unsafe {
            std::ptr::addr_of_mut!((*p).wq).write(Some(wq));
            std::ptr::addr_of_mut!((*p).cookie).write(cookie);
            std::ptr::addr_of_mut!((*p).result).write(result);
            std::ptr::addr_of_mut!((*p).flags).write(flags);
            std::ptr::addr_of_mut!((*p).buf).write(buf);
            std::ptr::addr_of_mut!((*p).rejection).write(None);
        }
    }

    pub(crate) fn reject(wq: WqId, cookie: u64, error: DescriptorError, buf: Option<B>) -> Self {
        Self {
            wq: Some(wq),
            cookie,
            result: error.errno(),
            flags: 0,
            buf,
            rejection: Some(Box::new(error)),
        }
    }

    pub(crate) fn failed(wq: WqId, cookie: u64, result: i32) -> Self {
        Self::from_cqe(wq, cookie, result, 0, None)
    }

    pub(crate) fn message(value: u64, result: i32, flags: u32) -> Self {
        Self {
            wq: None,
            cookie: value,
            result,
            flags,
            buf: None,
            rejection: None,
        }
    }

    /// The result as an [`io::Result`](std::io::Result): the count the kernel returned, or the
    /// error its negated errno names (for a rejected descriptor, the errno it was given; see
    /// [`rejected`](Self::rejected) for why).
    pub fn io_result(&self) -> std::io::Result<u32> {
        u32::try_from(self.result)
            .map_err(|_| std::io::Error::from_raw_os_error(self.result.wrapping_neg()))
    }

    /// Why the descriptor was rejected before it reached the kernel; `None` for a completion
    /// from the kernel.
    pub fn rejected(&self) -> Option<&DescriptorError> {
        self.rejection.as_deref()
    }

    /// Whether this is the operation's last completion (no `F_MORE`): its buffer is back.
    pub fn is_final(&self) -> bool {
        !cqueue::more(self.flags)
    }

    /// The provided buffer the kernel picked for this completion (multishot receive), if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// Whether this is a send_zc notification (`F_NOTIF`).
    pub fn is_notification(&self) -> bool {
        cqueue::notif(self.flags)
    }
}

/// Where a reap puts its completions: a `Vec` (each written in place at its end) or a caller's
/// closure ([`Each`]), which takes each by value and so needs no 72-byte store and no later
/// drop of it in the caller's `Vec`.
pub(crate) trait Sink<B> {
    /// Makes room for `n` more completions (a `Vec` reserves once per batch of CQEs, not per
    /// completion).
    fn reserve(&mut self, n: usize);
    /// A completion from the kernel, handed over field by field.
    fn cqe(&mut self, wq: WqId, cookie: u64, result: i32, flags: u32, buf: Option<B>);
    /// A completion already whole (a rejection, a message, a local failure).
    fn whole(&mut self, c: Completion<B>);
}

impl<B> Sink<B> for Vec<Completion<B>> {
    #[inline(always)]
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n);
    }

    #[inline(always)]
    fn cqe(&mut self, wq: WqId, cookie: u64, result: i32, flags: u32, buf: Option<B>) {
        let len = self.len();
        // Written in place, field by field (see `Completion::write_from_cqe`); the index panics
        // rather than grows if `reserve` was not called first.
        Completion::write_from_cqe(
            &mut self.spare_capacity_mut()[0],
            wq,
            cookie,
            result,
            flags,
            buf,
        );
        // SAFETY: the place just after the length was written above, and it lies within the
        // allocation (`spare_capacity_mut` has it).
        unsafe { self.set_len(len + 1) };
    }

    fn whole(&mut self, c: Completion<B>) {
        self.push(c);
    }
}

/// A reap's closure as a [`Sink`].
pub(crate) struct Each<F>(pub F);

impl<B, F: FnMut(Completion<B>)> Sink<B> for Each<F> {
    #[inline(always)]
    fn reserve(&mut self, _: usize) {}

    #[inline(always)]
    fn cqe(&mut self, wq: WqId, cookie: u64, result: i32, flags: u32, buf: Option<B>) {
        (self.0)(Completion::from_cqe(wq, cookie, result, flags, buf));
    }

    fn whole(&mut self, c: Completion<B>) {
        (self.0)(c);
    }
}

/// One io_uring of an adapter, SQ and CQ: the handle through which a thread owns the ring, stages
/// and submits with a [`batch`](Self::batch), and reaps the completions of every work queue bound
/// to it.
///
/// Reaping reads CQEs from the shared ring with no system call. At most one thread reaps a CQ at
/// a time: [`reap`](Self::reap) returns 0 at once when another thread (a [`CqSet`](crate::CqSet)
/// reaper, say) owns it. In single-issuer mode ([`Config::single_issuer`](crate::Config::single_issuer))
/// only the thread bound with [`bind_owner`](Self::bind_owner) ever owns it: `reap` returns 0
/// and [`batch`](Self::batch) `None` on any other thread, and [`wait`](Self::wait) refuses.
pub struct Ring<B> {
    pub(crate) ring: Arc<RingShared<B>>,
}

impl<B> Clone for Ring<B> {
    fn clone(&self) -> Self {
        Self {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<B> fmt::Debug for Ring<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("index", &self.ring.index)
            .field("ring_fd", &self.ring.fd())
            .finish()
    }
}

impl<B: IoBuf> Ring<B> {
    /// Reaps up to `max` completions into `out` and returns how many. No system call unless the
    /// kernel flagged a CQ overflow (then one `io_uring_enter` flushes its overflow list).
    ///
    /// # Errors
    ///
    /// [`Error::CompletionsLost`] if the kernel reports dropped CQEs; the completions reaped so
    /// far are still in `out`.
    pub fn reap(&self, out: &mut Vec<Completion<B>>, max: usize) -> Result<usize, Error> {
        match self.ring.try_own() {
            Some(mut g) => {
                reap_locked(&self.ring, &mut g, None::<&regio_sync::Guard<'_>>, out, max)
            }
            None => Ok(0),
        }
    }

    /// Reaps like [`reap`](Self::reap), but hands each completion to `f` by value instead of
    /// pushing it onto a `Vec`: for a caller that looks at each completion once, this saves
    /// writing it out and dropping it later.
    ///
    /// # Errors
    ///
    /// As for [`reap`](Self::reap); the completions reaped before the error went to `f`.
    pub fn reap_each(&self, max: usize, f: impl FnMut(Completion<B>)) -> Result<usize, Error> {
        match self.ring.try_own() {
            Some(mut g) => reap_locked(
                &self.ring,
                &mut g,
                None::<&regio_sync::Guard<'_>>,
                &mut Each(f),
                max,
            ),
            None => Ok(0),
        }
    }

    /// Reaps like [`reap`](Self::reap), and if nothing is there, sleeps on the CQ's eventfd
    /// until a completion arrives or `timeout` passes (RIONotify with a wait).
    ///
    /// While another thread owns the ring (a [`Batch`], a poster), the wait cannot reap; that
    /// owner signals the eventfd when it lets go if the CQ holds completions, so the wait
    /// returns then rather than at its timeout. A post that the full SQ refused (it waits in
    /// the ring's inbox) is pushed by the wait, which looks again every millisecond until the
    /// SQ has room.
    ///
    /// In single-issuer mode the owner thread also wakes for posts that other threads leave in
    /// the inbox, and pushes and submits them.
    ///
    /// # Errors
    ///
    /// As for [`reap`](Self::reap); in single-issuer mode, [`Error::NotOwner`] at once on any
    /// thread but the ring's bound owner (it could never reap).
    pub fn wait(
        &self,
        out: &mut Vec<Completion<B>>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        if self.ring.single_issuer && !self.ring.owned_here() {
            return Err(Error::NotOwner);
        }
        crate::wait::reap_or_sleep(
            timeout,
            |owned| look(&self.ring, out, max, owned),
            || {
                crate::sys::eventfd_drain(&self.ring.eventfd);
            },
            |left| {
                crate::sys::poll_readable(self.ring.eventfd.as_raw_fd(), left)
                    .map(drop)
                    .map_err(|source| Error::Sys {
                        what: "poll on the CQ eventfd",
                        source,
                    })
            },
        )
    }

    /// The eventfd the kernel signals when it posts completions to this CQ. Poll it for
    /// readability to sleep until completions arrive (the RIONotify of this CQ); read it to
    /// re-arm. In single-issuer mode it is also signalled when the kernel defers task work to
    /// the owner, and when another thread leaves a post in the inbox: a reap handles both.
    pub fn notify_fd(&self) -> RawFd {
        self.ring.eventfd.as_raw_fd()
    }

    /// Owns the ring for a batch of posts that are pushed to the SQ but not submitted until
    /// [`Batch::commit`] or the end of the batch (RIO's `RIO_MSG_DEFER` and `COMMIT_ONLY`);
    /// with SQPOLL and [`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every), a
    /// polling kernel thread may start them earlier (see [`Batch`], "When the kernel sees the
    /// posts").
    /// `None` if another thread owns the ring now (in single-issuer mode: on any thread but the
    /// owner); post with [`WorkQueue::post`](crate::WorkQueue::post) instead.
    #[inline]
    pub fn batch(&self) -> Option<Batch<'_, B>> {
        Batch::new(&self.ring)
    }

    /// Single-issuer mode: makes the calling thread this CQ's owner, the only thread that
    /// submits to and reaps its ring from now on (the kernel's `submitter_task`, set by
    /// `IORING_REGISTER_ENABLE_RINGS` on the ring, which was set up disabled). Posts left in the
    /// inbox before the bind are submitted now. Binding again from the owner does nothing.
    ///
    /// Register regions and files ([`Adapter::register_region`](crate::Adapter::register_region),
    /// [`Adapter::set_file`](crate::Adapter::set_file), a pool's
    /// [`registrar`](crate::Adapter::registrar)) before binding, or from the owner thread: the
    /// kernel refuses registration on a bound ring from any other thread.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an adapter not in single-issuer mode; [`Error::NotOwner`] when
    /// another thread owns the ring already; [`Error::Sys`] if the kernel refuses to enable it.
    pub fn bind_owner(&self) -> Result<(), Error> {
        self.ring.bind_owner()
    }

    /// This CQ's counters.
    pub fn stats(&self) -> Stats {
        self.ring.counters.snapshot(self.ring.combiner.queued())
    }

    /// Whether the SQPOLL thread serving this CQ's ring sleeps (the kernel has set
    /// `IORING_SQ_NEED_WAKEUP`), so that the next post costs one `io_uring_enter` to wake it,
    /// counted in [`Stats::enters`]. Always `Some(false)` without SQPOLL, and `None` while the
    /// ring is owned (by a reaper or a [`Batch`]), when [`reap`](Self::reap) finds nothing too.
    /// The answer can be stale at once: the thread falls asleep after an idle spell of
    /// [`SqPoll::idle`](crate::SqPoll::idle) and wakes on the next submission.
    ///
    /// Like a reap, it owns the ring for a moment, and on letting go pushes any posts waiting in
    /// the ring's inbox.
    pub fn sqpoll_sleeping(&self) -> Option<bool> {
        self.ring.sqpoll_sleeping()
    }

    /// The CQ's size in entries; [`Adapter::resize_completion_queue`] changes it.
    ///
    /// [`Adapter::resize_completion_queue`]: crate::Adapter::resize_completion_queue
    pub fn entries(&self) -> u32 {
        self.ring.cq_entries()
    }

    /// The CQ's index in its adapter.
    pub fn index(&self) -> usize {
        self.ring.index
    }

    /// The ring's file descriptor (the target of msg_ring).
    pub fn ring_fd(&self) -> RawFd {
        self.ring.fd()
    }
}

impl<B: Send + 'static> Ring<B> {
    pub(crate) fn ring_ref(&self) -> crate::ops::control::RingRef {
        crate::ops::control::RingRef::new(Arc::clone(&self.ring) as Arc<_>)
    }
}

/// One look of a wait at `ring` (see the `wait` module): reaps it if this thread can own it;
/// if another thread owns it, skips it or asks its owner to signal the eventfd, as `owned` says.
pub(crate) fn look<B: IoBuf>(
    ring: &RingShared<B>,
    out: &mut Vec<Completion<B>>,
    max: usize,
    owned: Owned,
) -> Result<Look, Error> {
    let guard = match owned {
        Owned::Skip => ring.try_own(),
        Owned::Ask => ring.try_own_or_ask(),
    };
    let Some(mut g) = guard else {
        return Ok(Look::default());
    };
    let got = reap_locked(ring, &mut g, None::<&regio_sync::Guard<'_>>, out, max)?;
    drop(g);
    // Read after our release: a post the SQ refused, which our release pushed back into the
    // inbox, is still counted unless another owner has taken it since (that owner then signals
    // the eventfd if the SQ refuses it again). A post just left by another thread also counts:
    // a short nap, then a look, where a sleep would have done.
    let stuck = ring.combiner.queued() > 0;
    Ok(Look { got, stuck })
}

/// Reaps with the ring owned, after pushing and submitting what waits in the inbox.
///
/// A post the SQ was too full to take stays first in the inbox; the submit here makes room, so
/// this reap pushes it (a second drain) rather than leaving it for the next post or reap.
pub(crate) fn reap_locked<B: IoBuf, R: regio_sync::ReadSide>(
    ring: &RingShared<B>,
    g: &mut CombinerGuard<'_, RingState<B>, Post<B>>,
    reader: Option<&R>,
    out: &mut impl Sink<B>,
    max: usize,
) -> Result<usize, Error> {
    let submit = |s: &mut RingState<B>| {
        s.submit().map_err(|source| Error::Sys {
            what: "io_uring_enter (submit)",
            source,
        })
    };
    let drained = g.drain();
    g.with(submit)?;
    ring.run_task_work(g)?;
    if !drained && g.drain() {
        g.with(submit)?;
    }
    let tables = &ring.tables;
    let n = g.with(|s| s.reap(tables, reader, out, max))?;
    if n > 0 {
        tracing::trace!(parent: &ring.span, n, "reaped");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::Completion;

    #[test]
    fn io_result_is_the_count_or_the_negated_errno() {
        assert_eq!(
            Completion::<()>::message(1, 4096, 0).io_result().unwrap(),
            4096
        );
        let err = Completion::<()>::message(1, -libc::EBADF, 0)
            .io_result()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let odd = Completion::<()>::message(1, i32::MIN, 0)
            .io_result()
            .unwrap_err();
        assert_eq!(odd.raw_os_error(), Some(i32::MIN));
    }
}
