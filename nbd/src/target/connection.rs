//! One client connection, from its handshake to its close: the reader on the connection's
//! task, the writer on a task of its own, and a task per request between them, all on the
//! worker the connection was given (connections are spread over the workers).

use std::sync::Arc;
use std::time::Duration;

use regio_pool::Message;

use super::commands::Session;
use super::handshakes::{Eviction, STALE_AFTER};
use super::negotiate::{negotiate, NoTransmission};
use super::reader::{self, Stop};
use super::server::Shared;
use super::stream::{Connection, SendHalf};
use super::sync::{queue, Semaphore, Signal};
use super::writer;

/// How long a client may take from connecting to starting transmission.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `stream` until the client disconnects, breaks the protocol, or the server shuts
/// down. Every buffer it took is back in the pool when it returns.
pub(crate) async fn serve<C: Connection>(stream: C, server: Arc<Shared>) {
    let _live = server.connections.enter();
    // Before the greeting: a client that has it sees the threshold of the moment it connected.
    let zero_copy_min = server.zero_copy_min_for(stream.peer_is_loopback());
    let (input, output) = stream.split();
    let Some(control) = control_pair(&server).await else {
        return;
    };
    let in_handshake = server.handshakes.enter();
    let handshake = regio_runtime::time::timeout(
        HANDSHAKE_TIMEOUT,
        negotiate(
            &input,
            &output,
            control,
            &server.catalogue,
            &in_handshake.evicted,
        ),
    );
    let ended = server.shutdown.or_raised(handshake).await;
    drop(in_handshake);
    let (negotiated, inbox, outbox) = match ended {
        Some(Ok(Ok(done))) => done,
        Some(Ok(Err(NoTransmission::Aborted))) | None => return close(&output).await,
        Some(Ok(Err(e))) => {
            tracing::debug!(error = %e, "a handshake failed");
            return close(&output).await;
        }
        Some(Err(_)) => {
            tracing::debug!("a client took too long over its handshake");
            return close(&output).await;
        }
    };
    let Some(export) = server.catalogue.find(&negotiated.export.name).cloned() else {
        // The handshake only ends in transmission on an export the catalogue found.
        return close(&output).await;
    };
    tracing::debug!(
        export = export.name(),
        structured = negotiated.structured_replies,
        "transmission"
    );
    let session = Arc::new(Session {
        export,
        negotiated,
        buffers: server.buffers.clone(),
        share: server.buffers.share(),
        stats: Arc::clone(&server.stats),
    });
    let (replies, queued) = queue();
    // The writer and the request tasks stay on this connection's worker (a connection is a
    // work queue of one ring): no wake-up crosses threads between them.
    // A writer stuck in a send to a client that stopped reading is cut when a shutdown's
    // grace is over (its unsent replies are dropped, their buffers go back to the pool).
    let cut = Arc::new(Signal::default());
    let stall = writer::Stall {
        timeout: server.stall_timeout(),
        cut: Arc::clone(&cut),
    };
    let aborting = output.clone();
    let writing = writer::run(
        output,
        queued,
        outbox,
        server.buffers.clone(),
        Arc::clone(&server.stats),
        stall,
        zero_copy_min,
    );
    let writer = regio_runtime::spawn_local({
        let server = Arc::clone(&server);
        async move {
            if server.abandon.or_raised(writing).await.is_none() {
                // What its cancelled sends queued would wait in the socket for the client,
                // holding the memory of the zero-copy sends among them (a registered export).
                aborting.abort();
                tracing::info!("cut a connection whose client stopped reading its replies");
            }
        }
    });
    let in_flight = Semaphore::new(server.max_in_flight);
    let signals = reader::Signals {
        shutdown: &server.shutdown,
        abandon: &server.abandon,
        stall: server.stall_timeout(),
    };
    let reading = reader::run(&input, inbox, session, in_flight, replies, signals);
    // A writer that stalled, or whose send failed, cuts the reader short too: the connection
    // ends.
    let stop = cut.or_raised(reading).await.unwrap_or(Stop::Stalled);
    match &stop {
        Stop::Disconnect | Stop::Shutdown | Stop::Stalled => {
            tracing::debug!(?stop, "a connection ends")
        }
        Stop::Gone(e) => tracing::debug!(error = %e, "a client went away"),
        Stop::Violation(e) => {
            tracing::info!(error = %e, "closing a connection that broke the protocol")
        }
        Stop::Oversized { length } => {
            tracing::info!(
                length,
                "closing a connection that sent a write too large to discard"
            )
        }
    }
    // The writer ends once every request in flight has queued its reply and it has sent them.
    if writer.await.is_err() {
        tracing::error!("a connection's writer panicked");
    }
}

/// The connection's two control buffers, or `None` once the server shuts down. When every
/// pair is taken (or others wait for one), the connection longest in its handshake is asked to
/// close once it has been there for [`STALE_AFTER`] (a silent client would hold its pair until
/// the handshake timeout), and this one waits for a pair. It never waits for good while a
/// handshake could be evicted: another waiter may take the pair its eviction freed, so it looks
/// again after [`RECHECK`], and evicts the next stale handshake if it still has no pair.
async fn control_pair(server: &Shared) -> Option<(Message, Message)> {
    if let Some(pair) = server.buffers.try_control_pair() {
        return Some(pair);
    }
    loop {
        let left = match server.handshakes.evict_stale(STALE_AFTER) {
            Eviction::Evicted => {
                tracing::debug!("control buffers ran out: closing the oldest handshake");
                RECHECK
            }
            Eviction::NotYet(left) => left,
            Eviction::NoneOpen => {
                return server
                    .shutdown
                    .or_raised(server.buffers.control_pair())
                    .await;
            }
        };
        // Wait for a pair, or until it is time to look at the handshakes again.
        let wait = regio_runtime::time::timeout(left, server.buffers.control_pair());
        if let Ok(pair) = server.shutdown.or_raised(wait).await? {
            return Some(pair);
        }
    }
}

/// How long a connection that evicted a handshake waits for a pair before it looks again.
const RECHECK: Duration = Duration::from_millis(500);

async fn close<W: super::stream::SendHalf>(output: &W) {
    if let Err(e) = output.close().await {
        tracing::debug!(error = %e, "closing a connection");
    }
}
