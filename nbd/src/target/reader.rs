//! The reader: the task of a connection that reads requests. It decodes each header,
//! validates it, receives a WRITE's payload straight into pool buffers, and hands the request
//! to a task of its own; the replies go to the writer. It stops at `NBD_CMD_DISC`, at the
//! server's shutdown, when the client goes away (or sends nothing more of a WRITE's payload
//! for the stall timeout), or at a protocol violation (which closes the connection).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use regio_pool::Message;

use super::commands::{error_reply, Session};
use super::input::Input;
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
    /// The writer cut the connection: the client stopped reading its replies (the stall
    /// timeout), or they could not be sent.
    Stalled,
    /// A WRITE too large to read and throw away.
    Oversized {
        /// Its length.
        length: u32,
    },
}

/// What stops a reader: `shutdown` where it waits for a request, `abandon` (the end of a
/// shutdown's grace) where it waits for the rest of one (a WRITE's payload).
pub(crate) struct Signals<'a> {
    pub(crate) shutdown: &'a Signal,
    pub(crate) abandon: &'a Signal,
    /// The longest the rest of a request may keep the reader waiting with nothing received
    /// (the server's stall timeout): then the client is taken for gone.
    pub(crate) stall: Duration,
}

/// Reads and dispatches requests until one of the [`Stop`] reasons. Runs on a worker: each
/// request gets a task on this worker.
pub(crate) async fn run<R: RecvHalf>(
    from: &R,
    control: Message,
    session: Arc<Session>,
    in_flight: Arc<Semaphore>,
    replies: Sender<Reply>,
    signals: Signals<'_>,
) -> Stop {
    let Signals {
        shutdown,
        abandon,
        stall,
    } = signals;
    let mut input = Input::new(from, &session.buffers, control, stall);
    loop {
        // A slot first: a client with too many requests in flight is not read from.
        let Some(permit) = shutdown.or_raised(in_flight.acquire()).await else {
            return Stop::Shutdown;
        };
        let header = match shutdown.or_raised(input.take::<REQUEST_HEADER_LEN>()).await {
            None => return Stop::Shutdown,
            Some(Err(e)) => return Stop::Gone(e),
            Some(Ok(header)) => header,
        };
        let request = match Request::decode(&header) {
            Ok(request) => request,
            Err(e) => return Stop::Violation(e),
        };
        let mut slot = InFlight::new(permit, Arc::clone(&session.stats));
        if let Err(refusal) = request.validate(&session.negotiated) {
            match refusal.payload {
                RefusedPayload::None => {}
                RefusedPayload::Discard(len) => {
                    match abandon
                        .or_raised(input.discard(&session.buffers, len as usize))
                        .await
                    {
                        None => return Stop::Shutdown,
                        Some(Err(e)) => return Stop::Gone(e),
                        Some(Ok(())) => {}
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
            Command::Write => {
                let (bufs, part) = session
                    .buffers
                    .for_len(request.length as usize, &session.share)
                    .await;
                slot.hold(part);
                match abandon.or_raised(input.payload(bufs)).await {
                    None => return Stop::Shutdown,
                    Some(Ok(payload)) => payload,
                    Some(Err(e)) => return Stop::Gone(e),
                }
            }
            _ => Vec::new(),
        };
        let (session, replies) = (Arc::clone(&session), replies.clone());
        // Detached: its reply, through the queue, is all the connection waits for.
        drop(regio_runtime::spawn_local(async move {
            let reply = session.execute(request, payload, slot).await;
            replies.push(reply);
        }));
    }
}
