//! [`Io`]: one worker's side of its rings (one per adapter): its operation table, the batches
//! its tasks post into, the staging queue, and the submission and reaping that the worker does
//! once per turn.
//!
//! While the worker polls its tasks it holds each of its rings as a [`Batch`] (a deferred post,
//! RIO's `RIO_MSG_DEFER`): an operation's first poll writes its SQE straight into the staging
//! area of its adapter's ring, with no lock and no system call, and the worker submits
//! everything with one `io_uring_enter` per ring that got something (none with SQPOLL while its
//! thread is awake) at the end of the step, then reaps every ring with the same batches. An
//! operation started when no batch is open (a cancel made while the worker reads its mail or
//! shuts down, a ring that another thread holds for a moment) waits in the staging queue for
//! the submit step instead.
//!
//! One operation table serves all the rings: a cookie names a slot whichever ring its
//! completion comes from, and each slot remembers its queue, hence its adapter.
//!
//! The staging queue is also the backlog: an operation that the ring cannot take now (no
//! credit on its work queue, or an SQ still full after a submit) stays in it for the next
//! turn, so no cancel is ever lost. A work queue out of credit holds up only its own
//! operations (each queue keeps its order); the others, and every cancel, go past them.
//!
//! The whole struct is the worker's alone: no synchronization. The open batch is reached
//! through a pointer that [`Posting`] sets and clears around the worker's run step (see the
//! `SAFETY` comments).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::Waker;

use regio_adapters::{Batch, Op, PostError, Ring, WorkQueue, WqId};
use regio_pool::Message;

use super::table::{Abandoned, OpTable, Queue, INTERNAL};
use crate::spec::MAX_ADAPTERS;
use crate::stats::{Counters, RingCounters};

/// A worker's batches, by adapter: `None` where the worker has no ring (past the runtime's
/// adapters) or another thread holds it for a moment. On the stack, no allocation per turn;
/// made empty in place (`[const { None }; MAX_ADAPTERS]`) and filled by [`open_batches`], so
/// that the array is never moved whole.
pub(crate) type Batches<'a> = [Option<Batch<'a, Message>>; MAX_ADAPTERS];

/// Opens a batch in `batches` on each of `cqs` that no other thread holds.
pub(crate) fn open_batches<'a>(cqs: &'a [Ring<Message>], batches: &mut Batches<'a>) {
    for (batch, cq) in batches.iter_mut().zip(cqs.iter()) {
        *batch = cq.batch();
    }
}

/// An operation waiting for the submit step.
struct Staged {
    queue: Queue,
    op: Op<Message>,
    /// Keeps its place among the operations of its work queue (waits behind one that waits for
    /// credit). Every operation does, but the cancel of an operation the kernel has already.
    ordered: bool,
}

/// One worker's ring-side state.
pub(crate) struct Io {
    pub(crate) table: OpTable,
    staged: VecDeque<Staged>,
    /// The worker's queues for operations on no file, by adapter.
    controls: Box<[WorkQueue<Message>]>,
    /// The worker's completion queues, by adapter.
    cqs: Rc<[Ring<Message>]>,
    /// The most completions one reap takes, by adapter.
    reap_max: Box<[usize]>,
    /// Everything staged was refused for want of credit: it waits for completions, which wake a
    /// parked worker themselves. (A full SQ does not count: with SQPOLL it drains without any
    /// completion, so the worker keeps trying.)
    blocked: bool,
    /// Operations posted since the counters were last updated, by adapter. Indexed modulo
    /// [`MAX_ADAPTERS`] (a mask, never out of bounds: adapters are numbered below it), which
    /// spares the hot path a bounds check.
    posted: [u64; MAX_ADAPTERS],
    /// The batches of the worker's run step, while they are open ([`Posting`]).
    batches: Option<NonNull<Batches<'static>>>,
}

/// The worker's batches, open for posting while this guard lives.
pub(crate) struct Posting<'b> {
    io: &'b std::cell::RefCell<Io>,
    _batches: PhantomData<&'b mut Batches<'b>>,
}

