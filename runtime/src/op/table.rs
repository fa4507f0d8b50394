//! [`OpTable`]: one worker's operations, from their first poll to their final completion.
//!
//! Each operation is a slot, named by a *cookie*: the slot's index in the low 32 bits and its
//! generation in the high 32 (never 0, which [`INTERNAL`] keeps for the worker's own cancels).
//! A slot's generation changes each time it is reused, so a completion or a cancel meant for an
//! earlier operation in the same slot can never reach a later one.
//!
//! A slot's life:
//!
//! ```text
//! Staged --post--> Posted --final CQE--> Done --polled--> Free
//!    |                |                    |
//!  dropped         dropped              dropped
//!    v                v                    v
//! DroppedStaged    DroppedPosted         Free (the buffer goes back to the pool)
//!    |                |
//!  not posted      final CQE
//!    v                v
//!  Free             Free (the buffer goes back to the pool)
//! ```
//!
//! An operation dropped after it was posted gets a cancel from the caller
//! ([`OpTable::abandon`] says so); its buffer stays with the adapter until the final
//! completion, which frees the slot; a successful result that comes for a dropped operation
//! goes to the operation's orphan handler, if it has one (`Build::ORPHAN`). A slot's fields are updated in place (no state value is
//! moved in and out), which keeps the per-operation cost to a few stores. The table is the
//! worker's alone: no synchronization.
//!
//! An operation of two completions (a zero-copy send: its result, then the `F_NOTIF`
//! notification that the kernel let go of the buffer) can be awaited to its first one
//! ([`OpTable::poll_first`]): the future takes the result and lets go of the slot, which then
//! waits as a dropped one for the final completion, and frees the buffer with it. An operation
//! dropped after its first completion needs no cancel either: only its notification is left,
//! and no cancel can hurry that.
//!
//! A *multishot* operation ([`OpTable::set_multishot`]) keeps every non-final completion's
//! result, in order, until its future takes them one by one ([`OpTable::poll_shot`], which
//! hands the final one out last); once its future is dropped, the results it did not take go
//! to its orphan handler, as do those that come later.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use regio_adapters::{Completion, WorkQueue};
use regio_pool::Message;

use super::wakers::{WakerId, Wakers};
use super::Completed;
use crate::queues::FdQueues;

/// The cookie of the worker's own operations (the cancels of dropped futures), whose
/// completions nobody waits for.
pub(crate) const INTERNAL: u64 = 0;

/// The work queue an operation goes to, and the adapter whose ring has it.
#[derive(Clone)]
pub(crate) enum Queue {
    /// The worker's own queue of an adapter, on no file: nops, timeouts, cancels of its
    /// operations.
    Control(usize),
    /// A file's or socket's queue on this worker's ring of an adapter. The descriptor's queues
    /// are kept (not removed from the adapter) while any operation, or any cancel, may still be
    /// posted on one.
    Fd {
        adapter: usize,
        wq: WorkQueue<Message>,
        /// Held, never read: keeps the descriptor open and its queues registered.
        _file: Arc<FdQueues>,
    },
}

impl Queue {
    /// The index of the adapter whose ring has the queue.
    #[inline(always)]
    pub(crate) fn adapter(&self) -> usize {
        match self {
            Queue::Control(adapter) | Queue::Fd { adapter, .. } => *adapter,
        }
    }

    /// The work queue, given the worker's own queues (by adapter). `None` only for an adapter
    /// the worker has no queue of, which `start_on` never lets through.
    #[inline(always)]
    pub(crate) fn work_queue<'a>(
        &'a self,
        controls: &'a [WorkQueue<Message>],
    ) -> Option<&'a WorkQueue<Message>> {
        match self {
            Queue::Control(adapter) => controls.get(*adapter),
            Queue::Fd { wq, .. } => Some(wq),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Free,
    /// Waiting in the worker's staging queue for the submit step.
    Staged,
    /// In the kernel.
    Posted,
    /// The final completion came; the future has not taken it yet.
    Done,
    /// The future was dropped before the operation was posted.
    DroppedStaged,
    /// The future was dropped while the kernel had the operation.
    DroppedPosted,
}

struct Slot {
    generation: u32,
    phase: Phase,
    /// `Posted` with `has_first`: the first (non-final) completion's result; `Done`: the
    /// operation's result.
    result: i32,
    has_first: bool,
    /// Wakes the future at the first completion too ([`OpTable::poll_first`] waits for it).
    wake_first: bool,
    /// Keeps each non-final result in [`OpTable::shots`] (a multishot operation).
    multishot: bool,
    flags: u32,
    waker: Option<WakerId>,
    buf: Option<Message>,
    queue: Queue,
    /// Takes the successful results of the operation once its future is gone
    /// ([`Build::ORPHAN`](super::Build::ORPHAN)).
    orphan: Option<fn(i32)>,
}

