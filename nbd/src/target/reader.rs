//! The reader: the task of a connection that reads requests. It decodes each header,
//! validates it, receives a WRITE's payload straight into pool buffers, and hands the request
//! to a task of its own; the replies go to the writer. It stops at `NBD_CMD_DISC`, at the
//! server's shutdown, when the client goes away, or at a protocol violation (which closes the
//! connection).

use std::io;
use std::sync::Arc;

use regio_pool::Message;

use super::commands::{error_reply, Session};
use super::stream::RecvHalf;
use super::sync::{Semaphore, Sender, Signal};
use super::writer::{InFlight, Reply};
use crate::proto::{Command, ProtoError, RefusedPayload, Request, REQUEST_HEADER_LEN};

/// Why a reader stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// The server is shutting down.
    Shutdown,
    /// The client closed the connection, or receiving failed.
    Gone(io::Error),
    /// The client broke the protocol.
    Violation(ProtoError),
    /// A WRITE too large to read and throw away.
    Oversized {
        /// Its length.
        length: u32,
    },
}

/// Reads and dispatches requests until one of the [`Stop`] reasons.
pub(crate) async fn run<R: RecvHalf>(
    input: &R,
    mut control: Message,
    session: Arc<Session>,
    in_flight: Arc<Semaphore>,
    replies: Sender<Reply>,
    shutdown: &Signal,
) -> Stop {
    let whole = control.key();
    loop {
        // A slot first: a client with too many requests in flight is not read from.
        let Some(permit) = shutdown.or_raised(in_flight.acquire()).await else {
            return Stop::Shutdown;
        };
        let mut header = whole;
        header.len = REQUEST_HEADER_LEN as u32;
        control
            .descriptor_mut()
            .set_slices(&[header])
            .expect("one slice");
        let Some((received, back)) = shutdown.or_raised(input.recv_exact(control)).await else {
            return Stop::Shutdown;
        };
        control = back;
        if let Err(e) = received {
            return Stop::Gone(e);
        }
        let bytes: &[u8; REQUEST_HEADER_LEN] = control.as_slice()[..REQUEST_HEADER_LEN]
            .try_into()
            .expect("a header's length");
        let request = match Request::decode(bytes) {
            Ok(request) => request,
            Err(e) => return Stop::Violation(e),
        };
        let slot = InFlight::new(permit, Arc::clone(&session.stats));
        if let Err(refusal) = request.validate(&session.negotiated) {
            match refusal.payload {
                RefusedPayload::None => {}
                RefusedPayload::Discard(len) => {
                    if let Err(e) = discard(input, &session, len as usize).await {
                        return Stop::Gone(e);
                    }
                }
                RefusedPayload::Disconnect => {
                    return Stop::Oversized {
                        length: request.length,
                    }
                }
            }
            session.stats.failed();
            replies.push(error_reply(
                &session.negotiated,
                &request,
                refusal.errno,
                slot,
            ));
            continue;
        }
        let payload = match request.command {
            Command::Disc => return Stop::Disconnect,
            Command::Write => match receive(input, &session, request.length as usize).await {
                Ok(payload) => payload,
                Err(e) => return Stop::Gone(e),
            },
            _ => Vec::new(),
        };
        let (session, replies) = (Arc::clone(&session), replies.clone());
        // Detached: its reply, through the queue, is all the connection waits for.
        drop(regio_runtime::spawn(async move {
            let reply = session.execute(request, payload, slot).await;
            replies.push(reply);
        }));
    }
}

/// Receives a WRITE's `len` bytes straight into pool buffers.
async fn receive<R: RecvHalf>(
    input: &R,
    session: &Session,
    len: usize,
) -> io::Result<Vec<Message>> {
    let mut payload = Vec::new();
    for buf in session.buffers.for_len(len).await {
        let (received, buf) = input.recv_exact(buf).await;
        received?;
        payload.push(buf);
    }
    Ok(payload)
}

/// Reads and drops the `len`-byte payload of a refused WRITE.
async fn discard<R: RecvHalf>(input: &R, session: &Session, len: usize) -> io::Result<()> {
    let chunk = session.buffers.chunk_size(len);
    let mut buf = session.buffers.one(chunk).await;
    let whole = buf.key();
    let mut left = len;
    while left > 0 {
        let mut key = whole;
        key.len = left.min(chunk) as u32;
        buf.descriptor_mut().set_slices(&[key]).expect("one slice");
        let (received, back) = input.recv_exact(buf).await;
        received?;
        buf = back;
        left -= key.len as usize;
    }
    Ok(())
}
