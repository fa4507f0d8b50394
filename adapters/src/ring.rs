//! One io_uring: its SQ, its CQ and its in-flight operations, owned by one thread at a time.
//!
//! In-flight operations live in a slab whose index is the SQE's `user_data`, in the manner of
//! monoio's lifecycle table. The slab entry owns the operation's buffer and any memory the kernel
//! reads late (timespec, socket address) until the operation's *final* CQE, the one without
//! `F_MORE`; only then is the buffer handed back in a [`Completion`]. A send_zc therefore keeps
//! its buffer until its `F_NOTIF` CQE, and a multishot operation until its last CQE.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue::Entry, IoUring};

use crate::combiner::{Absorb, Combiner};
use crate::cq::Completion;
use crate::error::{DescriptorError, Error};
use crate::ops::{Keep, Op, Resolved, Side, Target};
use crate::stats::Counters;
use crate::tables::{Tables, WqId};

mod carry;
mod retire;

use retire::Retiring;

/// Set in the `user_data` of a completion that another ring posted with msg_ring.
pub(crate) const MESSAGE_BIT: u64 = 1 << 63;

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h): flush the CQ overflow list.
const ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_SQ_WAKEUP`: wake the sleeping SQPOLL thread.
const ENTER_SQ_WAKEUP: u32 = 1 << 1;
/// `IORING_ENTER_SQ_WAIT`: wait until the SQPOLL thread has made room in the SQ.
const ENTER_SQ_WAIT: u32 = 1 << 2;

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
}

// SAFETY: the only non-Send field is `Resolved`'s address, which points into registered memory
// that the operation's own `IoBuf` (also in the post) keeps alive; the address is only used to
// build the SQE, by whichever thread owns the ring.
unsafe impl<B: Send> Send for Post<B> {}

/// Credits to give back, coalesced while consecutive completions belong to one work queue, so a
/// batch of completions costs one atomic add instead of one each.
#[derive(Default)]
pub(crate) struct Returns {
    run: Option<(WqId, Side)>,
    n: i64,
}

impl Returns {
    fn add(&mut self, tables: &Tables, reader: &impl regio_sync::ReadSide, wq: WqId, side: Side) {
        if self.run != Some((wq, side)) {
            self.flush(tables, reader);
            self.run = Some((wq, side));
        }
        self.n += 1;
    }

    fn flush(&mut self, tables: &Tables, reader: &impl regio_sync::ReadSide) {
        if let Some((wq, side)) = self.run.take() {
            // A removed work queue takes no credit back.
            if let Some(w) = tables.wq(reader, wq) {
                w.adjust(side, self.n);
            }
        }
        self.n = 0;
    }
}

/// An operation between its SQE and its final CQE.
struct InFlight<B> {
    wq: WqId,
    side: Side,
    cookie: u64,
    buf: Option<B>,
    /// The ring generation it was submitted to: the current one, or the retiring one.
    epoch: u32,
    _keep: Keep,
}

/// The state the ring's owner works on.
pub(crate) struct RingState<B> {
    uring: IoUring,
    slab: Vec<Option<InFlight<B>>>,
    free: Vec<u32>,
    /// Completions made in user space (rejections), with the credit they return.
    local: VecDeque<(Completion<B>, Side)>,
    /// SQEs built since the last submit. They reach the SQ together, with one tail store, so
    /// the SQPOLL thread takes a batch in one pass instead of one SQE per pass. They cannot be
    /// written into the SQ as they are built: with SQPOLL, storing the tail *is* submitting, and
    /// a deferred batch ([`crate::Batch`]) must not reach the kernel before its commit; the
    /// io-uring crate publishes the tail whenever its SQ handle drops.
    staged: Vec<Entry>,
    /// SQ slots known to be free beside `staged` (refreshed from the kernel's head at 0).
    room: usize,
    /// Scratch space for a batch of CQEs.
    cqes: Vec<cqueue::Entry>,
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
    #[inline]
    fn insert(&mut self, f: InFlight<B>) -> u32 {
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slab[i as usize];
                // Matching on the empty slot (rather than assigning over it) spares the drop of
                // an old entry that cannot be there.
                match slot {
                    None => *slot = Some(f),
                    Some(_) => unreachable!("the free list holds only empty slots"),
                }
                i
            }
            None => {
                self.slab.push(Some(f));
                (self.slab.len() - 1) as u32
            }
        }
    }

    #[inline]
    fn remove(&mut self, i: u32) -> Option<InFlight<B>> {
        let f = self.slab.get_mut(i as usize)?.take()?;
        self.free.push(i);
        Some(f)
    }

    fn find(&self, wq: WqId, cookie: u64) -> Option<u32> {
        self.slab
            .iter()
            .position(|s| matches!(s, Some(f) if f.wq == wq && f.cookie == cookie))
            .map(|i| i as u32)
    }

    /// Whether one more SQE fits beside the queued and staged ones.
    fn has_room(&mut self) -> bool {
        if self.room == 0 {
            // Only now look at the kernel's head: the room we knew of is used up.
            let sq = self.uring.submission();
            self.room = sq.capacity() - sq.len() - self.staged.len();
        }
        self.room > 0
    }

    #[inline]
    fn stage(&mut self, entry: Entry) {
        debug_assert!(self.room > 0, "has_room() first");
        self.room -= 1;
        self.staged.push(entry);
    }

    /// Operations between SQE and final CQE.
    pub(crate) fn in_flight(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    /// Hands the pushed SQEs to the kernel: with SQPOLL, a wake-up only when the thread sleeps;
    /// without, one `io_uring_enter`.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        let n = self.staged.len() as u32;
        if n == 0 {
            return Ok(());
        }
        let mut sq = self.uring.submission();
        // SAFETY: every staged SQE points only at memory its slab entry keeps alive until the
        // final CQE; `has_room` kept staged + queued within the SQ's capacity.
        let pushed = unsafe { sq.push_multiple(&self.staged) };
        debug_assert!(pushed.is_ok(), "room was checked when staging");
        drop(sq); // publishes the tail
        self.staged.clear();
        Counters::add(&self.counters.submitted, u64::from(n));
        self.flush_sq()
    }

    fn enter(&mut self, to_submit: u32, flags: u32) -> io::Result<()> {
        Counters::add(&self.counters.enters, 1);
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
    #[inline]
    fn push(&mut self, post: Post<B>) -> Result<(), Post<B>> {
        // A rejection needs no SQE, so it never waits for room.
        if post.checked.is_ok() && self.room == 0 && !self.make_room() {
            return Err(post);
        }
        self.enqueue(post);
        Ok(())
    }

    /// Finds room for one more SQE, submitting a full SQ first if allowed.
    #[cold]
    fn make_room(&mut self) -> bool {
        if self.has_room() {
            return true;
        }
        Counters::add(&self.counters.sq_full, 1);
        if self.auto_submit {
            // A failed enter leaves the SQ full, and the post goes back to its owner.
            let _ = self.submit();
        }
        self.has_room()
    }

    /// Turns a post into an SQE (room was made) or into a local completion.
    #[inline]
    fn enqueue(&mut self, post: Post<B>) {
        let Post {
            wq,
            side,
            target,
            op,
            checked,
        } = post;
        let cookie = op.cookie();
        let buf = match checked {
            Ok(buf) => buf,
            Err(error) => {
                let c = Completion::reject(wq, cookie, error, op.into_buf());
                self.local.push_back((c, side));
                return;
            }
        };
        let (entry, owned, keep) = if let crate::ops::Kind::Cancel { target: victim } = op.kind {
            match self.find(wq, victim) {
                Some(ud) if self.epoch_of(ud) != self.epoch => {
                    self.cancel_on_retiring(wq, side, cookie, ud);
                    return;
                }
                Some(ud) => (opcode::AsyncCancel::new(u64::from(ud)).build(), None, None),
                None => {
                    self.local
                        .push_back((Completion::failed(wq, cookie, -libc::ENOENT), side));
                    return;
                }
            }
        } else {
            match op.prepare(target, buf) {
                Ok(p) => p,
                Err(error) => {
                    self.local
                        .push_back((Completion::failed(wq, cookie, error.errno()), side));
                    return;
                }
            }
        };
        let epoch = self.epoch;
        let ud = self.insert(InFlight {
            wq,
            side,
            cookie,
            buf: owned,
            epoch,
            _keep: keep,
        });
        // Every pointer in the SQE refers to registered memory owned by the buffer now in the
        // slab entry, or to memory in `_keep`; both live until the final CQE for `ud`.
        self.stage(entry.user_data(u64::from(ud)));
    }

    /// Hands the kernel the SQEs already in the SQ (not the staged ones): a wake-up for a
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

    /// Pushes a post from the ring's owner; a full SQ hands the operation back.
    #[inline]
    pub(crate) fn absorb_direct(&mut self, post: Post<B>) -> Result<(), Op<B>> {
        self.push(post).map_err(|p| p.op)
    }

    /// Moves up to `max` completions into `out` and returns how many; their credits go back to
    /// their work queues.
    /// `reader` is the caller's read-side section, if it has one; otherwise a guard is taken,
    /// and only when there is something to route.
    pub(crate) fn reap<R: regio_sync::ReadSide>(
        &mut self,
        tables: &Tables,
        reader: Option<&R>,
        out: &mut Vec<Completion<B>>,
        max: usize,
    ) -> Result<usize, Error> {
        let start = out.len();
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
            Some(r) => self.reap_with(tables, r, out, max, start),
            None => self.reap_with(tables, &tables.domain.guard(), out, max, start),
        }
    }

    fn reap_with(
        &mut self,
        tables: &Tables,
        guard: &impl regio_sync::ReadSide,
        out: &mut Vec<Completion<B>>,
        max: usize,
        start: usize,
    ) -> Result<usize, Error> {
        let mut returns = Returns::default();
        while out.len() - start < max {
            let Some((c, side)) = self.local.pop_front() else {
                break;
            };
            if let Some(id) = c.wq {
                returns.add(tables, guard, id, side);
            }
            out.push(c);
        }
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
                .and_then(|()| self.drain_cq(tables, guard, &mut returns, out, max, start, &mut n));
            let done = self.retiring_drained();
            self.swap_retiring();
            if done && result.is_ok() {
                self.retire();
            }
        }
        if result.is_ok() {
            result = self.drain_cq(tables, guard, &mut returns, out, max, start, &mut n);
        }
        returns.flush(tables, guard);
        Counters::add(&self.counters.completed, n);
        result.map(|()| out.len() - start)
    }

    /// Routes CQEs of `self.uring` into `out` until it is empty or `out` holds `max` new ones,
    /// flushing the kernel's overflow list when the CQ was seen full; counts them in `n`.
    #[allow(clippy::too_many_arguments)]
    fn drain_cq(
        &mut self,
        tables: &Tables,
        guard: &impl regio_sync::ReadSide,
        returns: &mut Returns,
        out: &mut Vec<Completion<B>>,
        max: usize,
        start: usize,
        n: &mut u64,
    ) -> Result<(), Error> {
        let capacity = self.uring.completion().capacity();
        let mut batch = std::mem::take(&mut self.cqes);
        while out.len() - start < max {
            // Take a batch of CQEs with one head store, then route them.
            let want = max - (out.len() - start);
            batch.extend(self.uring.completion().take(want));
            // The head store (when that `completion()` dropped) ends an interval in which the
            // kernel saw our old head. If the CQ filled up relative to it, the kernel may have
            // parked CQEs, and the tail now shows it: taken + still queued >= capacity.
            let after = self.uring.completion().len();
            if batch.len() + after >= capacity {
                self.overflow_suspect = true;
            }
            let empty = after == 0;
            *n += batch.len() as u64;
            for cqe in batch.drain(..) {
                if carry::is_internal(cqe.user_data()) {
                    // A failed transfer of a resize's fixed-file carry: no work queue's.
                    *n -= 1;
                    carry::internal_cqe(&cqe);
                    continue;
                }
                out.push(self.route(tables, guard, returns, cqe));
            }
            if out.len() - start >= max || !empty {
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
            Counters::add(&self.counters.cq_overflows, 1);
            tracing::warn!(
                in_flight = self.in_flight(),
                "CQ overflow: flushing the kernel's overflow list"
            );
            if let Err(source) = self.enter(0, ENTER_GETEVENTS) {
                self.cqes = batch;
                return Err(Error::Sys {
                    what: "io_uring_enter to flush CQ overflow",
                    source,
                });
            }
        }
        self.cqes = batch;
        let dropped = self.uring.completion().overflow();
        if dropped != self.dropped_seen {
            let lost = dropped.wrapping_sub(self.dropped_seen);
            self.dropped_seen = dropped;
            tracing::error!(lost, "the kernel dropped completions");
            return Err(Error::CompletionsLost { lost });
        }
        Ok(())
    }

    #[inline]
    fn route(
        &mut self,
        tables: &Tables,
        reader: &impl regio_sync::ReadSide,
        returns: &mut Returns,
        cqe: cqueue::Entry,
    ) -> Completion<B> {
        let ud = cqe.user_data();
        if ud & MESSAGE_BIT != 0 {
            return Completion::message(ud & !MESSAGE_BIT, cqe.result(), cqe.flags());
        }
        let last = !cqueue::more(cqe.flags());
        let slot = ud as u32;
        let (wq, cookie, buf) = if last {
            let f = self
                .remove(slot)
                .expect("a final CQE names a live slab entry");
            returns.add(tables, reader, f.wq, f.side);
            if f.epoch != self.epoch {
                if let Some(r) = self.retiring.as_mut() {
                    r.in_flight -= 1;
                }
            }
            (f.wq, f.cookie, f.buf)
        } else {
            let f = self.slab[slot as usize]
                .as_ref()
                .expect("a CQE names a live slab entry");
            (f.wq, f.cookie, None)
        };
        Completion::from_cqe(wq, cookie, cqe.result(), cqe.flags(), buf)
    }
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
            for f in self.slab.drain(..).flatten() {
                std::mem::forget(f);
            }
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
            self.stage(cancel);
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
                drop(self.remove(ud as u32));
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
    }
}

/// One ring of an adapter: one completion queue.
pub(crate) struct Ring<B> {
    pub(crate) combiner: Combiner<RingState<B>, Post<B>>,
    /// The current io_uring's fd; a resize replaces it (see [`Ring::fd`]).
    fd: AtomicI32,
    /// The current io_uring's CQ size.
    cq_entries: AtomicU32,
    /// Provided-buffer rings registered on the current io_uring; changed only under the tables'
    /// write lock.
    pub(crate) provided: AtomicUsize,
    pub(crate) eventfd: OwnedFd,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tables: Arc<Tables>,
    pub(crate) supported: Arc<[bool; 256]>,
    pub(crate) index: usize,
    pub(crate) span: tracing::Span,
}

impl<B> Ring<B> {
    pub(crate) fn new(
        uring: IoUring,
        eventfd: OwnedFd,
        tables: Arc<Tables>,
        supported: Arc<[bool; 256]>,
        index: usize,
        span: tracing::Span,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let fd = uring.as_raw_fd();
        let cq_entries = uring.params().cq_entries();
        let sqpoll = uring.params().is_setup_sqpoll();
        Self {
            combiner: Combiner::new(RingState {
                uring,
                slab: Vec::new(),
                free: Vec::new(),
                local: VecDeque::new(),
                staged: Vec::new(),
                room: 0,
                cqes: Vec::new(),
                auto_submit: true,
                sqpoll,
                overflow_suspect: false,
                dropped_seen: 0,
                epoch: 0,
                retiring: None,
                counters: Arc::clone(&counters),
            }),
            fd: AtomicI32::new(fd),
            cq_entries: AtomicU32::new(cq_entries),
            provided: AtomicUsize::new(0),
            eventfd,
            counters,
            tables,
            supported,
            index,
            span,
        }
    }

    /// Runs `f` with the io_uring, owning the ring for the call (for registration calls, which
    /// are rare; it yields while a reaper owns the ring, and reapers never block while owning).
    pub(crate) fn with_uring<R>(&self, f: impl FnOnce(&IoUring) -> R) -> R {
        self.with_state(|s| f(&s.uring))
    }

    /// Runs `f` with the ring's state, owning the ring for the call, as `with_uring` does.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut RingState<B>) -> R) -> R {
        let mut f = Some(f);
        loop {
            if let Some(mut g) = self.combiner.try_lock() {
                let f = f.take().expect("called once");
                return g.with(f);
            }
            std::thread::yield_now();
        }
    }

    /// The current io_uring's fd. A resize replaces it; the old fd stays open until the old
    /// ring retires.
    pub(crate) fn fd(&self) -> RawFd {
        // Relaxed: only the number is read. The ring behind it was set up by system calls
        // before the store, and the kernel, not this atomic, orders that state.
        self.fd.load(Ordering::Relaxed)
    }

    /// Makes `uring` the current io_uring, carrying the fixed files over, `files` among them
    /// (see [`RingState::replace_uring`]).
    pub(crate) fn replace_uring(&self, uring: IoUring, files: &[u32]) -> Result<(), Error> {
        let fd = uring.as_raw_fd();
        let entries = uring.params().cq_entries();
        self.with_state(|s| s.replace_uring(uring, files))?;
        // Relaxed (both): as in `fd`; the table writer, which alone replaces rings, is
        // serialised by the tables' write lock.
        self.fd.store(fd, Ordering::Relaxed);
        self.cq_entries.store(entries, Ordering::Relaxed);
        Ok(())
    }

    /// The current io_uring's CQ size.
    pub(crate) fn cq_entries(&self) -> u32 {
        // Relaxed: a size, read on its own.
        self.cq_entries.load(Ordering::Relaxed)
    }
}

impl<B: Send> crate::ops::control::RingFd for Ring<B> {
    fn ring_fd(&self) -> RawFd {
        self.fd()
    }
}

/// Validates `op`'s descriptor for the ring: the kernel has its opcode, its buffer key names a
/// registered region of the right generation with the slice in bounds (the result is the
/// buffer's address), and a splice's second file slot exists.
#[inline]
pub(crate) fn check<B: crate::IoBuf>(
    tables: &Tables,
    supported: &[bool; 256],
    reader: &impl regio_sync::ReadSide,
    op: &Op<B>,
) -> Result<Option<Resolved>, DescriptorError> {
    if !supported[op.opcode() as usize] {
        let (op_name, since) = crate::adapter::since(op.opcode());
        return Err(DescriptorError::Unsupported { op: op_name, since });
    }
    let buf = match op.buf() {
        Some(b) => Some(tables.resolve(reader, b)?),
        None => None,
    };
    if let crate::ops::Kind::Splice { out, .. } = &op.kind {
        tables.check_target(reader, *out)?;
    }
    Ok(buf)
}
