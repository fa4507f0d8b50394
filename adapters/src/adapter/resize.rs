//! Resizing a completion queue: [`Adapter::resize_completion_queue`].
//!
//! # Design
//!
//! The kernel's own resize (`IORING_REGISTER_RESIZE_RINGS`, Linux 6.13) is not used: it is
//! limited to `DEFER_TASKRUN` rings, which these rings cannot be (any thread may submit and
//! reap), and it moves the rings to new memory that the io-uring crate, which owns the
//! mappings, would not map again.
//!
//! Instead a resize builds a new io_uring with the larger CQ and swaps it in *under the same
//! [`RingShared`]*. Everything that names the completion queue holds that `RingShared`, not the io_uring:
//! work queues, [`Ring`](crate::Ring) handles, [`CqSet`](crate::CqSet)s and msg_ring operations
//! aimed at it. So nothing has to be switched over, and no table changes:
//!
//! - The new ring is set up like the others: SQPOLL attached to the adapter's shared thread
//!   (`ATTACH_WQ`), the registered-buffer table cloned from the ring it replaces (or each region
//!   registered again where the kernel cannot clone), a sparse file table of the same size
//!   holding the old ring's fixed files (below), and *the same eventfd*. A sleeper on
//!   [`Ring::notify_fd`](crate::Ring::notify_fd) or in a `CqSet`'s epoll is woken by either ring, and never
//!   has to learn of the resize.
//! - The swap happens with the ring owned (its lock), after the pending SQEs were submitted to
//!   the old ring. From then on every post goes to the new ring.
//! - The old ring *retires*: each in-flight operation carries the serial of the io_uring it went
//!   to, and the owner keeps reaping the retiring ring (before the current one, in the same reap)
//!   until the final CQE of its last operation has come and its CQ is empty. Both rings route
//!   through the one slab, so a completion is routed once, wherever it arrives. Then the old
//!   ring is closed. A cancel of an operation on the retiring ring is submitted to that ring,
//!   since a cancel by `user_data` only finds operations of its own ring.
//! - Stats continue: the counters belong to the `RingShared`, not to the io_uring.
//!
//! # Limits
//!
//! - One resize at a time per CQ: another one fails with [`Error::ResizeDraining`] until the
//!   retiring ring is drained.
//! - The new size must hold the operations in flight ([`Error::CqTooSmall`] otherwise): a
//!   smaller CQ would overflow as soon as the same load moved over. It must also be at least the
//!   SQ size, as the kernel requires.
//! - Provided-buffer rings are registered on one io_uring: a resize is refused while the CQ has
//!   one.
//! - A fixed file that reaches the old ring's table after the carry stays there, out of reach
//!   (no work queue posts to the old ring any more), and is closed with the old ring. That is
//!   what an accept still in flight at the resize does, a multishot accept above all: each
//!   connection it accepts afterwards is completed as usual, but its slot exists only on the
//!   old ring. Cancel such accepts before the resize and post them again after it (when the old
//!   ring retires with such files, a warning names their slots). A
//!   [`share_file`](crate::Op::share_file) aimed at this CQ and built before the resize may
//!   land there too.
//! - A msg_ring operation reads its target's fd when its SQE is built, and holds a duplicate of
//!   it until its final CQE, so the number always names that ring; one built just before the
//!   target's resize reaches the retiring ring, which delivers it if it is still being reaped.
//!
//! # Fixed files
//!
//! Fixed files live in each ring's own table, and the adapter keeps no fds, so the new ring gets
//! them from the old one, with the ring owned and before the swap: every occupied slot of the
//! old ring (whether [`Adapter::set_file`], a direct or multishot accept or a `share_file`
//! filled it) is copied into the same slot of the new ring with `IORING_OP_MSG_RING` /
//! `IORING_MSG_SEND_FD`. Nothing is tracked for this in user space: the occupied slots are read
//! from the kernel (the ring's fdinfo), plus the slots set with [`Adapter::set_file`]. The
//! details are in `ring::resize::carry`. The carry needs Linux 6.0 (`IORING_MSG_SEND_FD`); a resize
//! that cannot carry the files fails and leaves the old ring in place.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::IoUring;

use super::{build_ring, sys, Adapter};
use crate::error::{setup_error, Error};
use crate::register;
use crate::ring::RingShared;
use crate::IoBuf;

/// How long a resize waits for another owner of the ring to let go.
const OWNED_PATIENCE: Duration = Duration::from_secs(5);

