//! [`Io`]: one worker's side of its ring: the operations staged during a loop turn, their table,
//! and the submission and reaping that the worker does once per turn.
//!
//! Operations are not posted when their future is first polled: they wait in the staging queue
//! until the worker's submit step, which posts them all in one [`Batch`](regio_adapters::Batch)
//! and submits them with one `io_uring_enter` (or, with SQPOLL, none), then reaps. The staging
//! queue is also the backlog: an operation (or a cancel) that the ring cannot take now (no
//! credit on its work queue, or an SQ still full after a submit) stays first in it for the next
//! turn, so no cancel is ever lost. The whole struct is the worker's alone: no synchronization.

use std::collections::VecDeque;
use std::task::Waker;

use regio_adapters::{CompletionQueue, Op, PostError, WorkQueue};
use regio_pool::Message;

use super::table::{Abandoned, OpTable, Queue, INTERNAL};
use crate::stats::Counters;

/// An operation waiting for the submit step.
struct Staged {
    queue: Queue,
    op: Op<Message>,
}

/// One worker's ring-side state.
pub(crate) struct Io {
    pub(crate) table: OpTable,
    staged: VecDeque<Staged>,
    /// The worker's queue for operations on no file.
    control: WorkQueue<Message>,
    cq: CompletionQueue<Message>,
    /// The most completions one reap takes.
    reap_max: usize,
    /// The head of the staging queue was refused for want of credit: what is staged waits for
    /// completions, which wake a parked worker themselves. (A full SQ does not count: with
    /// SQPOLL it drains without any completion, so the worker keeps trying.)
    blocked: bool,
}

impl Io {
    pub(crate) fn new(control: WorkQueue<Message>, reap_max: usize) -> Self {
        let cq = control.completion_queue();
        Self {
            table: OpTable::default(),
            staged: VecDeque::new(),
            control,
            cq,
            reap_max,
            blocked: false,
        }
    }

    /// A slot for an operation on `queue` whose future has `waker`; returns its cookie.
    pub(crate) fn reserve(&mut self, waker: &Waker, queue: Queue) -> u64 {
        self.table.insert(waker, queue)
    }

    /// Stages the operation of a slot from [`reserve`](Self::reserve).
    pub(crate) fn stage(&mut self, queue: Queue, op: Op<Message>) {
        self.staged.push_back(Staged { queue, op });
    }

    /// Whether the submit step has something to do now: staged operations that are not held up
    /// behind a refused one.
    pub(crate) fn has_work(&self) -> bool {
        !self.staged.is_empty() && !self.blocked
    }

    /// The future of `cookie` was dropped: forgets it, or cancels it if the kernel has it.
    pub(crate) fn abandon(&mut self, cookie: u64) {
        if let Abandoned::Cancel(queue) = self.table.abandon(cookie) {
            self.stage_cancel(queue, cookie);
        }
    }

    /// An explicit cancel of `cookie`, unless it has completed already. The cancel goes behind
    /// the operation in the staging queue, so it is posted after it, on the same work queue.
    pub(crate) fn cancel(&mut self, cookie: u64) {
        if let Some(queue) = self.table.cancel_queue(cookie) {
            self.stage_cancel(queue, cookie);
        }
    }

    fn stage_cancel(&mut self, queue: Queue, target: u64) {
        self.stage(queue, Op::cancel(target, INTERNAL));
    }

    /// Whether nothing is staged and the kernel has none of the worker's operations.
    pub(crate) fn is_idle(&self) -> bool {
        self.staged.is_empty() && self.table.in_kernel() == 0
    }

    /// Operations the kernel has (posted, final completion not reaped yet).
    pub(crate) fn in_kernel(&self) -> usize {
        self.table.in_kernel()
    }

    /// The submit step: posts the staged operations in order and submits them, then reaps and
    /// routes the completions to their operations (waking their tasks). Returns how many
    /// completions were reaped.
    pub(crate) fn submit_and_reap(&mut self, counters: &Counters) -> usize {
        let Io {
            table,
            staged,
            control,
            cq,
            reap_max,
            blocked,
        } = self;
        let (no_credit, reaped) = match cq.batch() {
            Some(mut batch) => {
                let (posted, no_credit) = post_staged(table, staged, control, |wq, op| {
                    match batch.post(wq, op) {
                        // A full SQ: submit what is in it to make room, then try once more.
                        Err(PostError::Full(op)) => {
                            commit(&mut batch);
                            batch.post(wq, op)
                        }
                        other => other,
                    }
                });
                if posted > 0 {
                    Counters::bump(&counters.ops_submitted, posted);
                    commit(&mut batch);
                }
                (no_credit, batch.reap_each(*reap_max, |c| table.complete(c)))
            }
            // Another thread owns the ring for a moment (a registration, a statistics read):
            // posts go through its inbox, and the owner pushes them before letting go.
            None => {
                let (posted, no_credit) = post_staged(table, staged, control, |wq, op| wq.post(op));
                Counters::bump(&counters.ops_submitted, posted);
                (no_credit, cq.reap_each(*reap_max, |c| table.complete(c)))
            }
        };
        let reaped = reaped.unwrap_or_else(|e| {
            tracing::error!(error = %e, "reaping the worker's completion queue failed");
            0
        });
        // Held up until a completion gives credit back.
        *blocked = no_credit && reaped == 0;
        if reaped > 0 {
            Counters::bump(&counters.reaps, 1);
            Counters::bump(&counters.completions, reaped as u64);
        }
        reaped
    }
}

/// Submits the SQEs pushed so far. A failure leaves them in the SQ for the next submit and
/// their buffers with the adapter: the kernel may have taken some of them, so nothing is freed
/// here.
fn commit(batch: &mut regio_adapters::Batch<'_, Message>) {
    if let Err(e) = batch.commit() {
        tracing::warn!(error = %e, "submit failed; the SQEs stay queued for the next one");
    }
}

/// Posts the staged operations in order with `post`, until one cannot be taken now (it stays
/// first in the queue). Returns how many were posted, and whether the one left first was
/// refused for want of credit.
fn post_staged(
    table: &mut OpTable,
    staged: &mut VecDeque<Staged>,
    control: &WorkQueue<Message>,
    mut post: impl FnMut(&WorkQueue<Message>, Op<Message>) -> Result<(), PostError<Op<Message>>>,
) -> (u64, bool) {
    let mut posted = 0;
    while let Some(Staged { queue, op }) = staged.pop_front() {
        let cookie = op.cookie();
        if cookie != INTERNAL && !table.should_post(cookie) {
            // Abandoned before it was posted: dropping it gives its buffer back.
            continue;
        }
        let wq = match &queue {
            Queue::Control => control,
            Queue::File { wq, .. } => wq,
        };
        match post(wq, op) {
            Ok(()) => {
                table.posted(cookie);
                posted += 1;
            }
            Err(PostError::Full(op)) => {
                staged.push_front(Staged { queue, op });
                return (posted, false);
            }
            Err(PostError::NoCredit(op)) => {
                staged.push_front(Staged { queue, op });
                return (posted, true);
            }
            Err(PostError::Closed(op)) => {
                drop(op);
                table.refused(cookie, -libc::ECANCELED);
            }
        }
    }
    (posted, false)
}
