//! The future behind `MessagePool::acquire`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::message::Message;
use crate::pool::MessagePool;
use crate::waiters::Ticket;

/// Waits for a message; see [`MessagePool::acquire_class`].
///
/// Dropping it before it completes withdraws the waiter. If an element had already been handed
/// to it, that element goes to the next waiter or back to the pool.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Acquire<'a> {
    pool: &'a MessagePool,
    class: usize,
    ticket: Option<Ticket>,
}

impl<'a> Acquire<'a> {
    /// A future that waits for a message of `class`.
    ///
    /// # Safety
    ///
    /// `class` is one of the pool's size classes: the fast path indexes without a check.
    pub(crate) unsafe fn new(pool: &'a MessagePool, class: usize) -> Self {
        Self {
            pool,
            class,
            ticket: None,
        }
    }
}

impl Future for Acquire<'_> {
    type Output = Message;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Message> {
        let inner = self.pool.inner();
        // The fast path, inlined into the caller: nobody waits and an element is at hand.
        // FIFO: while others wait, a newcomer queues behind them.
        if self.ticket.is_none() && !inner.waiters.any(self.class) {
            // SAFETY: the class exists (`Acquire::new`'s contract).
            if let Some((meta, generation)) = unsafe { inner.take(self.class) } {
                return Poll::Ready(self.pool.wrap_meta(meta, generation, self.class));
            }
        }
        self.poll_wait(cx)
    }
}

impl Acquire<'_> {
    #[cold]
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Message> {
        let inner = self.pool.inner();
        let class = self.class;
        if let Some(ticket) = &self.ticket {
            return match inner.waiters.poll(ticket, cx.waker()) {
                Some(elem) => {
                    self.ticket = None;
                    Poll::Ready(self.pool.wrap(elem))
                }
                None => Poll::Pending,
            };
        }
        let (queued, owed) = inner.queue_waiter(class, Some(cx.waker()));
        let poll = match queued {
            Ok(elem) => Poll::Ready(self.pool.wrap(elem)),
            Err(ticket) => {
                self.ticket = Some(ticket);
                Poll::Pending
            }
        };
        // The element or the ticket is in safe hands.
        inner.settle(class, owed);
        poll
    }
}

impl Drop for Acquire<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            if let Some(elem) = self.pool.inner().waiters.cancel(self.class, ticket) {
                self.pool.give_back_one(self.class, elem);
            }
        }
    }
}
