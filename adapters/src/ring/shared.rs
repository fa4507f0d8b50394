//! [`RingShared`]: one ring of an adapter as work queues, completion-queue handles and `CqSet`s hold
//! it: the [`RingState`] behind the combiner lock (with the inbox of the threads that do not own
//! it), the current io_uring's fd and CQ size, and the check a descriptor passes before it is
//! posted.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use io_uring::IoUring;

use super::io_ring::IoRing;
use super::{Post, RingState};
use crate::error::DescriptorError;
use crate::ops::{FileSlot, PostAction, Request, Resolved, Retained, Target};
use crate::stats::Counters;
use crate::tables::Tables;
use regio_sync::Combiner;

/// One ring of an adapter: one completion queue.
pub(crate) struct RingShared<B> {
    pub(crate) combiner: Combiner<RingState<B>, Post<B>>,
    /// The current io_uring's fd; a resize replaces it (see [`RingShared::fd`]).
    fd: AtomicI32,
    /// The current io_uring's CQ size.
    cq_entries: AtomicU32,
    /// A duplicate of the current io_uring's fd, which msg_ring and share_file operations aimed
    /// at this ring hold until their final CQE: the number they put in their SQE can then never
    /// name another file, even if a resize closes the io_uring it belonged to.
    target: std::sync::Mutex<Arc<OwnedFd>>,
    /// Provided-buffer rings registered on the current io_uring; changed only under the tables'
    /// write lock.
    pub(crate) provided: AtomicUsize,
    pub(crate) eventfd: OwnedFd,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tables: Arc<Tables>,
    pub(crate) supported: Arc<[bool; 256]>,
    pub(crate) index: usize,
    pub(crate) span: tracing::Span,
    /// Single-issuer mode ([`crate::Config::single_issuer`]): only the owner thread takes the
    /// ring; see the `issuer` module.
    pub(crate) single_issuer: bool,
    /// The ring has `IORING_SETUP_TASKRUN_FLAG` in single-issuer mode: a reap runs the kernel's
    /// pending task work when `IORING_SQ_TASKRUN` says there is some.
    pub(super) taskrun_flag: bool,
    /// The owner thread's token (`issuer::thread_token`), 0 while the ring has no owner; set
    /// once, by [`RingShared::bind_owner`].
    pub(super) owner: AtomicU64,
    /// The ring's SQPOLL kernel thread serves other rings too (the adapter's others, attached
    /// with `IORING_SETUP_ATTACH_WQ`): the thread then takes at most 8 SQEs of a ring per pass,
    /// and ends a link chain where a pass ends, so linked chains are refused.
    pub(crate) shares_sq_thread: bool,
}

impl<B> RingShared<B> {
    /// With SQPOLL, publishes staged SQEs early, every `every` of them
    /// ([`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every); 0: never). For a
    /// ring being set up, before anything is posted.
    pub(crate) fn set_publish_every(&mut self, every: u32) {
        self.combiner.get_mut().set_publish_every(every);
    }

    pub(crate) fn new(
        uring: IoUring,
        eventfd: OwnedFd,
        tables: Arc<Tables>,
        supported: Arc<[bool; 256]>,
        index: usize,
        span: tracing::Span,
        issuer: Option<crate::SingleIssuer>,
    ) -> io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let fd = uring.as_raw_fd();
        let cq_entries = uring.params().cq_entries();
        let target = std::sync::Mutex::new(dup_ring_fd(fd)?);
        // A single-issuer ring is disabled until its owner binds it: posts drained before then
        // wait in the pending area, and the bind submits them.
        let state = RingState::new(
            IoRing::new(uring)?,
            eventfd.as_raw_fd(),
            issuer.is_none(),
            Arc::clone(&counters),
        );
        Ok(Self {
            combiner: Combiner::new(state),
            fd: AtomicI32::new(fd),
            cq_entries: AtomicU32::new(cq_entries),
            target,
            provided: AtomicUsize::new(0),
            eventfd,
            counters,
            tables,
            supported,
            index,
            span,
            single_issuer: issuer.is_some(),
            taskrun_flag: issuer.is_some_and(|i| i != crate::SingleIssuer::Plain),
            owner: AtomicU64::new(0),
            shares_sq_thread: false,
        })
    }

    /// The current io_uring's fd. A resize replaces it; the old fd stays open until the old
    /// ring retires.
    pub(crate) fn fd(&self) -> RawFd {
        // Relaxed: only the number is read. The ring behind it was set up by system calls
        // before the store, and the kernel, not this atomic, orders that state.
        self.fd.load(Ordering::Relaxed)
    }

    /// The current io_uring's CQ size.
    pub(crate) fn cq_entries(&self) -> u32 {
        // Relaxed: a size, read on its own.
        self.cq_entries.load(Ordering::Relaxed)
    }

    /// Records a new current io_uring (a resize): its fd, its CQ size and the duplicate of its
    /// fd that messages aim at.
    pub(super) fn set_current(&self, fd: RawFd, cq_entries: u32, target: Arc<OwnedFd>) {
        // Relaxed (both): as in `fd`; the table writer, which alone replaces rings, is
        // serialised by the tables' write lock.
        self.fd.store(fd, Ordering::Relaxed);
        self.cq_entries.store(cq_entries, Ordering::Relaxed);
        *self.lock_target() = target;
    }

    /// The duplicate of the current io_uring's fd that msg_ring and share_file operations aim
    /// at (see `ops::control::RingRef`).
    fn lock_target(&self) -> std::sync::MutexGuard<'_, Arc<OwnedFd>> {
        // A poisoned lock still holds a whole `Arc`: replacing it is one store.
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the SQPOLL thread serving this ring has set `IORING_SQ_NEED_WAKEUP`, so the next
    /// submission must wake it (always false without SQPOLL); `None` if another thread owns the
    /// ring now.
    pub(crate) fn sqpoll_sleeping(&self) -> Option<bool> {
        let mut g = self.try_own()?;
        // `need_wakeup` issues a SeqCst fence, then a relaxed load of the SQ flags: the same read
        // `IoRing::flush_sq` makes before it decides to wake the thread.
        Some(g.with(|s| s.io.sqpoll() && s.io.uring.submission().need_wakeup()))
    }
}

