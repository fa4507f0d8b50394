//! [`WorkQueue`]: a logical request queue for one socket or file, with depth credits.

use std::fmt;
use std::sync::Arc;

use crate::error::PostError;
use crate::handle::Ring;
use crate::ops::{Op, Target};
use crate::ring::{Post, RingShared};
use crate::tables::{WqId, WqShared};
use crate::IoBuf;

/// A request queue for one socket or file, bound to one completion queue (RIO's request queue).
///
/// It has a send and a receive depth: each posted operation takes one credit of its
/// [`Side`](crate::Side), which comes back with the operation's final completion. Any thread may
/// post to it; see [`post`](Self::post).
pub struct WorkQueue<B> {
    pub(crate) shared: Arc<WqShared>,
    pub(crate) ring: Arc<RingShared<B>>,
}

impl<B> fmt::Debug for WorkQueue<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("id", &self.shared.id)
            .field("cq", &self.ring.index)
            .field("target", &self.shared.target)
            .finish()
    }
}

impl<B> Clone for WorkQueue<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<B: IoBuf> WorkQueue<B> {
    /// Posts `op` and submits it.
    ///
    /// If no other thread owns the ring, this thread takes it and the SQE goes straight into the
    /// SQ. Otherwise the post goes into the ring's inbox, and the owning thread pushes it before
    /// it lets go; if the SQ is full even after a submit (with SQPOLL, until the kernel thread
    /// has taken SQEs), the post stays first in the inbox and is pushed by the next post or reap,
    /// or by a thread in [`Ring::wait`] or [`CqSet::wait`](crate::CqSet::wait), which
    /// the owner wakes for it. In single-issuer mode ([`Config::single_issuer`](crate::Config::single_issuer))
    /// only the ring's owner thread takes it; from any other thread the post goes into the inbox
    /// and the owner is woken through the CQ's eventfd (the inbox is pushed and submitted when
    /// the owner next posts, reaps or wakes in [`Ring::wait`]). Either way the descriptor is validated first: a bad buffer key, slice,
    /// generation or file slot gives an error completion on this work queue (with the buffer
    /// handed back) and reaches neither the kernel nor any other queue.
    ///
    /// # Errors
    ///
    /// Hands `op` back: [`PostError::NoCredit`] when this queue's depth on `op`'s side is used
    /// up, [`PostError::Closed`] after removal, [`PostError::Full`] when the SQ stays full even
    /// after a submit.
    pub fn post(&self, op: Op<B>) -> Result<(), PostError<Op<B>>> {
        // Taken apart first, and put back together only where it leaves whole (see
        // `Request`).
        let (req, buf, keep) = op.into_parts();
        let reader = self.ring.tables.domain.guard();
        if !self.shared.is_open() {
            return Err(PostError::Closed(Op::from_parts((req, buf, keep))));
        }
        let side = req.side;
        // A cancel overdraws rather than wait (see `WqShared::overdraw`).
        if self.shared.reserve(side, 1) == 0 && !(req.is_cancel() && self.shared.overdraw(side)) {
            let op = Op::from_parts((req, buf, keep));
            return Err(if self.shared.is_open() {
                PostError::NoCredit(op)
            } else {
                PostError::Closed(op)
            });
        }
        // A rejection is counted here and completes on the ring.
        let checked = self
            .ring
            .check(&reader, (&req, buf.as_ref(), &keep), self.shared.target);
        let Some(mut g) = self.ring.try_own() else {
            return self.leave(Post {
                wq: self.shared.id,
                target: self.shared.target,
                op: Op::from_parts((req, buf, keep)),
                checked,
                _queue: Arc::clone(&self.shared),
            });
        };
        // The inbox's posts were made first: they go in first.
        g.drain();
        // The operation goes from here to its slab entry and SQE, never through a `Post`.
        let state = g.state_mut();
        // A rejection needs no SQE, so it never waits for room.
        if checked.is_ok() && !state.ensure_room() {
            return Err(self.full(Op::from_parts((req, buf, keep))));
        }
        state.enqueue(
            self.shared.id,
            self.shared.target,
            (req, buf, keep),
            checked,
        );
        Ok(())
    }

    /// `post`, when another thread owns the ring: it waits in the ring's inbox, holding the work
    /// queue, until the owner pushes it.
    #[cold]
    fn leave(&self, post: Post<B>) -> Result<(), PostError<Op<B>>> {
        if self.ring.single_issuer {
            self.ring.post_foreign(post);
        } else {
            self.ring.combiner.post(post);
        }
        Ok(())
    }

    /// The error for `op`, which a full SQ handed back: its credit, taken by
    /// [`post`](Self::post), comes back first.
    pub(crate) fn full(&self, op: Op<B>) -> PostError<Op<B>> {
        self.shared.adjust(op.side(), 1);
        PostError::Full(op)
    }

    /// This queue's identity, as found in its completions.
    pub fn id(&self) -> WqId {
        self.shared.id
    }

    /// The socket or file this queue acts on.
    pub fn target(&self) -> Target {
        self.shared.target
    }

    /// The completion queue this work queue is bound to.
    pub fn ring(&self) -> Ring<B> {
        Ring {
            ring: Arc::clone(&self.ring),
        }
    }

    /// Credits left: `(send, receive)`.
    pub fn credits(&self) -> (u32, u32) {
        self.shared.credits()
    }
}

impl WorkQueue<regio_pool::Message> {
    /// Posts the operation a pool message's descriptor describes ([`Op::from_message`]).
    ///
    /// The descriptor's `file`, if set, must be this work queue's fixed file; a message whose
    /// descriptor fails that, or names an opcode without a buffer, comes back at once.
    ///
    /// # Errors
    ///
    /// [`MessageError::Descriptor`] for a descriptor this queue cannot take, or
    /// [`MessageError::Post`] as for [`post`](Self::post); either way the message comes back.
    pub fn post_message(&self, msg: regio_pool::Message) -> Result<(), MessageError> {
        if let Some(slot) = msg.descriptor().file {
            if self.shared.target != Target::Fixed(slot) {
                return Err(MessageError::Descriptor(
                    msg,
                    crate::DescriptorError::WrongQueue("descriptor names another file"),
                ));
            }
        }
        let op = Op::from_message(msg).map_err(|(m, e)| MessageError::Descriptor(m, e))?;
        self.post(op).map_err(|e| {
            let (op, kind) = e.split();
            let msg = op
                .into_buf()
                .expect("message operations carry their message");
            MessageError::Post(msg, kind)
        })
    }
}

/// A message that [`WorkQueue::post_message`] could not take, handed back.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The descriptor does not fit this queue.
    #[error("descriptor rejected: {1}")]
    Descriptor(regio_pool::Message, crate::DescriptorError),
    /// The post failed (full SQ, no credit, removed queue: the [`PostError`] says which, with the
    /// message taken out); post again later.
    #[error("post failed: {1}")]
    Post(regio_pool::Message, PostError<()>),
}

impl MessageError {
    /// Takes the message back.
    pub fn into_message(self) -> regio_pool::Message {
        match self {
            Self::Descriptor(m, _) | Self::Post(m, _) => m,
        }
    }
}