/// One worker's operations.
#[derive(Default)]
pub(crate) struct OpTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    wakers: Wakers,
    /// Operations posted and not finally completed.
    in_kernel: usize,
    /// The non-final results of multishot operations that their futures have not taken yet,
    /// by slot index.
    shots: HashMap<u32, VecDeque<i32>>,
}

/// What a multishot operation's future takes from [`OpTable::poll_shot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shot {
    /// A non-final completion's result: more follow.
    More(i32),
    /// The final completion's result: the operation is over, and its slot free.
    Last(i32),
}

/// What the caller must do after [`OpTable::abandon`].
#[must_use]
pub(crate) enum Abandoned {
    /// Nothing: the slot is free, or frees itself.
    Nothing,
    /// Post a cancel of the operation on this queue.
    Cancel(Queue),
}

#[inline(always)]
fn split(cookie: u64) -> (usize, u32) {
    (
        (cookie & u64::from(u32::MAX)) as usize,
        (cookie >> 32) as u32,
    )
}

/// The live slot of `slots` that `cookie` names.
#[inline(always)]
fn live(slots: &mut [Slot], cookie: u64) -> Option<&mut Slot> {
    let (index, generation) = split(cookie);
    slots
        .get_mut(index)
        .filter(|s| s.generation == generation && s.phase != Phase::Free)
}

/// Hands a dropped operation's successful `result` to its `orphan` handler, if it has one.
#[inline]
fn adopt_orphan(orphan: Option<fn(i32)>, result: i32) {
    if let (Some(orphan), true) = (orphan, result >= 0) {
        orphan(result);
    }
}

impl OpTable {
    /// A slot for an operation about to be posted or staged, waking `waker` when it completes.
    #[inline(always)]
    pub(crate) fn insert(&mut self, waker: &Waker, queue: &Queue, orphan: Option<fn(i32)>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    phase: Phase::Free,
                    result: 0,
                    has_first: false,
                    wake_first: false,
                    multishot: false,
                    flags: 0,
                    waker: None,
                    buf: None,
                    queue: Queue::Control(0),
                    orphan: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.checked_add(1).unwrap_or(1);
        slot.phase = Phase::Staged;
        slot.has_first = false;
        slot.wake_first = false;
        slot.waker = Some(self.wakers.acquire(waker));
        slot.orphan = orphan;
        // A free slot's queue is a control queue already (see `release`): an operation on a
        // control queue only sets its adapter, with no drop of the old value.
        match (queue, &mut slot.queue) {
            (Queue::Control(wants), Queue::Control(had)) => *had = *wants,
            (queue, held) => *held = queue.clone(),
        }
        (u64::from(slot.generation) << 32) | index as u64
    }

    /// The live slot `cookie` names.
    #[inline(always)]
    fn slot(&mut self, cookie: u64) -> Option<&mut Slot> {
        live(&mut self.slots, cookie)
    }

    #[inline]
    fn release(&mut self, cookie: u64) {
        let (index, _) = split(cookie);
        let slot = &mut self.slots[index];
        if slot.multishot {
            slot.multishot = false;
            orphan_shots(&mut self.shots, index, slot.orphan);
        }
        slot.phase = Phase::Free;
        let waker = slot.waker.take().and_then(|id| self.wakers.release(id));
        // Lets go of a descriptor's queue; a control queue holds nothing.
        if !matches!(slot.queue, Queue::Control(_)) {
            slot.queue = Queue::Control(0);
        }
        self.free.push(index as u32);
        if let Some(waker) = waker {
            crate::contain::drop_waker(waker);
        }
    }

    /// The future's poll: the completion if it came, else `Pending` with the waker updated.
    ///
    /// # Panics
    ///
    /// If `cookie` names no live operation (the future was polled after it completed).
    #[inline(always)]
    pub(crate) fn poll(&mut self, cookie: u64, cx: &mut Context<'_>) -> Poll<Completed> {
        if self.pending(cookie, cx) {
            return Poll::Pending;
        }
        let slot = &mut self.slots[split(cookie).0];
        let done = Completed {
            result: slot.result,
            flags: slot.flags,
            buf: slot.buf.take(),
        };
        self.release(cookie);
        Poll::Ready(done)
    }