impl<B: Send> crate::ops::control::RingFd for RingShared<B> {
    fn target_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.lock_target())
    }
}

/// A duplicate of an io_uring's fd: it names the same ring, and its number stays taken for as
/// long as an operation that aims at it holds it.
pub(super) fn dup_ring_fd(fd: RawFd) -> io::Result<Arc<OwnedFd>> {
    crate::sys::dup_fd(fd).map(Arc::new)
}

impl<B: crate::IoBuf> RingShared<B> {
    /// Validates an operation's descriptor (its plain part, its buffer or registered slice) for
    /// this ring: the kernel has its opcode, its buffer key
    /// names a registered region of the right generation with the slice in bounds (the result
    /// is the buffer's address), a splice's second file slot exists, and a close names a fixed
    /// slot (`target` is the work queue's). A rejection is counted.
    #[inline(always)]
    pub(crate) fn check(
        &self,
        reader: &impl regio_sync::ReadSide,
        (req, buf, keep): (&Request, Option<&B>, &Option<Box<Retained>>),
        target: Target,
    ) -> Result<Option<Resolved>, DescriptorError> {
        if !self.supported[req.opcode() as usize] {
            return Err(self.rejected(unsupported(req.opcode())));
        }
        let buf = match (buf, keep.as_deref()) {
            (Some(b), _) => Some(
                self.tables
                    .resolve(reader, b)
                    .map_err(|e| self.rejected(e))?,
            ),
            (None, Some(Retained::Region(slice))) => Some(
                self.tables
                    .resolve(reader, slice)
                    .map_err(|e| self.rejected(e))?,
            ),
            (None, _) => None,
        };
        match req.post_action {
            PostAction::None => {}
            PostAction::SpliceOut(out) => self
                .tables
                .check_target(reader, out)
                .map_err(|e| self.rejected(e))?,
            PostAction::BadSlot(slot) => {
                return Err(self.rejected(DescriptorError::BadFileSlot(slot)))
            }
            PostAction::Close if matches!(target, Target::Fd(_)) => {
                return Err(self.rejected(DescriptorError::WrongQueue(
                    "a plain-fd work queue's file is the queue's own: remove the queue instead \
                     of closing it",
                )))
            }
            PostAction::ShareFile(slot) if target != Target::Fixed(FileSlot(slot)) => {
                return Err(self.rejected(DescriptorError::WrongQueue(
                    "a share_file goes on a work queue of the slot it shares",
                )))
            }
            PostAction::Cancel
            | PostAction::MsgRing
            | PostAction::ShareFile(_)
            | PostAction::Close => {}
        }
        Ok(buf)
    }

    /// Counts a rejection.
    #[cold]
    fn rejected(&self, e: DescriptorError) -> DescriptorError {
        Counters::add(&self.counters.rejected, 1);
        e
    }
}

/// The rejection of an opcode the kernel lacks.
#[cold]
fn unsupported(opcode: u8) -> DescriptorError {
    let (op, since) = crate::adapter::since(opcode);
    DescriptorError::Unsupported { op, since }
}
