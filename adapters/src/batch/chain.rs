//! [`Batch::post_chain`]: operations linked with `IOSQE_IO_LINK` (or `IOSQE_IO_HARDLINK`),
//! staged whole or not at all.
//!
//! A link ties an SQE to the next one in the SQ, so a chain must be contiguous there: no other
//! caller's SQE between its members, and no member missing. A batch owns its ring, so nothing
//! else stages SQEs while it posts (the inbox is pushed only when the ring changes hands, a
//! cancel is staged only by its own post), and its SQEs reach the kernel at a commit, at the
//! end of the batch, or (with SQPOLL and early publishing, see
//! [`Config::sqpoll_publish_every`](crate::Config::sqpoll_publish_every)) when a later post
//! publishes what is staged: each
//! time with one tail store for everything staged, and never between a chain's members (the
//! room for a chain is looked at, and the SQEs before it published, before its first member is
//! staged), so the kernel thread never sees part of a chain. A kernel thread that serves several rings (an SQPOLL adapter of
//! more than one) takes at most 8 SQEs of a ring per pass and ends a chain where its pass ends,
//! so chains are refused there ([`ChainRefusal::SharedSqThread`]). Everything that could stop a member from becoming an SQE is
//! settled before the first is staged: the queue, the credits, every descriptor and the room in
//! the SQ. A refusal hands every operation back; after them the chain is staged in one go,
//! each member becoming its own slab entry, so each gets its own completion and its buffer back
//! (a member cancelled by a failed link completes with `-ECANCELED`).

use std::sync::Arc;

use super::Batch;
use crate::error::{ChainError, ChainRefusal};
use crate::ops::{Op, Parts, Side, IOSQE_IO_HARDLINK, IOSQE_IO_LINK};
use crate::tables::WqShared;
use crate::wq::WorkQueue;
use crate::IoBuf;