    /// [`poll`](Self::poll) for an operation without a buffer: the result alone. Returning a
    /// word rather than a [`Completed`] spares the copies of a struct just written field by
    /// field (each read back whole would stall on store forwarding).
    #[inline(always)]
    pub(crate) fn poll_result(&mut self, cookie: u64, cx: &mut Context<'_>) -> Poll<i32> {
        if self.pending(cookie, cx) {
            return Poll::Pending;
        }
        let slot = &mut self.slots[split(cookie).0];
        let result = slot.result;
        if slot.buf.is_some() {
            drop(slot.buf.take());
        }
        self.release(cookie);
        Poll::Ready(result)
    }

    /// The poll of a future that waits for the operation's first completion only: its result
    /// once it came (or the final one's, for an operation that completed once), else `Pending`
    /// with the waker updated and set to be woken by the first completion. Ready at the first
    /// completion, the slot is left as a dropped operation's: the final completion frees it,
    /// and the buffer goes back to the pool then.
    ///
    /// # Panics
    ///
    /// If `cookie` names no live operation (the future was polled after it completed).
    pub(crate) fn poll_first(&mut self, cookie: u64, cx: &mut Context<'_>) -> Poll<i32> {
        let slot = live(&mut self.slots, cookie)
            .expect("an operation future was polled after it completed");
        if slot.phase == Phase::Posted && slot.has_first && !slot.multishot {
            let result = slot.result;
            // A first completion's result is the future's: nothing is left for an orphan
            // handler but the notification's, which carries none.
            slot.orphan = None;
            let Abandoned::Nothing = self.abandon(cookie) else {
                unreachable!("an operation past its first completion is never cancelled")
            };
            return Poll::Ready(result);
        }
        slot.wake_first = true;
        self.poll_result(cookie, cx)
    }

    /// Whether operation `cookie` is still waiting (then its waker is updated to `cx`'s).
    #[inline(always)]
    fn pending(&mut self, cookie: u64, cx: &mut Context<'_>) -> bool {
        let wakers = &mut self.wakers;
        let slot = live(&mut self.slots, cookie)
            .expect("an operation future was polled after it completed");
        if slot.phase == Phase::Done {
            return false;
        }
        match slot.waker {
            Some(id) if wakers.will_wake(id, cx.waker()) => {}
            old => {
                let replaced = old.and_then(|id| wakers.release(id));
                slot.waker = Some(wakers.acquire(cx.waker()));
                drop(replaced);
            }
        }
        true
    }

    /// The future was dropped: frees what can be freed now, and says whether a cancel must be
    /// posted.
    pub(crate) fn abandon(&mut self, cookie: u64) -> Abandoned {
        let Some(slot) = live(&mut self.slots, cookie) else {
            return Abandoned::Nothing;
        };
        if let Some(id) = slot.waker.take() {
            drop(self.wakers.release(id));
        }
        match slot.phase {
            Phase::Staged => {
                slot.phase = Phase::DroppedStaged;
                Abandoned::Nothing
            }
            // Only its notification is left, which a cancel would not hurry.
            Phase::Posted if slot.has_first && !slot.multishot => {
                slot.phase = Phase::DroppedPosted;
                Abandoned::Nothing
            }
            Phase::Posted => {
                slot.phase = Phase::DroppedPosted;
                let queue = slot.queue.clone();
                if slot.multishot {
                    orphan_shots(&mut self.shots, split(cookie).0, slot.orphan);
                }
                Abandoned::Cancel(queue)
            }
            Phase::Done => {
                let buf = slot.buf.take();
                adopt_orphan(slot.orphan, slot.result);
                self.release(cookie);
                drop(buf);
                Abandoned::Nothing
            }
            Phase::Free | Phase::DroppedStaged | Phase::DroppedPosted => Abandoned::Nothing,
        }
    }

