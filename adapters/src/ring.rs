//! One io_uring: its SQ, its CQ and its in-flight operations, owned by one thread at a time.
//!
//! In-flight operations live in a slab whose index (with a generation, see `slab`) is the SQE's
//! `user_data`, in the manner of monoio's lifecycle table. The slab entry owns the operation's buffer and any memory the kernel
//! reads late (timespec, socket address) until the operation's *final* CQE, the one without
//! `F_MORE`; only then is the buffer handed back in a [`Completion`]. A send_zc therefore keeps
//! its buffer until its `F_NOTIF` CQE, and a multishot operation until its last CQE.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use io_uring::{cqueue, opcode, IoUring};

use crate::combiner::{Absorb, Combiner, CombinerGuard};
use crate::cq::{Completion, Sink};
use crate::error::{DescriptorError, Error};
use crate::ops::{FileUse, Keep, Op, Resolved, Side, Special, Sqe, Target};
use crate::stats::Counters;
use crate::tables::{Tables, WqId};

mod carry;
mod issuer;
mod pending;
mod retire;
mod slab;
mod sq;
mod staging;

use pending::Pending;
use retire::Retiring;
use slab::Slab;

/// Set in the `user_data` of a completion that another ring posted with msg_ring.
pub(crate) const MESSAGE_BIT: u64 = 1 << 63;

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h): flush the CQ overflow list.
const ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_SQ_WAKEUP`: wake the sleeping SQPOLL thread.
const ENTER_SQ_WAKEUP: u32 = 1 << 1;
/// `IORING_ENTER_SQ_WAIT`: wait until the SQPOLL thread has made room in the SQ.
const ENTER_SQ_WAIT: u32 = 1 << 2;

/// How many CQEs a reap copies out of the CQ at a time before routing them (512 bytes).
const CQE_CHUNK: usize = 32;

/// The `user_data` of the cancel-everything request a ring makes when it is dropped.
const CANCEL_ALL: u64 = 1 << 62;

/// A post on its way to the SQ: its work queue and credit were checked, and `checked` is the
/// outcome of the descriptor's validation (its resolved buffer, or why it was rejected: then it
/// completes with that error and touches nothing else).
pub(crate) struct Post<B> {
    pub wq: WqId,
    pub side: Side,
    pub target: Target,
    pub op: Op<B>,
    pub checked: Result<Option<Resolved>, DescriptorError>,
    /// The work queue, held while the post waits in a ring's inbox: the queue may be removed
    /// and its handles dropped meanwhile, and its file must stay open until the SQE is built.
    pub queue: Option<Arc<crate::tables::WqShared>>,
}

// SAFETY: the only non-Send field is `Resolved`'s address, which points into registered memory
// that the operation's own `IoBuf` (also in the post) keeps alive; the address is only used to
// build the SQE, by whichever thread owns the ring.
unsafe impl<B: Send> Send for Post<B> {}

/// Credits to give back, coalesced while consecutive completions belong to one work queue, so a
/// batch of completions costs one atomic add instead of one each.
#[derive(Default)]
pub(crate) struct Returns {
    /// The run's work queue, as [`WqId::key`]: one compare per completion instead of several.
    key: u64,
    side: Option<Side>,
    n: i64,
}

impl Returns {
    #[inline(always)]
    fn add(&mut self, tables: &Tables, reader: &impl regio_sync::ReadSide, wq: WqId, side: Side) {
        let key = wq.key();
        if key != self.key || self.side != Some(side) {
            self.flush(tables, reader);
            self.key = key;
            self.side = Some(side);
        }
        self.n += 1;
    }

    fn flush(&mut self, tables: &Tables, reader: &impl regio_sync::ReadSide) {
        if let Some(side) = self.side.take() {
            // A removed work queue takes no credit back.
            if let Some(w) = tables.wq(reader, WqId::from_key(self.key)) {
                w.adjust(side, self.n);
            }
        }
        self.n = 0;
    }
}

/// The state the ring's owner works on.
pub(crate) struct RingState<B> {
    uring: IoUring,
    slab: Slab<B>,
    /// Completions made in user space (rejections), with the credit they return.
    local: VecDeque<(Completion<B>, Side)>,
    /// How many of the oldest entries of `local` the CQ eventfd was signalled for (the kernel
    /// signals it only for its own CQEs; see `settle`).
    local_told: usize,
    /// The CQ eventfd, owned by the [`Ring`] that holds this state (so it outlives it).
    eventfd: RawFd,
    /// SQEs posted since the last submit.
    pending: Pending,
    /// SQ slots known to be free beside the pending SQEs (refreshed from the kernel's head at 0).
    room: usize,
    /// Whether a full SQ may be submitted to make room (false inside a deferred batch).
    pub(crate) auto_submit: bool,
    sqpoll: bool,
    /// The CQ was seen full since the overflow flag was last found clear.
    overflow_suspect: bool,
    dropped_seen: u32,
    /// Bumped by each resize; stamps every in-flight operation with the ring it went to.
    epoch: u32,
    retiring: Option<Retiring>,
    counters: Arc<Counters>,
}

impl<B> RingState<B> {
    /// Whether one more SQE fits beside the queued and pending ones.
    fn has_room(&mut self) -> bool {
        if self.room == 0 {
            // Only now look at the kernel's head: the room we knew of is used up.
            self.room = self.pending.room(&mut self.uring);
        }
        self.room > 0
    }

    #[inline(always)]
    fn stage(&mut self, sqe: &Sqe) -> &mut Sqe {
        debug_assert!(self.room > 0, "has_room() first");
        self.room -= 1;
        self.pending.push(sqe)
    }

    /// Operations between SQE and final CQE.
    pub(crate) fn in_flight(&self) -> usize {
        self.slab.len()
    }

    /// Hands the pushed SQEs to the kernel: with SQPOLL, a wake-up only when the thread sleeps;
    /// without, one `io_uring_enter`.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        let n = self.pending.len();
        if n == 0 {
            return Ok(());
        }
        // SAFETY: every pending SQE points only at memory its slab entry keeps alive until the
        // final CQE.
        unsafe { self.pending.publish(&mut self.uring) };
        Counters::add_owned(&self.counters.submitted, u64::from(n));
        self.flush_sq()
    }

    fn enter(&mut self, to_submit: u32, flags: u32) -> io::Result<()> {
        Counters::add_owned(&self.counters.enters, 1);
        loop {
            // SAFETY: no extra argument is passed; the SQEs handed over were built from memory
            // the slab keeps alive until their final CQE.
            let r = unsafe {
                self.uring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, 0, flags, None)
            };
            match r {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                other => return other.map(drop),
            }
        }
    }

    /// Pushes one checked post. On a full SQ it submits (if allowed) and tries once more, then
    /// hands the post back.
    // The refused post comes back whole, by value: that is the rare path (a full SQ), and the
    // common one returns nothing.
    #[allow(clippy::result_large_err)]
    pub(crate) fn push(&mut self, post: Post<B>) -> Result<(), Post<B>> {
        if post.checked.is_ok() && !self.ensure_room() {
            return Err(post);
        }
        self.enqueue(post.wq, post.side, post.target, post.op, post.checked);
        Ok(())
    }

    /// Whether one more SQE fits; on a full SQ it submits (if allowed) and looks again.
    #[inline(always)]
    pub(crate) fn ensure_room(&mut self) -> bool {
        self.room > 0 || self.make_room()
    }

    /// Finds room for one more SQE, submitting a full SQ first if allowed.
    #[cold]
    fn make_room(&mut self) -> bool {
        if self.has_room() {
            return true;
        }
        Counters::add_owned(&self.counters.sq_full, 1);
        if self.auto_submit {
            // A failed enter leaves the SQ full, and the post goes back to its owner.
            let _ = self.submit();
        }
        self.has_room()
    }

    /// Turns an operation of work queue `wq`, whose credit was taken and whose descriptor was
    /// checked (`checked`), into an SQE ([`ensure_room`](Self::ensure_room) first), or into a
    /// local completion.
    #[inline(always)]
    pub(crate) fn enqueue(
        &mut self,
        wq: WqId,
        side: Side,
        target: Target,
        op: Op<B>,
        checked: Result<Option<Resolved>, DescriptorError>,
    ) {
        let resolved = match checked {
            Ok(r) => r,
            Err(error) => return self.reject(wq, side, op, error),
        };
        if !matches!(op.special, Special::None) || op.file > FileUse::Fd {
            return self.enqueue_special(wq, side, target, op, resolved);
        }
        // The common case works on the operation where the caller built it: its buffer and
        // keep-alive move out by hand, and the operation itself is never moved or dropped.
        let op = std::mem::ManuallyDrop::new(op);
        // An operation without a buffer (most control operations) gets a fresh `None` rather
        // than a copy of the field: a vector copy of bytes its constructor has just stored in
        // narrower pieces would stall (see `Sqe::copy_to`).
        let buf = if op.buf.is_some() {
            // SAFETY: `op` is never dropped (ManuallyDrop) and nothing else reads the field, so
            // the buffer is moved out exactly once and has one owner: the slab entry.
            unsafe { std::ptr::read(&op.buf) }
        } else {
            None
        };
        // SAFETY: as for the buffer.
        let keep = unsafe { std::ptr::read(&op.keep) };
        let ud = self
            .slab
            .insert(wq, side, op.sqe.user_data, buf, self.epoch, keep);
        // The SQE goes into the staging area as it is and is finished in place. Every pointer
        // in it refers to registered memory owned by the buffer now in the slab entry, or to
        // memory in `_keep`; both live until the final CQE for `ud`.
        let sqe = self.stage(&op.sqe);
        sqe.user_data = ud;
        sqe.fill(op.file, target, resolved, op.buf_use);
    }

    /// A descriptor that failed its check completes here, with its buffer, and reaches neither
    /// the kernel nor any other work queue.
    #[cold]
    fn reject(&mut self, wq: WqId, side: Side, op: Op<B>, error: DescriptorError) {
        let c = Completion::reject(wq, op.cookie(), error, op.buf);
        self.local.push_back((c, side));
    }

    /// [`enqueue`](Self::enqueue) for the operations that need more than their file and buffer
    /// filled in: splice, close, cancel and msg_ring.
    #[cold]
    fn enqueue_special(
        &mut self,
        wq: WqId,
        side: Side,
        target: Target,
        op: Op<B>,
        resolved: Option<Resolved>,
    ) {
        let Op {
            mut sqe,
            buf,
            mut keep,
            special,
            file,
            buf_use,
            ..
        } = op;
        let cookie = sqe.user_data;
        sqe.fill(file, target, resolved, buf_use);
        match special {
            // Splice outputs and accept slots were checked with the descriptor.
            Special::None | Special::SpliceOut(_) | Special::BadSlot(_) | Special::Close => {}
            Special::Cancel => match self.slab.find(wq, sqe.addr) {
                // The target's whole `user_data`, generation included (see `slab`).
                Some(ud) if self.epoch_of(ud as u32) != self.epoch => {
                    self.cancel_on_retiring(wq, side, cookie, ud);
                    return;
                }
                Some(ud) => sqe.addr = ud,
                None => {
                    self.local
                        .push_back((Completion::failed(wq, cookie, -libc::ENOENT), side));
                    return;
                }
            },
            Special::MsgRing => {
                if let Some(Keep::Ring(target)) = keep.as_deref_mut() {
                    sqe.fd = target.pin();
                }
            }
        }
        let ud = self.slab.insert(wq, side, cookie, buf, self.epoch, keep);
        // As in `enqueue`: what the SQE points at lives in the slab entry.
        sqe.user_data = ud;
        self.stage(&sqe);
    }

    /// Hands the kernel the SQEs already in the SQ (not the pending ones): a wake-up for a
    /// sleeping SQPOLL thread, or one `io_uring_enter`.
    fn flush_sq(&mut self) -> io::Result<()> {
        if self.sqpoll {
            // `need_wakeup` issues the SeqCst fence that pairs with the kernel thread's barrier
            // before it sleeps, after our tail store (made when the SQ handle last dropped).
            if self.uring.submission().need_wakeup() {
                return self.enter(0, ENTER_SQ_WAKEUP);
            }
            return Ok(());
        }
        // Everything in the SQ, not just the last batch: SQEs an earlier enter left behind (it
        // may submit fewer than asked) go in first.
        let queued = self.uring.submission().len() as u32;
        if queued == 0 {
            return Ok(());
        }
        self.enter(queued, 0)
    }

    /// Hands up to `max` completions to `out` and returns how many; their credits go back to
    /// their work queues.
    /// `reader` is the caller's read-side section, if it has one; otherwise a guard is taken,
    /// and only when there is something to route.
    pub(crate) fn reap<R: regio_sync::ReadSide>(
        &mut self,
        tables: &Tables,
        reader: Option<&R>,
        out: &mut impl Sink<B>,
        max: usize,
    ) -> Result<usize, Error> {
        let (len, capacity) = {
            let cq = self.uring.completion();
            (cq.len(), cq.capacity())
        };
        // The kernel parks a CQE in its overflow list only when the CQ is full relative to the
        // head we last stored. We watch for that (here and after each batch) and read the
        // overflow flag only then: in the steady state a reap touches no SQ memory, which the
        // SQPOLL thread polls.
        if len == capacity {
            self.overflow_suspect = true;
        }
        if len == 0 && self.local.is_empty() && !self.overflow_suspect && self.retiring.is_none() {
            return Ok(0);
        }
        match reader {
            Some(r) => self.reap_with(tables, r, out, max),
            None => self.reap_with(tables, &tables.domain.guard(), out, max),
        }
    }

    fn reap_with(
        &mut self,
        tables: &Tables,
        guard: &impl regio_sync::ReadSide,
        out: &mut impl Sink<B>,
        max: usize,
    ) -> Result<usize, Error> {
        let mut returns = Returns::default();
        // Completions handed to `out` so far.
        let mut got = 0;
        while got < max {
            let Some((c, side)) = self.local.pop_front() else {
                break;
            };
            if let Some(id) = c.wq {
                returns.add(tables, guard, id, side);
            }
            out.whole(c);
            got += 1;
        }
        self.local_told = self.local_told.min(self.local.len());
        let mut n = 0u64;
        // The retiring ring first: its operations are the older ones.
        let mut result = Ok(());
        if self.retiring.is_some() {
            self.swap_retiring();
            result = self
                .flush_sq()
                .map_err(|source| Error::Sys {
                    what: "io_uring_enter (submit on the retiring ring)",
                    source,
                })
                .and_then(|()| {
                    self.drain_cq(tables, guard, &mut returns, out, max, &mut got, &mut n)
                });
            let done = self.retiring_drained();
            self.swap_retiring();
            if done && result.is_ok() {
                self.retire();
            }
        }
        if result.is_ok() {
            result = self.drain_cq(tables, guard, &mut returns, out, max, &mut got, &mut n);
        }
        returns.flush(tables, guard);
        Counters::add_owned(&self.counters.completed, n);
        result.map(|()| got)
    }

    /// Routes CQEs of `self.uring` to `out` until it is empty or `got` reaches `max`, flushing
    /// the kernel's overflow list when the CQ was seen full; counts the CQEs' completions in
    /// `got` and `n`.
    #[allow(clippy::too_many_arguments)]
    fn drain_cq(
        &mut self,
        tables: &Tables,
        guard: &impl regio_sync::ReadSide,
        returns: &mut Returns,
        out: &mut impl Sink<B>,
        max: usize,
        got: &mut usize,
        n: &mut u64,
    ) -> Result<(), Error> {
        let capacity = self.uring.completion().capacity();
        while *got < max {
            // Route the CQEs there are (up to `want`), then store the head once.
            let want = max - *got;
            let (consumed, taken, after) = {
                let RingState {
                    uring,
                    slab,
                    epoch,
                    retiring,
                    ..
                } = &mut *self;
                let mut book = Book {
                    slab,
                    epoch: *epoch,
                    retiring,
                };
                let mut cq = uring.completion();
                // No more than the CQEs there are: `max` may be far larger than what can
                // arrive (`usize::MAX`), and a reservation of it fails. The CQEs posted after
                // this snapshot of the tail are left for the next round.
                let want = want.min(cq.len());
                out.reserve(want);
                let (mut consumed, mut taken) = (0usize, 0usize);
                // The CQEs are copied out a chunk at a time before they are routed. The copy
                // issues a chunk's loads back to back, so their cache misses overlap: with
                // SQPOLL the kernel thread wrote them on another core, and routed one by one
                // each load waited behind the previous CQE's slab lookup.
                let mut chunk = [const { std::mem::MaybeUninit::uninit() }; CQE_CHUNK];
                while consumed < want {
                    let n = (want - consumed).min(CQE_CHUNK);
                    let cqes = cq.fill(&mut chunk[..n]);
                    if cqes.is_empty() {
                        break;
                    }
                    consumed += cqes.len();
                    for cqe in cqes.iter() {
                        if book.route(tables, guard, returns, cqe, out) {
                            taken += 1;
                        }
                    }
                }
                // Stores the head and reads the tail again.
                cq.sync();
                (consumed, taken, cq.len())
            };
            // The head store ends an interval in which the kernel saw our old head. If the CQ
            // filled up relative to it, the kernel may have parked CQEs, and the tail now shows
            // it: taken + still queued >= capacity.
            if consumed + after >= capacity {
                self.overflow_suspect = true;
            }
            let empty = after == 0;
            *n += taken as u64;
            *got += taken;
            if *got >= max || !empty {
                continue;
            }
            if !self.overflow_suspect {
                break;
            }
            if !self.uring.submission().cq_overflow() {
                self.overflow_suspect = false;
                break;
            }
            // The kernel parked completions in its overflow list (NODROP): count it, and have
            // the kernel move them into the CQ, then keep reaping.
            Counters::add_owned(&self.counters.cq_overflows, 1);
            tracing::warn!(
                in_flight = self.in_flight(),
                "CQ overflow: flushing the kernel's overflow list"
            );
            if let Err(source) = self.enter(0, ENTER_GETEVENTS) {
                return Err(Error::Sys {
                    what: "io_uring_enter to flush CQ overflow",
                    source,
                });
            }
        }
        let dropped = self.uring.completion().overflow();
        if dropped != self.dropped_seen {
            let lost = dropped.wrapping_sub(self.dropped_seen);
            self.dropped_seen = dropped;
            tracing::error!(lost, "the kernel dropped completions");
            return Err(Error::CompletionsLost { lost });
        }
        Ok(())
    }
}

/// The parts of a ring's state that routing a CQE touches, borrowed beside its CQ.
struct Book<'a, B> {
    slab: &'a mut Slab<B>,
    epoch: u32,
    retiring: &'a mut Option<Retiring>,
}

impl<B> Book<'_, B> {
    /// Turns a CQE into the completion of the work queue that posted it, handed to `out` (and
    /// returns true; false for a CQE that makes no completion). Its final CQE frees the slab
    /// entry, hands the buffer back and returns the credit.
    #[inline(always)]
    fn route(
        &mut self,
        tables: &Tables,
        reader: &impl regio_sync::ReadSide,
        returns: &mut Returns,
        cqe: &cqueue::Entry,
        out: &mut impl Sink<B>,
    ) -> bool {
        let ud = cqe.user_data();
        if ud & (MESSAGE_BIT | CANCEL_ALL) != 0 {
            return route_unowned(cqe, out);
        }
        let slot = ud as u32;
        if cqueue::more(cqe.flags()) {
            let f = self.slab.get(slot).expect("a CQE names a live slab entry");
            let (wq, cookie) = (f.wq, f.cookie);
            out.cqe(wq, cookie, cqe.result(), cqe.flags(), None);
            return true;
        }
        let e = self
            .slab
            .finish(slot)
            .expect("a final CQE names a live slab entry");
        let (wq, side, cookie, epoch) = (e.wq, e.side(), e.cookie, e.epoch());
        let buf = e.release();
        returns.add(tables, reader, wq, side);
        if epoch != self.epoch {
            if let Some(r) = self.retiring.as_mut() {
                r.in_flight -= 1;
            }
        }
        match buf {
            // Handed over as a literal `None`, the completion is known to carry no buffer: a
            // sink that drops it (or reads a field or two) then needs no drop check, and the
            // completion need not be built in memory at all.
            None => out.cqe(wq, cookie, cqe.result(), cqe.flags(), None),
            buf => out.cqe(wq, cookie, cqe.result(), cqe.flags(), buf),
        }
        true
    }
}

/// A CQE no work queue posted: a message from another ring (handed to `out`, true), or an
/// internal one of a resize's fixed-file carry (consumed here, false).
#[cold]
fn route_unowned<B>(cqe: &cqueue::Entry, out: &mut impl Sink<B>) -> bool {
    let ud = cqe.user_data();
    if carry::is_internal(ud) {
        carry::internal_cqe(cqe);
        return false;
    }
    out.whole(Completion::message(
        ud & !MESSAGE_BIT,
        cqe.result(),
        cqe.flags(),
    ));
    true
}

impl<B> Drop for RingState<B> {
    /// Cancels every operation still in flight and waits (up to a second) for their final
    /// CQEs before their buffers are dropped, so the kernel never writes into a buffer that went
    /// back to its pool. A buffer whose operation outlives the wait is leaked, not freed.
    fn drop(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        self.cancel_all();
        if self.retiring.is_some() {
            self.swap_retiring();
            self.room = 0;
            self.cancel_all();
            self.swap_retiring();
            self.room = 0;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            self.collect_final();
            if self.retiring.is_some() {
                self.swap_retiring();
                self.collect_final();
                self.swap_retiring();
            }
        }
        let stuck = self.in_flight();
        if stuck > 0 {
            tracing::error!(stuck, "operations outlived the ring; leaking their buffers");
            self.slab.leak_all();
        }
    }
}

impl<B> RingState<B> {
    /// At drop: asks `self.uring` to cancel everything it has in flight.
    fn cancel_all(&mut self) {
        let cancel = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(CANCEL_ALL);
        if self.has_room() {
            self.stage(&Sqe::from_entry(cancel));
        }
        if let Err(e) = self.submit() {
            tracing::warn!(error = %e, "cancel at ring drop could not be submitted");
        }
    }

    /// At drop: waits a little for `self.uring`'s CQEs and frees the slab entries whose final
    /// CQE came.
    fn collect_final(&mut self) {
        let ts = io_uring::types::Timespec::new().nsec(10_000_000);
        let args = io_uring::types::SubmitArgs::new().timespec(&ts);
        let _ = self.uring.submitter().submit_with_args(1, &args);
        let cqes: Vec<_> = self.uring.completion().collect();
        for cqe in cqes {
            let ud = cqe.user_data();
            if ud & (MESSAGE_BIT | CANCEL_ALL) == 0 && !cqueue::more(cqe.flags()) {
                drop(self.slab.finish(ud as u32).and_then(|e| e.release()));
            }
        }
    }
}

impl<B> Absorb<Post<B>> for RingState<B> {
    fn absorb(&mut self, item: Post<B>) -> Result<(), Post<B>> {
        self.push(item)
    }

    fn settle(&mut self) {
        if self.auto_submit {
            if let Err(e) = self.submit() {
                tracing::warn!(error = %e, "submit failed; the SQEs stay queued for the next owner");
            }
        }
        // Completions made here (rejections) reach the CQ eventfd only through us: a waiter
        // asleep on it must wake for them as for a CQE.
        if self.local.len() > self.local_told {
            self.signal();
        }
        self.local_told = self.local.len();
    }

    /// Signals the CQ eventfd if a reap would find something: CQEs, local completions, or a
    /// retiring ring (which may hold CQEs; a rare spurious wake-up is harmless).
    fn wake_if_ready(&mut self) {
        // The CQ tail is read with Acquire (the io-uring crate), after the request was taken
        // with Acquire: it shows every CQE the waiter saw signalled before it asked.
        if !self.local.is_empty() || self.retiring.is_some() || !self.uring.completion().is_empty()
        {
            self.signal();
        }
    }

    /// A post the full SQ refused stays in the inbox, and with SQPOLL room comes back with no
    /// signal: wake the waiters, which come back to push it (see the `wait` module).
    fn refused(&mut self) {
        self.signal();
    }
}

impl<B> RingState<B> {
    /// Signals the CQ eventfd: a waiter asleep on it wakes and looks at the ring.
    #[cold]
    fn signal(&self) {
        crate::sys::eventfd_signal(self.eventfd);
    }
}

/// One ring of an adapter: one completion queue.
pub(crate) struct Ring<B> {
    pub(crate) combiner: Combiner<RingState<B>, Post<B>>,
    /// The current io_uring's fd; a resize replaces it (see [`Ring::fd`]).
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
    taskrun_flag: bool,
    /// The owner thread's token (`issuer::thread_token`), 0 while the ring has no owner; set
    /// once, by [`Ring::bind_owner`].
    owner: AtomicU64,
}

impl<B> Ring<B> {
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
        let sqpoll = uring.params().is_setup_sqpoll();
        let pending = Pending::for_ring(&uring)?;
        let target = std::sync::Mutex::new(dup_ring_fd(fd)?);
        let eventfd_raw = eventfd.as_raw_fd();
        Ok(Self {
            combiner: Combiner::new(RingState {
                uring,
                slab: Slab::default(),
                local: VecDeque::new(),
                local_told: 0,
                eventfd: eventfd_raw,
                pending,
                room: 0,
                // A single-issuer ring is disabled until its owner binds it: posts drained
                // before then wait in `pending`, and the bind submits them.
                auto_submit: issuer.is_none(),
                sqpoll,
                overflow_suspect: false,
                dropped_seen: 0,
                epoch: 0,
                retiring: None,
                counters: Arc::clone(&counters),
            }),
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
        })
    }

    /// The current io_uring's fd. A resize replaces it; the old fd stays open until the old
    /// ring retires.
    pub(crate) fn fd(&self) -> RawFd {
        // Relaxed: only the number is read. The ring behind it was set up by system calls
        // before the store, and the kernel, not this atomic, orders that state.
        self.fd.load(Ordering::Relaxed)
    }

    /// Makes `uring` the current io_uring, carrying the fixed files over, `files` among them
    /// (see [`RingState::replace_uring`]), with the ring owned through `g`. The caller holds the
    /// tables' write lock, which serialises fd changes with registrations.
    pub(crate) fn replace_uring(
        &self,
        g: &mut CombinerGuard<'_, RingState<B>, Post<B>>,
        uring: IoUring,
        files: &[u32],
    ) -> Result<(), Error> {
        let fd = uring.as_raw_fd();
        let entries = uring.params().cq_entries();
        let target = dup_ring_fd(fd).map_err(|source| Error::Sys {
            what: "dup of the new ring's fd",
            source,
        })?;
        g.with(|s| s.replace_uring(uring, files))?;
        // Relaxed (both): as in `fd`; the table writer, which alone replaces rings, is
        // serialised by the tables' write lock.
        self.fd.store(fd, Ordering::Relaxed);
        self.cq_entries.store(entries, Ordering::Relaxed);
        *self.lock_target() = target;
        Ok(())
    }

    /// The current io_uring's CQ size.
    pub(crate) fn cq_entries(&self) -> u32 {
        // Relaxed: a size, read on its own.
        self.cq_entries.load(Ordering::Relaxed)
    }
}

impl<B: Send> crate::ops::control::RingFd for Ring<B> {
    fn target_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.lock_target())
    }
}

impl<B> Ring<B> {
    /// The duplicate of the current io_uring's fd that msg_ring and share_file operations aim
    /// at (see `ops::control::RingRef`).
    fn lock_target(&self) -> std::sync::MutexGuard<'_, Arc<OwnedFd>> {
        // A poisoned lock still holds a whole `Arc`: replacing it is one store.
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A duplicate of an io_uring's fd: it names the same ring, and its number stays taken for as
/// long as an operation that aims at it holds it.
fn dup_ring_fd(fd: RawFd) -> io::Result<Arc<OwnedFd>> {
    crate::sys::dup_fd(fd).map(Arc::new)
}

impl<B: crate::IoBuf> Ring<B> {
    /// Validates `op`'s descriptor for this ring: the kernel has its opcode, its buffer key
    /// names a registered region of the right generation with the slice in bounds (the result
    /// is the buffer's address), a splice's second file slot exists, and a close names a fixed
    /// slot (`target` is the work queue's). A rejection is counted.
    #[inline(always)]
    pub(crate) fn check(
        &self,
        reader: &impl regio_sync::ReadSide,
        op: &Op<B>,
        target: Target,
    ) -> Result<Option<Resolved>, DescriptorError> {
        if !self.supported[op.opcode() as usize] {
            return Err(self.rejected(unsupported(op.opcode())));
        }
        let buf = match op.buf() {
            Some(b) => Some(
                self.tables
                    .resolve(reader, b)
                    .map_err(|e| self.rejected(e))?,
            ),
            None => None,
        };
        match op.special {
            Special::None => {}
            Special::SpliceOut(out) => self
                .tables
                .check_target(reader, out)
                .map_err(|e| self.rejected(e))?,
            Special::BadSlot(slot) => return Err(self.rejected(DescriptorError::BadFileSlot(slot))),
            Special::Close if matches!(target, Target::Fd(_)) => {
                return Err(self.rejected(DescriptorError::WrongQueue(
                    "a plain-fd work queue's file is the queue's own: remove the queue instead \
                     of closing it",
                )))
            }
            Special::Cancel | Special::MsgRing | Special::Close => {}
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

impl<B> Ring<B> {
    /// Whether the SQPOLL thread serving this ring has set `IORING_SQ_NEED_WAKEUP`, so the next
    /// submission must wake it (always false without SQPOLL); `None` if another thread owns the
    /// ring now.
    pub(crate) fn sqpoll_sleeping(&self) -> Option<bool> {
        let mut g = self.try_own()?;
        // `need_wakeup` issues a SeqCst fence, then a relaxed load of the SQ flags: the same read
        // `flush_sq` makes before it decides to wake the thread.
        Some(g.with(|s| s.sqpoll && s.uring.submission().need_wakeup()))
    }
}
