//! [`Batch`]: deferred posts on one ring, submitted together (RIO's `RIO_MSG_DEFER` and
//! `COMMIT_ONLY`).
//!
//! A batch owns its ring for its whole life, so its posts go straight into the SQ with no
//! inbox and no lock per post. It also takes work-queue credits in blocks
//! ([`WqShared::reserve`]) rather than one atomic read-modify-write per post: the credits it
//! reserved but did not use go back at each [`Batch::commit`] and when the batch ends. While a
//! batch holds such a block, another thread posting to the same work queue can see
//! [`PostError::NoCredit`] a little early; the depth itself is never exceeded.
//!
//! Because it owns its ring, a batch is also where operations are linked
//! ([`Batch::post_chain`], [`Batch::post_hard_chain`]): a chain is staged whole, contiguous in
//! the SQ, or refused whole (see the `chain` module).
//!
//! When the posts reach the kernel (with SQPOLL, possibly before the commit) is told in
//! [`Batch`]'s docs.

mod chain;

use std::sync::Arc;

use crate::error::{Error, PostError};
use crate::handle::{reap_locked, Completion, Each};
use crate::ops::{Op, Side};
use crate::ring::{Post, RingShared, RingState};
use crate::tables::WqShared;
use crate::wq::WorkQueue;
use crate::IoBuf;
use regio_sync::CombinerGuard;

/// Credits a batch takes from a work queue at a time.
const BLOCK: i64 = 64;

/// How many work queues' reserved credits a batch keeps at once.
const SLOTS: usize = 4;

/// Credits reserved by a batch and not used yet.
struct Reserved {
    /// `wq` and `side` as [`key`] (0 for a slot that holds no reservation: no key is 0). The
    /// address cannot be reused by another work queue while `wq` keeps this one alive.
    key: usize,
    /// `key` while credits are left, else 0: one compare tells whether a post can take a
    /// credit here. Kept by [`set_left`](Self::set_left) (and by `Batch::take_first`).
    ready: usize,
    wq: Option<Arc<WqShared>>,
    side: Side,
    left: i64,
}

impl Reserved {
    const EMPTY: Self = Self {
        key: 0,
        ready: 0,
        wq: None,
        side: Side::Send,
        left: 0,
    };

    /// Sets the credits left, and `ready` with them.
    fn set_left(&mut self, left: i64) {
        self.left = left;
        self.ready = if left > 0 { self.key } else { 0 };
    }

    /// Gives back the credits not used.
    fn release(&mut self) {
        if self.left > 0 {
            if let Some(wq) = &self.wq {
                wq.adjust(self.side, self.left);
            }
            self.set_left(0);
        }
    }
}

/// A reservation's work queue and side as one word: the work queue's address, whose low bit
/// (always clear: `WqShared` is aligned to more than 1) holds the side.
#[inline(always)]
fn key(wq: &Arc<WqShared>, side: Side) -> usize {
    Arc::as_ptr(wq) as usize | usize::from(side == Side::Recv)
}

/// A batch of deferred posts on one ring. See [`Ring::batch`](crate::Ring::batch).
///
/// # When the kernel sees the posts
///
/// Without SQPOLL, nothing reaches the kernel before [`Batch::commit`], a reap of the batch
/// ([`Batch::reap`], [`Batch::reap_each`], which submit what is staged first) or the end of the
/// batch.
///
/// With SQPOLL, storing the SQ tail is submitting. By default a batch does it at the commit
/// (or reap, or end), as without SQPOLL. With
/// [`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every) set to `n`, it also
/// does it early: a post that finds `n` SQEs staged since the last tail store (a chain: too few
/// of the `n` left for all its members) first puts them into the SQ with one tail store, then
/// stages its own. A polling kernel thread starts on them while the batch stages the next ones,
/// so that a round trip's staging overlaps the kernel's work. Tail stores fall only between
/// posts and chains, never inside a chain, so the kernel thread never sees part of one. No
/// system call is made for an early tail store; a kernel thread asleep (idle longer than its
/// [`SqPoll::idle`](crate::SqPoll::idle)) sees the SQEs at the commit (or reap), which wakes it,
/// as before. So with early publishing a post of a batch may complete before the commit: treat
/// a post as submitted once it is accepted, and the commit as "and the rest now".
///
/// What does not change: a post refused (`Err`) never reaches the kernel and comes back, a
/// chain refused comes back whole, a batch dropped without a commit submits what it staged,
/// and every operation's buffer stays owned by it until its final completion.
pub struct Batch<'a, B: IoBuf> {
    ring: &'a RingShared<B>,
    guard: CombinerGuard<'a, RingState<B>, Post<B>>,
    reader: regio_sync::Guard<'a>,
    /// The reservations; the first is the one the last credit came from, looked at first.
    reserved: [Reserved; SLOTS],
    /// The slot whose reservation the next new one evicts (never 0: see `reserved`).
    evict: usize,
}

impl<'a, B: IoBuf> Batch<'a, B> {
    #[inline]
    pub(crate) fn new(ring: &'a RingShared<B>) -> Option<Self> {
        let mut guard = ring.try_own()?;
        guard.with(|s| s.auto_submit = false);
        Some(Self {
            ring,
            guard,
            reader: ring.tables.domain.guard(),
            reserved: [Reserved::EMPTY; SLOTS],
            evict: 1,
        })
    }