impl<B: IoBuf> Batch<'_, B> {
    /// Pushes `ops` on `wq` (which must be bound to this CQ) as one chain, without submitting
    /// it (with SQPOLL, see "When the kernel sees the posts" in the [`Batch`] docs): each
    /// operation starts only after the one before it completed successfully
    /// (`IOSQE_IO_LINK`). A member that fails, or completes short for a read or write, ends
    /// the chain: the members after it complete with `-ECANCELED`. Every member has its own
    /// completion, with its own buffer. An empty chain posts nothing.
    ///
    /// The chain is staged whole, contiguous in the SQ, or not at all: it needs a credit for
    /// each member on its side, a valid descriptor for each, and room for all of them in the
    /// SQ. In a batch the SQ is not submitted to make room: commit, then post the chain again.
    ///
    /// ```no_run
    /// # use regio_adapters::{Adapter, Op, WorkQueue};
    /// # fn f(adapter: &Adapter<regio_pool::Message>, wq: &WorkQueue<regio_pool::Message>,
    /// #      msg: regio_pool::Message) -> Result<(), Box<dyn std::error::Error>> {
    /// // A write, then an fsync that starts only once the write has succeeded.
    /// let cq = wq.ring();
    /// let mut batch = cq.batch().expect("no other thread owns the ring");
    /// batch
    ///     .post_chain(wq, vec![Op::write_fixed(msg, 0, 1), Op::fsync(2)])
    ///     .map_err(|e| e.reason)?;
    /// batch.commit()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Hands every operation back, in order, with the reason ([`ChainRefusal`]): `Full` when
    /// the SQ has not room for the whole chain now, `TooLong` when it never will, `NoCredit`
    /// when `wq` has fewer credits than the chain needs on a side, `Closed` when `wq` was
    /// removed or belongs to another CQ, `Descriptor` for a member whose descriptor fails its
    /// check, `Unlinkable` for a cancel, `SharedSqThread` on an SQPOLL adapter of several
    /// rings (whose kernel thread could split the chain).
    pub fn post_chain(
        &mut self,
        wq: &WorkQueue<B>,
        ops: Vec<Op<B>>,
    ) -> Result<(), ChainError<Op<B>>> {
        self.chain(wq, ops, IOSQE_IO_LINK)
    }

    /// [`post_chain`](Self::post_chain) with hard links (`IOSQE_IO_HARDLINK`): each operation
    /// starts after the one before it completed, whatever its result, so a failed member does
    /// not cancel the rest.
    ///
    /// # Errors
    ///
    /// As [`post_chain`](Self::post_chain).
    pub fn post_hard_chain(
        &mut self,
        wq: &WorkQueue<B>,
        ops: Vec<Op<B>>,
    ) -> Result<(), ChainError<Op<B>>> {
        self.chain(wq, ops, IOSQE_IO_HARDLINK)
    }

    /// Checks the whole chain, then stages it with `link` on all but its last SQE.
    fn chain(
        &mut self,
        wq: &WorkQueue<B>,
        ops: Vec<Op<B>>,
        link: u8,
    ) -> Result<(), ChainError<Op<B>>> {
        let refuse = |ops, reason| Err(ChainError { ops, reason });
        if ops.is_empty() {
            return Ok(());
        }
        if !wq.shared.is_open() || !std::ptr::eq(Arc::as_ptr(&wq.ring), self.ring) {
            return refuse(ops, ChainRefusal::Closed);
        }
        if self.ring.shares_sq_thread {
            return refuse(ops, ChainRefusal::SharedSqThread);
        }
        if let Some(index) = ops.iter().position(|op| op.is_cancel()) {
            let op = ops[index].name();
            return refuse(ops, ChainRefusal::Unlinkable { index, op });
        }
        let len = ops.len();
        let sq_entries = self.guard.state_mut().sq_entries();
        if len > sq_entries {
            return refuse(ops, ChainRefusal::TooLong { len, sq_entries });
        }
        let sends = ops.iter().filter(|op| op.side() == Side::Send).count() as i64;
        let recvs = len as i64 - sends;
        // The batch's own reservations on `wq` go back first: the chain takes its credits
        // exactly, and would otherwise be refused credits the batch holds.
        self.release_reserved_on(&wq.shared);
        if !take_exactly(&wq.shared, Side::Send, sends) {
            return refuse(ops, no_credit(&wq.shared));
        }
        if !take_exactly(&wq.shared, Side::Recv, recvs) {
            wq.shared.adjust(Side::Send, sends);
            return refuse(ops, no_credit(&wq.shared));
        }
        let give_back = || {
            wq.shared.adjust(Side::Send, sends);
            wq.shared.adjust(Side::Recv, recvs);
        };
        let parts: Vec<Parts<B>> = ops.into_iter().map(Op::into_parts).collect();
        let back = |parts: Vec<Parts<B>>| parts.into_iter().map(Op::from_parts).collect();
        let mut resolved = Vec::with_capacity(len);
        for (index, (req, buf, keep)) in parts.iter().enumerate() {
            match self
                .ring
                .check(&self.reader, (req, buf.as_ref(), keep), wq.shared.target)
            {
                Ok(r) => resolved.push(r),
                Err(error) => {
                    give_back();
                    return refuse(back(parts), ChainRefusal::Descriptor { index, error });
                }
            }
        }
        let state = self.guard.state_mut();
        if !state.ensure_room_for(len) {
            give_back();
            return refuse(back(parts), ChainRefusal::Full);
        }
        let before = state.pending_len();
        for (k, ((mut req, buf, keep), r)) in parts.into_iter().zip(resolved).enumerate() {
            if k + 1 < len {
                req.sqe.flags |= link;
            }
            // Every member was checked (`Ok`) and none is a cancel: each becomes exactly one
            // SQE, right after the one before it.
            state.enqueue(wq.shared.id, wq.shared.target, (req, buf, keep), Ok(r));
        }
        debug_assert_eq!(
            state.pending_len().wrapping_sub(before) as usize,
            len,
            "a chain is staged whole"
        );
        Ok(())
    }

    /// Gives back the credits the batch reserved on `wq`, on either side.
    fn release_reserved_on(&mut self, wq: &Arc<WqShared>) {
        for r in &mut self.reserved {
            if r.wq.as_ref().is_some_and(|w| Arc::ptr_eq(w, wq)) {
                r.release();
            }
        }
    }
}

/// Takes exactly `n` credits of `side` from `wq`, or none.
fn take_exactly(wq: &WqShared, side: Side, n: i64) -> bool {
    if n == 0 {
        return true;
    }
    let taken = wq.reserve(side, n);
    if taken < n {
        if taken > 0 {
            wq.adjust(side, taken);
        }
        return false;
    }
    true
}

/// Why credits were refused: the queue may have been removed meanwhile.
fn no_credit(wq: &WqShared) -> ChainRefusal {
    if wq.is_open() {
        ChainRefusal::NoCredit
    } else {
        ChainRefusal::Closed
    }
}
