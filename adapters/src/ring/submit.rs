//! Posting: an operation whose credit was taken and whose descriptor was checked becomes a slab
//! entry and an SQE in the pending area ([`RingState::enqueue`]), and the pending SQEs reach
//! the kernel together ([`RingState::submit`]). Posts left in the inbox by threads that did not
//! own the ring come in through [`Absorb`].

use std::io;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use super::RingState;
use crate::error::DescriptorError;
use crate::handle::Completion;
use crate::ops::{FileUse, Op, Parts, PostAction, Resolved, Retained, Sqe, Target};
use crate::stats::Counters;
use crate::tables::{WqId, WqShared};
use regio_sync::Absorb;

/// A post waiting in a ring's inbox for the ring's owner (a thread that owns the ring posts
/// straight through [`RingState::enqueue`]): its work queue and credit were checked, and
/// `checked` is the outcome of the descriptor's validation (its resolved buffer, or why it was
/// rejected: then it completes with that error and touches nothing else).
pub(crate) struct Post<B> {
    pub wq: WqId,
    pub target: Target,
    pub op: Op<B>,
    pub checked: Result<Option<Resolved>, DescriptorError>,
    /// The work queue, held (never read) while the post waits in the inbox: the queue may be
    /// removed and its handles dropped meanwhile, and its file must stay open until the SQE is
    /// built.
    pub _queue: Arc<WqShared>,
}

// SAFETY: the only non-Send field is `Resolved`'s address, which points into registered memory
// that the operation's own `IoBuf` (also in the post) keeps alive; the address is only used to
// build the SQE, by whichever thread owns the ring.
unsafe impl<B: Send> Send for Post<B> {}

impl<B> RingState<B> {
    /// Whether one more SQE fits beside the pending ones.
    fn has_room(&mut self) -> bool {
        if self.room == 0 {
            // Only now look at the kernel's head: the room we knew of is used up (publishing
            // early, it may be the cap on it, and the SQEs staged are published now).
            self.room = self.io.post_room(1);
        }
        self.room > 0
    }

    /// Adds `sqe`, with `user_data` as its `user_data`, to the pending SQEs and returns its
    /// copy, to be finished in place.
    #[inline(always)]
    fn stage(&mut self, sqe: &Sqe, user_data: u64) -> &mut Sqe {
        debug_assert!(self.room > 0, "has_room() first");
        self.room -= 1;
        self.io.pending.push(sqe, user_data)
    }