    /// Pushes `op` on `wq` (which must be bound to this CQ) without submitting it (with SQPOLL
    /// and [`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every), a post may
    /// hand the SQEs staged before it to the kernel thread first: see "When the kernel sees the
    /// posts" in the [`Batch`] docs).
    ///
    /// # Errors
    ///
    /// Hands `op` back: [`PostError::Full`] when the SQ is full (commit, then post again),
    /// [`PostError::NoCredit`] when `wq` has no credit, [`PostError::Closed`] when `wq` was
    /// removed or belongs to another CQ.
    #[inline(always)]
    pub fn post(&mut self, wq: &WorkQueue<B>, op: Op<B>) -> Result<(), PostError<Op<B>>> {
        // Taken apart first, and put back together only to be handed back (see `Request`).
        let (req, buf, keep) = op.into_parts();
        if !wq.shared.is_open() {
            return Err(PostError::Closed(Op::from_parts((req, buf, keep))));
        }
        let side = req.side;
        // Whether the credit came from the batch's reservations (then from the first one); a
        // cancel that finds none overdraws its queue instead (see `WqShared::overdraw`): a
        // cancel never waits for credit.
        let reserved = if self.take_first(&wq.shared, side) {
            // A credit from a reservation also proves that `wq` is bound to this ring: the
            // post that made the reservation checked it, and the reservation holds `wq`'s
            // queue (so no other queue has its address), which belongs to one ring for life.
            true
        } else if !std::ptr::eq(Arc::as_ptr(&wq.ring), self.ring) {
            return Err(PostError::Closed(Op::from_parts((req, buf, keep))));
        } else if self.take_credit_elsewhere(&wq.shared, side) {
            true
        } else if req.is_cancel() && wq.shared.overdraw(side) {
            false
        } else {
            let op = Op::from_parts((req, buf, keep));
            return Err(if wq.shared.is_open() {
                PostError::NoCredit(op)
            } else {
                PostError::Closed(op)
            });
        };
        let checked = self
            .ring
            .check(&self.reader, (&req, buf.as_ref(), &keep), wq.shared.target);
        let state = self.guard.state_mut();
        // A rejection needs no SQE, so it never waits for room.
        if checked.is_ok() && !state.ensure_room() {
            // The credit goes back where it came from.
            if reserved {
                let r = &mut self.reserved[0];
                r.set_left(r.left + 1);
            } else {
                wq.shared.adjust(side, 1);
            }
            return Err(PostError::Full(Op::from_parts((req, buf, keep))));
        }
        state.enqueue(wq.shared.id, wq.shared.target, (req, buf, keep), checked);
        Ok(())
    }

    /// Takes one credit of `side` from `wq` if the batch's first reservation is `wq`'s and
    /// has one left.
    #[inline(always)]
    fn take_first(&mut self, wq: &Arc<WqShared>, side: Side) -> bool {
        // The reservation used last is always the first: a fixed place, with no index to
        // compute.
        let r = &mut self.reserved[0];
        // `ready` is the key only while credits are left: one compare for both questions.
        if r.ready == key(wq, side) {
            r.left -= 1;
            if r.left == 0 {
                r.ready = 0;
            }
            return true;
        }
        false
    }

    /// Takes one credit of `side` from `wq` when the first reservation has none for them (see
    /// [`take_first`](Self::take_first)): from another slot's reservation, brought to the
    /// front, or from a new reservation there. The caller checked that `wq` is bound to this
    /// ring.
    #[cold]
    fn take_credit_elsewhere(&mut self, wq: &Arc<WqShared>, side: Side) -> bool {
        let key = key(wq, side);
        let found = self.reserved.iter().position(|r| r.key == key);
        if let Some(i) = found {
            if i != 0 {
                self.reserved.swap(0, i);
            }
            let r = &mut self.reserved[0];
            if r.left > 0 {
                r.set_left(r.left - 1);
                return true;
            }
        }
        let taken = wq.reserve(side, BLOCK);
        if taken == 0 {
            return false;
        }
        if found.is_none() {
            // The first slot is empty only before the batch's first reservation; after it, the
            // slot evicted (round robin over all but the first) gives its credits back and
            // takes the first one's reservation. The new one goes first.
            if self.reserved[0].key != 0 {
                let v = self.evict;
                self.evict = if v + 1 == SLOTS { 1 } else { v + 1 };
                self.reserved[v].release();
                self.reserved.swap(0, v);
            }
            self.reserved[0] = Reserved {
                key,
                ready: 0,
                wq: Some(Arc::clone(wq)),
                side,
                left: 0,
            };
        }
        let r = &mut self.reserved[0];
        r.set_left(r.left + taken - 1);
        true
    }

    /// Gives back the credits reserved and not used.
    fn release_credits(&mut self) {
        for r in &mut self.reserved {
            r.release();
        }
    }

    /// Submits everything pushed so far, and gives back the credits reserved and not used.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.release_credits();
        self.guard
            .with(|s| s.submit())
            .map_err(|source| Error::Sys {
                what: "io_uring_enter (commit)",
                source,
            })
    }

    /// Reaps completions while the batch owns the ring.
    pub fn reap(&mut self, out: &mut Vec<Completion<B>>, max: usize) -> Result<usize, Error> {
        reap_locked(self.ring, &mut self.guard, Some(&self.reader), out, max)
    }

    /// Reaps like [`reap`](Self::reap), handing each completion to `f` by value (see
    /// [`Ring::reap_each`](crate::Ring::reap_each)).
    pub fn reap_each(&mut self, max: usize, f: impl FnMut(Completion<B>)) -> Result<usize, Error> {
        reap_locked(
            self.ring,
            &mut self.guard,
            Some(&self.reader),
            &mut Each(f),
            max,
        )
    }
}

impl<B: IoBuf> Drop for Batch<'_, B> {
    fn drop(&mut self) {
        self.release_credits();
        self.guard.with(|s| s.auto_submit = true);
    }
}
