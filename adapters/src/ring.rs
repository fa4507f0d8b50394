//! One io_uring ring of an adapter: its SQ, its CQ and its in-flight operations, owned by one
//! thread at a time.
//!
//! In-flight operations live in a slab whose index (with a generation, see `slab`) is the SQE's
//! `user_data`, in the manner of monoio's lifecycle table. The slab entry owns the operation's
//! buffer and any memory the kernel reads late (timespec, socket address) until the operation's
//! *final* CQE, the one without `F_MORE`; only then is the buffer handed back in a
//! [`Completion`]. A send_zc therefore keeps its buffer until its `F_NOTIF` CQE, and a multishot
//! operation until its last CQE.
//!
//! # Where things are
//!
//! - `shared`: [`RingShared`], what work queues and completion-queue handles hold: the combiner lock
//!   around the [`RingState`], the ring's fd, and the check of a descriptor before its post.
//! - `io_ring`: `IoRing`, one io_uring with its pending SQEs (`pending`, which stages them in
//!   `staging` or writes them in place through `sq`) and the state of its CQ.
//! - `submit`: posting: an operation becomes a slab entry and an SQE (`enqueue`), and the SQEs
//!   pending since the last submit reach the kernel together; a [`Post`] is a post left in the
//!   inbox by a thread that did not own the ring, taken in through the combiner's `Absorb`.
//! - `reap`: reaping: each CQE is routed to its work queue through the slab, credits go back;
//!   without SQPOLL the CQEs are read where the kernel wrote them (`cq_map`); a CQ found empty
//!   has its overflow flag read (`sq_flags`).
//! - `resize`: the io_uring a resize replaced, reaped until its last operation completes, and
//!   the carry of its fixed files (`resize::carry`).
//! - `teardown`: what a dropped ring does with operations still in flight.
//! - `issuer`: single-issuer mode (one owner thread per ring).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::handle::Completion;
use crate::ops::Side;
use crate::stats::Counters;

mod cq_map;
mod io_ring;
mod issuer;
mod pending;
mod reap;
mod resize;
mod shared;
mod slab;
mod sq;
mod sq_flags;
mod staging;
mod submit;
mod teardown;

pub(crate) use shared::RingShared;
pub(crate) use submit::Post;

use io_ring::IoRing;
use resize::Retiring;
use slab::Slab;

/// Set in the `user_data` of a completion that another ring posted with msg_ring.
pub(crate) const MESSAGE_BIT: u64 = 1 << 63;

/// The `user_data` of the cancel-everything request a ring makes when it is dropped.
const CANCEL_ALL: u64 = 1 << 62;

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h): flush the CQ overflow list.
const ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_SQ_WAKEUP`: wake the sleeping SQPOLL thread.
const ENTER_SQ_WAKEUP: u32 = 1 << 1;
/// `IORING_ENTER_SQ_WAIT`: wait until the SQPOLL thread has made room in the SQ.
const ENTER_SQ_WAIT: u32 = 1 << 2;

/// The state the ring's owner works on.
pub(crate) struct RingState<B> {
    /// The current io_uring: every new operation goes to it.
    io: IoRing,
    /// The io_uring a resize replaced, while operations submitted to it are still in flight.
    retiring: Option<Retiring>,
    slab: Slab<B>,
    /// Completions made in user space (rejections), with the credit they return.
    local: VecDeque<(Completion<B>, Side)>,
    /// How many of the oldest entries of `local` the CQ eventfd was signalled for (the kernel
    /// signals it only for its own CQEs; see `submit`'s `settle`).
    local_told: usize,
    /// The CQ eventfd, owned by the [`RingShared`] that holds this state (so it outlives it).
    eventfd: RawFd,
    /// SQ slots known to be free beside the pending SQEs, refreshed from the kernel's head at 0
    /// ([`IoRing::post_room`]). When publishing early (SQPOLL and
    /// [`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every)) it is also capped,
    /// so that the post that finds it used up publishes the SQEs staged before it (see
    /// `pending`).
    room: usize,
    /// Whether a full SQ may be submitted to make room (false inside a deferred batch).
    pub(crate) auto_submit: bool,
    /// The serial number of the current io_uring, bumped by each resize (modulo
    /// [`slab::URING_SERIALS`]): every in-flight operation is stamped with the serial of the
    /// io_uring it went to, so its final CQE tells which ring it leaves.
    uring_serial: u32,
    counters: Arc<Counters>,
}

impl<B> RingState<B> {
    /// A ring state for `io`, with nothing in flight.
    fn new(io: IoRing, eventfd: RawFd, auto_submit: bool, counters: Arc<Counters>) -> Self {
        Self {
            io,
            retiring: None,
            slab: Slab::default(),
            local: VecDeque::new(),
            local_told: 0,
            eventfd,
            room: 0,
            auto_submit,
            uring_serial: 0,
            counters,
        }
    }

    /// See [`RingShared::set_publish_every`].
    fn set_publish_every(&mut self, every: u32) {
        self.io.set_publish_every(every);
        // Recounted (and capped) at the next post.
        self.room = 0;
    }

    /// Operations between SQE and final CQE.
    pub(crate) fn in_flight(&self) -> usize {
        self.slab.len()
    }

    /// Signals the CQ eventfd: a waiter asleep on it wakes and looks at the ring.
    #[cold]
    fn signal(&self) {
        crate::sys::eventfd_signal(self.eventfd);
    }
}
