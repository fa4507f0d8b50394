//! The write side of a [`Compat`](super::Compat): one message that the caller's bytes are
//! copied into and sent from, one send at a time.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use regio_pool::Message;

use super::{broken, cover};
use crate::buf::Lent;
use crate::net::{Stream, StreamSocket, TransferAll};

pub(super) struct WriteSide {
    state: State,
    /// Bytes were written since the caller's last flush finished.
    unflushed: bool,
}

// The send is large (it keeps the descriptor it restores) and the other variants are small:
// the state lives once per connection, and boxing the send would allocate once per write.
#[allow(clippy::large_enum_variant)]
enum State {
    /// The message, free.
    Idle(Message),
    /// A send of the message's bytes is in flight.
    Sending(Lent<Message, TransferAll, ()>),
    /// The message is being moved between the two (a panic there leaves the side here).
    Moving,
}

impl WriteSide {
    pub(super) fn new(msg: Message) -> Self {
        Self {
            state: State::Idle(msg),
            unflushed: false,
        }
    }

    /// Whether bytes were written since the caller's last flush finished.
    pub(super) fn unflushed(&self) -> bool {
        self.unflushed
    }

    /// The caller's flush: [`poll_idle`](Self::poll_idle), and the written bytes count as
    /// flushed once it is done.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = ready!(self.poll_idle(cx));
        self.unflushed = false;
        Poll::Ready(done)
    }

    /// Waits until the send in flight, if any, has finished: its error, if it failed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Idle(_) => Poll::Ready(Ok(())),
            State::Sending(send) => {
                let (result, msg) = ready!(Pin::new(send).poll(cx));
                self.state = State::Idle(msg);
                Poll::Ready(result)
            }
            State::Moving => Poll::Ready(Err(broken())),
        }
    }

    /// Copies as much of `parts` as the message takes into it and starts sending it, once the
    /// previous send has finished; returns the count copied.
    pub(super) fn poll_write<S: StreamSocket>(
        &mut self,
        stream: &Stream<S>,
        cx: &mut Context<'_>,
        parts: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_idle(cx))?;
        if parts.iter().all(|part| part.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let State::Idle(mut msg) = std::mem::replace(&mut self.state, State::Moving) else {
            unreachable!("the flush leaves the message idle")
        };
        let n = gather(msg.as_mut_slice(), parts);
        self.unflushed = true;
        cover(&mut msg, n);
        let mut send = stream.send_all(msg);
        // Polled now, so that the send is submitted with this turn of the worker rather than at
        // the next write or flush: a writer need not flush for its bytes to leave.
        match Pin::new(&mut send).poll(cx) {
            Poll::Pending => self.state = State::Sending(send),
            Poll::Ready((result, msg)) => {
                self.state = State::Idle(msg);
                result?;
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// Copies the slices of `parts` into `room` in order, as much as fits; returns the count.
fn gather(room: &mut [u8], parts: &[IoSlice<'_>]) -> usize {
    let mut n = 0;
    for part in parts {
        let take = part.len().min(room.len() - n);
        room[n..n + take].copy_from_slice(&part[..take]);
        n += take;
        if n == room.len() {
            break;
        }
    }
    n
}
