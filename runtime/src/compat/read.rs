//! The read side of a [`Compat`](super::Compat): one message that receives, and the bytes of
//! it not read out yet.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use regio_pool::Message;

use super::{broken, cover};
use crate::buf::Lent;
use crate::net::{Stream, StreamSocket, Transfer};

pub(super) struct ReadSide {
    state: State,
}

enum State {
    /// The message, holding the received bytes `start..end` that were not read out yet.
    Held {
        msg: Message,
        start: usize,
        end: usize,
    },
    /// A receive into the message is in flight.
    Receiving(Lent<Message, Transfer, usize>),
    /// The message is being moved between the two (a panic there leaves the side here).
    Moving,
}

impl ReadSide {
    pub(super) fn new(msg: Message) -> Self {
        Self {
            state: State::Held {
                msg,
                start: 0,
                end: 0,
            },
        }
    }

    /// Bytes received and not read out.
    pub(super) fn buffered(&self) -> usize {
        match &self.state {
            State::Held { start, end, .. } => end - start,
            State::Receiving(_) | State::Moving => 0,
        }
    }

    /// The received bytes not read out yet, after receiving more if there are none: an empty
    /// slice means the peer closed its side.
    pub(super) fn poll_fill_buf<S: StreamSocket>(
        &mut self,
        stream: &Stream<S>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&[u8]>> {
        loop {
            match &mut self.state {
                State::Held { start, end, .. } if *start < *end => break,
                State::Held { .. } => {
                    let State::Held { mut msg, .. } =
                        std::mem::replace(&mut self.state, State::Moving)
                    else {
                        unreachable!("matched above")
                    };
                    let size = msg.key().len as usize;
                    cover(&mut msg, size);
                    self.state = State::Receiving(stream.recv(msg));
                }
                State::Receiving(recv) => {
                    let (result, msg) = ready!(Pin::new(recv).poll(cx));
                    let end = *result.as_ref().unwrap_or(&0);
                    self.state = State::Held { msg, start: 0, end };
                    if end == 0 {
                        // The end of the stream, or the receive's error.
                        return Poll::Ready(result.map(|_| &[][..]));
                    }
                }
                State::Moving => return Poll::Ready(Err(broken())),
            }
        }
        let State::Held { msg, start, end } = &self.state else {
            unreachable!("the loop leaves only with bytes held")
        };
        Poll::Ready(Ok(&msg.as_slice()[*start..*end]))
    }

    /// Marks `amt` of the bytes [`poll_fill_buf`](Self::poll_fill_buf) gave as read.
    pub(super) fn consume(&mut self, amt: usize) {
        if let State::Held { start, end, .. } = &mut self.state {
            *start = (*start + amt).min(*end);
        }
    }
}