    /// Hands the pending SQEs to the kernel (see [`IoRing::submit`](super::IoRing::submit)).
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.io.submit(&self.counters)
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
        self.enqueue(post.wq, post.target, post.op.into_parts(), post.checked);
        Ok(())
    }

    /// Whether one more SQE fits; on a full SQ it submits (if allowed) and looks again.
    #[inline(always)]
    pub(crate) fn ensure_room(&mut self) -> bool {
        self.room > 0 || self.make_room()
    }

    /// Whether `n` more SQEs fit beside the pending ones, for a chain that must be staged
    /// whole; on a short SQ it submits (if allowed) and looks again.
    #[cold]
    pub(crate) fn ensure_room_for(&mut self, n: usize) -> bool {
        if self.room >= n {
            return true;
        }
        // The room known may be stale (it is refreshed only when used up) or capped (publishing
        // early): look at the head. Nothing of the chain is staged yet, so the SQEs published
        // early here end where it begins.
        self.room = self.io.post_room(n);
        if self.room >= n {
            return true;
        }
        Counters::add_owned(&self.counters.sq_full, 1);
        if self.auto_submit {
            // A failed enter leaves the SQ short, and the chain goes back to its owner.
            let _ = self.submit();
            self.room = self.io.post_room(n);
        }
        self.room >= n
    }

    /// How many SQEs the current io_uring's SQ holds.
    pub(crate) fn sq_entries(&self) -> usize {
        self.io.uring.params().sq_entries() as usize
    }

    /// How many SQEs are pending (posted since the last submit).
    pub(crate) fn pending_len(&self) -> u32 {
        self.io.pending.len()
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

    /// Turns an operation of work queue `wq`, taken apart ([`Op::into_parts`]), whose credit
    /// was taken and whose descriptor was checked (`checked`), into an SQE
    /// ([`ensure_room`](Self::ensure_room) first), or into a local completion.
    ///
    /// On the common path the operation is never put back together: its buffer and keep-alive
    /// go to the slab entry and its SQE to the pending area, so that nothing of it needs to be
    /// whole in memory (see [`Request`](crate::ops::Request)).
    #[inline(always)]
    pub(crate) fn enqueue(
        &mut self,
        wq: WqId,
        target: Target,
        (req, buf, keep): Parts<B>,
        checked: Result<Option<Resolved>, DescriptorError>,
    ) {
        let resolved = match checked {
            Ok(r) => r,
            Err(error) => return self.reject(wq, Op::from_parts((req, buf, keep)), error),
        };
        if !matches!(req.post_action, PostAction::None) || req.file > FileUse::Fd {
            let op = Op::from_parts((req, buf, keep));
            return self.enqueue_special(wq, target, op, resolved);
        }
        let ud = self.slab.insert(
            wq,
            req.side,
            req.sqe.user_data,
            buf,
            self.uring_serial,
            keep,
        );
        // The SQE goes into the pending area with `ud` in place of the cookie, and is finished
        // in place. Every pointer in it refers to registered memory owned by the buffer now in
        // the slab entry, or to memory in its keep; both live until the final CQE for `ud`.
        let sqe = self.stage(&req.sqe, ud);
        sqe.fill(req.file, target, resolved, req.buf_use);
    }

    /// A descriptor that failed its check completes here, with its buffer, and reaches neither
    /// the kernel nor any other work queue.
    #[cold]
    fn reject(&mut self, wq: WqId, op: Op<B>, error: DescriptorError) {
        let side = op.side();
        let c = Completion::reject(wq, op.cookie(), error, op.buf);
        self.local.push_back((c, side));
    }

    /// [`enqueue`](Self::enqueue) for the operations that need more than their file and buffer
    /// filled in: splice, close, cancel and msg_ring.
    #[cold]
    fn enqueue_special(&mut self, wq: WqId, target: Target, op: Op<B>, resolved: Option<Resolved>) {
        let side = op.side();
        let Op {
            mut sqe,
            buf,
            retained: mut keep,
            post_action,
            file,
            buf_use,
            ..
        } = op;
        let cookie = sqe.user_data;
        sqe.fill(file, target, resolved, buf_use);
        match post_action {
            // Splice outputs and accept slots were checked with the descriptor.
            PostAction::None
            | PostAction::SpliceOut(_)
            | PostAction::BadSlot(_)
            | PostAction::Close => {}
            PostAction::Cancel => match self.slab.find(wq, sqe.addr) {
                // The target's whole `user_data`, generation included (see `slab`).
                Some(ud) if self.serial_of(ud) != self.uring_serial => {
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
            PostAction::MsgRing | PostAction::ShareFile(_) => {
                if let Some(Retained::Ring(target)) = keep.as_deref_mut() {
                    sqe.fd = target.pin();
                }
            }
        }
        let (buf, keep) = (ManuallyDrop::new(buf), ManuallyDrop::new(keep));
        let ud = self
            .slab
            .insert(wq, side, cookie, buf, self.uring_serial, keep);
        // As in `enqueue`: what the SQE points at lives in the slab entry.
        self.stage(&sqe, ud);
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

    /// Signals the CQ eventfd if a reap would find something: CQEs, local completions, CQEs in
    /// the kernel's overflow list, or a retiring ring (which may hold CQEs; a rare spurious
    /// wake-up is harmless).
    fn wake_if_ready(&mut self) {
        // The CQ tail is read with Acquire (the io-uring crate), after the request was taken
        // with Acquire: it shows every CQE the waiter saw signalled before it asked.
        if !self.local.is_empty()
            || self.retiring.is_some()
            || !self.io.uring.completion().is_empty()
            || self.io.cq_overflow()
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