    /// The cookies of the operations whose futures have not been dropped (staged, posted, or
    /// done and not taken yet).
    pub(crate) fn held(&self) -> Vec<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.phase, Phase::Staged | Phase::Posted | Phase::Done))
            .map(|(index, s)| (u64::from(s.generation) << 32) | index as u64)
            .collect()
    }

    /// Frees the slot of an operation that was never staged (its builder panicked).
    pub(crate) fn discard(&mut self, cookie: u64) {
        if self.slot(cookie).is_some() {
            self.release(cookie);
        }
    }

    /// An explicit cancel: the queue to post the cancel on, if the operation has not completed,
    /// and whether the operation is still staged (not posted yet).
    pub(crate) fn cancel_queue(&mut self, cookie: u64) -> Option<(Queue, bool)> {
        let slot = self.slot(cookie)?;
        match slot.phase {
            Phase::Staged => Some((slot.queue.clone(), true)),
            Phase::Posted => Some((slot.queue.clone(), false)),
            _ => None,
        }
    }

    /// Whether the staged operation `cookie` should still be posted; an operation abandoned
    /// before it was posted is forgotten here (the caller drops it, and with it its buffer).
    pub(crate) fn should_post(&mut self, cookie: u64) -> bool {
        match self.slot(cookie).map(|s| s.phase) {
            Some(Phase::Staged) => true,
            Some(Phase::DroppedStaged) => {
                self.release(cookie);
                false
            }
            _ => false,
        }
    }

    /// The operation `cookie` was handed to the ring.
    #[inline]
    pub(crate) fn posted(&mut self, cookie: u64) {
        if let Some(slot) = self.slot(cookie) {
            if slot.phase == Phase::Staged {
                slot.phase = Phase::Posted;
                self.in_kernel += 1;
            }
        }
    }

    /// The ring refused the operation for good (its work queue was removed): it completes with
    /// `result`, and its buffer went back to the pool with the refused operation.
    pub(crate) fn refused(&mut self, cookie: u64, result: i32) {
        let Some(slot) = live(&mut self.slots, cookie) else {
            return;
        };
        if slot.phase == Phase::Staged {
            slot.phase = Phase::Done;
            slot.result = result;
            slot.flags = 0;
            slot.buf = None;
            if let Some(id) = slot.waker.take() {
                self.wakers.wake(id);
            }
        } else {
            self.release(cookie);
        }
    }

    /// Routes a completion to its operation: a final one completes it (or frees an abandoned
    /// one, whose buffer goes back to the pool here).
    #[inline]
    pub(crate) fn complete(&mut self, c: Completion<Message>) {
        if c.cookie == INTERNAL || c.wq.is_none() {
            return;
        }
        let cookie = c.cookie;
        let is_final = c.is_final();
        let Some(slot) = live(&mut self.slots, cookie) else {
            tracing::error!(cookie, "a completion for no live operation");
            return;
        };
        match (slot.phase, is_final) {
            (Phase::Posted, false) if slot.multishot => {
                let index = split(cookie).0 as u32;
                self.shots.entry(index).or_default().push_back(c.result);
                if let Some(id) = slot.waker.take() {
                    self.wakers.wake(id);
                }
            }
            (Phase::Posted, false) => {
                if !slot.has_first {
                    slot.result = c.result;
                    slot.has_first = true;
                    if slot.wake_first {
                        if let Some(id) = slot.waker.take() {
                            self.wakers.wake(id);
                        }
                    }
                }
            }
            (Phase::Posted, true) => {
                if !slot.has_first {
                    slot.result = c.result;
                }
                slot.flags = c.flags;
                // The slot holds no buffer before its final completion: nothing to drop, and
                // a check inline rather than a call to the drop glue.
                if let Some(stale) = std::mem::replace(&mut slot.buf, c.buf) {
                    drop(stale);
                }
                slot.phase = Phase::Done;
                let waker = slot.waker.take();
                self.in_kernel -= 1;
                if let Some(id) = waker {
                    self.wakers.wake(id);
                }
            }
            (Phase::DroppedPosted, true) => {
                adopt_orphan(slot.orphan, c.result);
                self.in_kernel -= 1;
                self.release(cookie);
            }
            (Phase::DroppedPosted, false) => adopt_orphan(slot.orphan, c.result),
            (phase, _) => {
                tracing::error!(
                    cookie,
                    ?phase,
                    "a completion for an operation not in the kernel"
                )
            }
        }
    }

    /// Operations in the kernel (posted, final completion not reaped).
    pub(crate) fn in_kernel(&self) -> usize {
        self.in_kernel
    }

    /// Makes operation `cookie` a multishot one (see the module docs). Call it before the
    /// worker's next reap (right after the operation was started).
    pub(crate) fn set_multishot(&mut self, cookie: u64) {
        if let Some(slot) = self.slot(cookie) {
            slot.multishot = true;
        }
    }

    /// A multishot operation's future's poll: the oldest result it has not taken, else the
    /// final one if it came (freeing the slot), else `Pending` with the waker updated.
    ///
    /// # Panics
    ///
    /// If `cookie` names no live operation (the future was polled after its last result).
    pub(crate) fn poll_shot(&mut self, cookie: u64, cx: &mut Context<'_>) -> Poll<Shot> {
        let index = split(cookie).0 as u32;
        if let Some(result) = self.shots.get_mut(&index).and_then(VecDeque::pop_front) {
            return Poll::Ready(Shot::More(result));
        }
        self.poll_result(cookie, cx).map(Shot::Last)
    }
}

/// Hands the results that slot `index` holds and its future will never take to `orphan`.
fn orphan_shots(shots: &mut HashMap<u32, VecDeque<i32>>, index: usize, orphan: Option<fn(i32)>) {
    for result in shots.remove(&(index as u32)).into_iter().flatten() {
        adopt_orphan(orphan, result);
    }
}