impl<'b> Posting<'b> {
    /// Opens `batches` for the operations that the worker's tasks start until the guard drops.
    pub(crate) fn open(io: &'b std::cell::RefCell<Io>, batches: &'b mut Batches<'_>) -> Self {
        // The lifetime is erased for storage: the pointer is cleared when this guard drops,
        // and the guard borrows the batches mutably until then (`_batches`), so they outlive
        // every use of the pointer and nothing else touches them meanwhile.
        io.borrow_mut().batches = Some(NonNull::from(batches).cast());
        Self {
            io,
            _batches: PhantomData,
        }
    }
}

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        self.io.borrow_mut().batches = None;
    }
}

impl Io {
    /// The state of a worker with `controls`, its own queue on each adapter (in adapter order,
    /// at most [`MAX_ADAPTERS`]), whose reaps take at most `reap_max` completions of each.
    pub(crate) fn new(controls: Vec<WorkQueue<Message>>, reap_max: Vec<usize>) -> Self {
        debug_assert!(controls.len() <= MAX_ADAPTERS && controls.len() == reap_max.len());
        let cqs = controls.iter().map(WorkQueue::ring).collect();
        Self {
            table: OpTable::default(),
            staged: VecDeque::new(),
            controls: controls.into(),
            cqs,
            reap_max: reap_max.into(),
            blocked: false,
            posted: [0; MAX_ADAPTERS],
            batches: None,
        }
    }

    /// A slot for an operation on `queue` whose future has `waker` (and whose results, once
    /// the future is dropped, go to `orphan`); returns its cookie.
    #[inline(always)]
    pub(crate) fn reserve(&mut self, waker: &Waker, queue: &Queue, orphan: Option<fn(i32)>) -> u64 {
        self.table.insert(waker, queue, orphan)
    }

    /// Starts the operation of slot `cookie` (from [`reserve`](Self::reserve)), which `build`
    /// makes: into the open batch if there is one and it takes it, else into the staging queue.
    /// `build` runs with the `Io` borrowed: it must not start operations itself.
    #[inline(always)]
    pub(crate) fn start(&mut self, queue: Queue, cookie: u64, build: impl FnOnce() -> Op<Message>) {
        let batches = match self.batches {
            // Behind a backlog: keep the order.
            Some(_) if self.blocked || !self.staged.is_empty() => None,
            batches => batches,
        };
        let Some(mut batches) = batches else {
            return self.stage(queue, build());
        };
        // SAFETY: `batches` is set only while a `Posting` guard lives, which holds the batches'
        // mutable borrow (see `Posting::open`); this thread is the only one that uses them, and
        // `&mut self` (the `Io`'s RefCell borrow) makes this the only reference made from the
        // pointer now.
        let batches = unsafe { batches.as_mut() };
        let adapter = queue.adapter();
        // Modulo the array's length (a mask; adapters are numbered below it): no bounds check.
        let (Some(batch), Some(wq)) = (
            batches[adapter % MAX_ADAPTERS].as_mut(),
            queue.work_queue(&self.controls),
        ) else {
            return self.stage(queue, build());
        };
        let refused = match batch.post(wq, build()) {
            Ok(()) => None,
            // A full SQ: submit what is in it to make room, then try once more.
            Err(PostError::Full(op)) => {
                commit(batch);
                batch.post(wq, op).err()
            }
            Err(e) => Some(e),
        };
        match refused {
            None => {
                self.table.posted(cookie);
                self.posted[adapter % MAX_ADAPTERS] += 1;
            }
            Some(PostError::Closed(op)) => {
                drop(op);
                self.table.refused(cookie, -libc::ECANCELED);
            }
            Some(PostError::Full(op)) | Some(PostError::NoCredit(op)) => self.stage(queue, op),
        }
    }

    fn stage(&mut self, queue: Queue, op: Op<Message>) {
        self.staged.push_back(Staged {
            queue,
            op,
            ordered: true,
        });
    }

    /// Whether the submit step has something to do now: staged operations that are not held up
    /// behind a refused one.
    pub(crate) fn has_work(&self) -> bool {
        !self.staged.is_empty() && !self.blocked
    }