impl<B: IoBuf> Adapter<B> {
    /// Gives completion queue `cq` a CQ of `cq_entries` entries (rounded up to a power of two
    /// by the kernel), growing or shrinking it, while other threads keep posting and reaping.
    ///
    /// Operations in flight complete on the ring they were submitted to, which is reaped
    /// through the same [`Ring`](crate::Ring) until they are done; none
    /// is lost and none is reaped twice. Work queues, [`CqSet`](crate::CqSet)s and sleepers on
    /// [`notify_fd`](crate::Ring::notify_fd) carry on unchanged: the new ring has the
    /// same eventfd. [`ring_fd`](crate::Ring::ring_fd) changes. Fixed files come
    /// along: every occupied slot of the old ring's table, whether [`set_file`](Self::set_file),
    /// an accept or [`share_file`](crate::Op::share_file) filled it, is in the same slot of the
    /// new ring before the first operation reaches it. But an accept still in flight (a
    /// multishot accept, typically) went to the old ring, and installs what it accepts from now
    /// on there, out of reach of every work queue: cancel such accepts before the resize and
    /// post them again after it. To find the occupied slots the resize reads the ring's
    /// `/proc/self/fdinfo` entry.
    ///
    /// It owns the ring for a moment: called from a thread that holds a
    /// [`Batch`](crate::Batch) of this CQ, it fails after a few seconds. While it carries the
    /// fixed files it waits for the kernel with the ring owned: meanwhile, posts from other
    /// threads wait in the ring's inbox and reaps of this CQ find nothing.
    ///
    /// # Errors
    ///
    /// [`Error::CqTooSmall`] when more operations are in flight than `cq_entries`;
    /// [`Error::ResizeDraining`] while an earlier resize of this CQ is still draining;
    /// [`Error::Invalid`] for a bad index, a size below the SQ size, a CQ with
    /// provided-buffer rings, or an adapter in single-issuer mode; [`Error::Sys`] when the new ring cannot be set up or the fixed
    /// files cannot be carried to it (the old ring then stays in place).
    pub fn resize_completion_queue(&self, cq: usize, cq_entries: u32) -> Result<(), Error> {
        let inner = &self.inner;
        let ring = inner.ring(cq)?;
        if inner.single_issuer.is_some() {
            return Err(Error::Invalid(
                "a completion queue cannot be resized in single-issuer mode",
            ));
        }
        if cq_entries < inner.cfg.sq_entries {
            return Err(Error::Invalid(
                "a completion queue cannot be smaller than Config::sq_entries",
            ));
        }
        // The ring must be owned for the swap, and the write lock held for the region and file
        // tables to stay put; but a registration never waits for a ring while it holds the
        // write lock (see `adapter::registration`), so neither may this: when the ring is owned
        // elsewhere, let go of the lock and try again. The owner lets go soon (owners never
        // block), unless it is this very thread (a `Batch` of this CQ): then give up.
        let deadline = Instant::now() + OWNED_PATIENCE;
        loop {
            let w = inner.tables.write_lock();
            // Relaxed: the count changes only under the write lock held here.
            if ring.provided.load(Ordering::Relaxed) > 0 {
                return Err(Error::Invalid(
                    "a completion queue with provided-buffer rings cannot be resized; drop them first",
                ));
            }
            let Some(mut g) = ring.try_own() else {
                drop(w);
                if Instant::now() >= deadline {
                    return Err(Error::Invalid(
                        "the completion queue stayed owned during the resize (a Batch of it on \
                         this thread?); end the batch, then resize",
                    ));
                }
                std::thread::yield_now();
                continue;
            };
            // The slots set with `set_file` are carried even if the kernel's listing missed
            // them.
            let guard = inner.tables.domain.guard();
            let set: Vec<u32> = (0u32..)
                .zip(inner.tables.files.read(&guard).iter())
                .filter_map(|(slot, &set)| set.then_some(slot))
                .collect();
            drop(guard);
            let uring = self.new_uring(ring, cq_entries)?;
            let fd = uring.as_raw_fd();
            ring.replace_uring(&mut g, uring, &set)?;
            tracing::info!(parent: &ring.span, cq_entries, fd, "completion queue resized");
            return Ok(());
        }
    }

    /// A ring set up like `ring`, with a CQ of `cq_entries`. Runs with the tables' write lock
    /// held, so the region table is stable.
    fn new_uring(&self, ring: &RingShared<B>, cq_entries: u32) -> Result<IoUring, Error> {
        let inner = &self.inner;
        let cfg = super::Config {
            cq_entries,
            ..inner.cfg.clone()
        };
        let attach = inner.sqpoll.then(|| inner.rings[0].fd());
        let uring = build_ring(&cfg, cfg.sqpoll, attach, None).map_err(setup_error)?;
        let s = uring.submitter();
        // Relaxed: see `buffer_cloning`.
        let cloned =
            inner.clone_ok.load(Ordering::Relaxed) && s.register_buffers_clone(ring.fd()).is_ok();
        if !cloned {
            s.register_buffers_sparse(cfg.max_regions)
                .map_err(sys("IORING_REGISTER_BUFFERS2 (sparse buffer table)"))?;
            let guard = inner.tables.domain.guard();
            for (index, region) in inner.tables.regions.read(&guard).iter_live() {
                let iov = libc::iovec {
                    iov_base: region.base as *mut libc::c_void,
                    iov_len: region.size as usize,
                };
                // SAFETY: the region is registered, so its owner keeps it valid until it is
                // unregistered, which removes it from every ring, this one included (the write
                // lock held by the caller orders the two).
                unsafe { register::buffers_update(uring.as_raw_fd(), u32::from(index), &iov) }
                    .map_err(sys("IORING_REGISTER_BUFFERS_UPDATE (resized ring)"))?;
            }
        }
        if cfg.max_files > 0 {
            s.register_files_sparse(cfg.max_files)
                .map_err(sys("IORING_REGISTER_FILES2 (sparse file table)"))?;
        }
        s.register_eventfd(ring.eventfd.as_raw_fd())
            .map_err(sys("IORING_REGISTER_EVENTFD"))?;
        Ok(uring)
    }
}