    /// The future of `cookie` was dropped: forgets it, or cancels it if the kernel has it.
    pub(crate) fn abandon(&mut self, cookie: u64) {
        if let Abandoned::Cancel(queue) = self.table.abandon(cookie) {
            self.stage_cancel(queue, cookie, false);
        }
    }

    /// Abandons every operation whose future is still held: at shutdown, once every task was
    /// dropped, those futures live off the workers (taken out of their tasks, such as an
    /// [`Incoming`](crate::net::Incoming) returned by one) and can never be polled here again.
    /// Their kernel operations are cancelled, and their results go to their orphan handlers.
    pub(crate) fn abandon_all(&mut self) {
        for cookie in self.table.held() {
            self.abandon(cookie);
        }
    }

    /// An explicit cancel of `cookie`, unless it has completed already. The cancel goes behind
    /// the operation in the staging queue (or after it in the ring), on the same work queue.
    pub(crate) fn cancel(&mut self, cookie: u64) {
        if let Some((queue, staged)) = self.table.cancel_queue(cookie) {
            self.stage_cancel(queue, cookie, staged);
        }
    }

    /// Stages a cancel of `target`; `ordered` if the target is staged itself (the cancel must
    /// not overtake it), else the cancel goes past what waits for credit.
    fn stage_cancel(&mut self, queue: Queue, target: u64, ordered: bool) {
        self.staged.push_back(Staged {
            queue,
            op: Op::cancel(target, INTERNAL),
            ordered,
        });
    }

    /// Whether nothing is staged and the kernel has none of the worker's operations.
    pub(crate) fn is_idle(&self) -> bool {
        self.staged.is_empty() && self.table.in_kernel() == 0
    }

    /// Operations the kernel has (posted, final completion not reaped yet).
    pub(crate) fn in_kernel(&self) -> usize {
        self.table.in_kernel()
    }

    /// The completion queues, by adapter, to open the worker's batches on.
    pub(crate) fn rings(&self) -> Rc<[Ring<Message>]> {
        Rc::clone(&self.cqs)
    }

    /// The submit step with the worker's `batches` (opened on its completion queues by
    /// [`open_batches`]): posts what is staged, submits, reaps every ring and routes the
    /// completions to their operations (waking their tasks). A ring without a batch (another
    /// thread holds it for a moment: a registration, a statistics read) gets its posts through
    /// its inbox, and is reaped if it can be. Returns how many completions were reaped.
    // A refused post hands the operation back whole, by value, as the adapters' API does: the
    // rare path (no credit, a full SQ); the common one returns nothing.
    #[allow(clippy::result_large_err)]
    pub(crate) fn finish_turn(&mut self, batches: &mut Batches<'_>, counters: &Counters) -> usize {
        let no_credit = post_staged(
            &mut self.table,
            &mut self.staged,
            &self.controls,
            &mut self.posted,
            |adapter, wq, op| match batches.get_mut(adapter).and_then(Option::as_mut) {
                Some(batch) => post_one(batch, wq, op),
                None => wq.post(op),
            },
        );
        let mut reaped = 0;
        for (adapter, (cq, ring)) in self.cqs.iter().zip(counters.rings.iter()).enumerate() {
            let mut batch = batches.get_mut(adapter).and_then(Option::as_mut);
            let posted = std::mem::take(&mut self.posted[adapter % MAX_ADAPTERS]);
            if posted > 0 {
                Counters::bump(&ring.ops_submitted, posted);
                if let Some(batch) = batch.as_deref_mut() {
                    commit(batch);
                }
            }
            let table = &mut self.table;
            let max = self.reap_max[adapter];
            let got = match batch {
                Some(batch) => batch.reap_each(max, |c| table.complete(c)),
                None => cq.reap_each(max, |c| table.complete(c)),
            };
            reaped += count_reaped(adapter, got, ring);
        }
        // Held up until a completion gives credit back.
        self.blocked = no_credit && reaped == 0;
        reaped
    }

    /// The submit step without open batches: opens them, then [`finish_turn`](Self::finish_turn).
    pub(crate) fn submit_and_reap(&mut self, counters: &Counters) -> usize {
        let cqs = Rc::clone(&self.cqs);
        let mut batches = [const { None }; MAX_ADAPTERS];
        open_batches(&cqs, &mut batches);
        self.finish_turn(&mut batches, counters)
    }
}

/// Counts a reap of adapter `adapter`'s ring in its counters; returns how many completions
/// it took (none if it failed, which is logged).
fn count_reaped(
    adapter: usize,
    reaped: Result<usize, regio_adapters::Error>,
    ring: &RingCounters,
) -> usize {
    let reaped = reaped.unwrap_or_else(|e| {
        tracing::error!(adapter, error = %e, "reaping the worker's completion queue failed");
        0
    });
    if reaped > 0 {
        Counters::bump(&ring.reaps, 1);
        Counters::bump(&ring.completions, reaped as u64);
    }
    reaped
}

/// Posts `op` into `batch`; on a full SQ, submits what is in it to make room and tries once
/// more.
// As for `Io::finish_turn`.
#[allow(clippy::result_large_err)]
#[inline(always)]
fn post_one(
    batch: &mut Batch<'_, Message>,
    wq: &WorkQueue<Message>,
    op: Op<Message>,
) -> Result<(), PostError<Op<Message>>> {
    match batch.post(wq, op) {
        Err(PostError::Full(op)) => {
            commit(batch);
            batch.post(wq, op)
        }
        other => other,
    }
}

/// Submits the SQEs pushed so far. A failure leaves them in the SQ for the next submit and
/// their buffers with the adapter: the kernel may have taken some of them, so nothing is freed
/// here.
fn commit(batch: &mut Batch<'_, Message>) {
    if let Err(e) = batch.commit() {
        tracing::warn!(error = %e, "submit failed; the SQEs stay queued for the next one");
    }
}

/// Posts the staged operations in order with `post`; counts them in `posted`. An operation
/// refused for want of credit waits (with the later operations of its work queue, so that each
/// queue keeps its order), and the others go past it: a queue whose credits are all held by
/// operations that do not complete (sends to a peer that does not read) holds up only its own.
/// The cancel of an operation the kernel has never waits (a cancel overdraws its queue's
/// credit); the cancel of one still staged keeps its place behind it. A full SQ stops the
/// pass. Returns whether what is left waits for credit only.
fn post_staged(
    table: &mut OpTable,
    staged: &mut VecDeque<Staged>,
    controls: &[WorkQueue<Message>],
    posted: &mut [u64; MAX_ADAPTERS],
    mut post: impl FnMut(usize, &WorkQueue<Message>, Op<Message>) -> Result<(), PostError<Op<Message>>>,
) -> bool {
    // What waits for credit, in order, and the queues it waits on (few: no allocation until
    // a queue runs out of credit).
    let mut waiting = VecDeque::new();
    let mut starved: Vec<WqId> = Vec::new();
    let mut full = false;
    while let Some(Staged { queue, op, ordered }) = staged.pop_front() {
        let cookie = op.cookie();
        if cookie != INTERNAL && !table.should_post(cookie) {
            // Abandoned before it was posted: dropping it gives its buffer back.
            continue;
        }
        let adapter = queue.adapter();
        let Some(wq) = queue.work_queue(controls) else {
            // An adapter the worker has no ring of (never let through by `start_on`).
            drop(op);
            table.refused(cookie, -libc::ENODEV);
            continue;
        };
        if ordered && starved.contains(&wq.id()) {
            waiting.push_back(Staged { queue, op, ordered });
            continue;
        }
        match post(adapter, wq, op) {
            Ok(()) => {
                table.posted(cookie);
                posted[adapter % MAX_ADAPTERS] += 1;
            }
            Err(PostError::Full(op)) => {
                staged.push_front(Staged { queue, op, ordered });
                full = true;
                break;
            }
            Err(PostError::NoCredit(op)) => {
                starved.push(wq.id());
                waiting.push_back(Staged { queue, op, ordered });
            }
            Err(PostError::Closed(op)) => {
                drop(op);
                table.refused(cookie, -libc::ECANCELED);
            }
        }
    }
    let only_credit = !full && !waiting.is_empty();
    // The waiting operations came before what a full SQ left: they go back in front.
    while let Some(wait) = waiting.pop_back() {
        staged.push_front(wait);
    }
    only_credit
}
