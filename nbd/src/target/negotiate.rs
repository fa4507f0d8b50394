//! The handshake of one connection: the [`Handshake`] state machine of [`proto`](crate::proto)
//! driven over the socket, through the connection's two control buffers.

use std::io;
use std::sync::Arc;

use regio_pool::Message;

use super::export::Export;
use super::stream::{RecvHalf, SendHalf};
use super::sync::Signal;
use crate::proto::{
    BlockSizes, ExportCatalogue, ExportInfo, Handshake, Negotiated, ProtoError, Step,
};

/// The exports a server offers, as the handshake sees them.
#[derive(Debug)]
pub(crate) struct Catalogue {
    pub(crate) exports: Vec<Arc<Export>>,
    pub(crate) block_sizes: BlockSizes,
}

impl Catalogue {
    fn info(&self, export: &Export) -> ExportInfo {
        ExportInfo {
            name: export.name().into(),
            description: export.description().into(),
            size: export.size(),
            flags: export.flags(),
            block_sizes: self.block_sizes,
        }
    }

    /// The export named `name` ("" is the first).
    pub(crate) fn find(&self, name: &str) -> Option<&Arc<Export>> {
        if name.is_empty() {
            return self.exports.first();
        }
        self.exports.iter().find(|e| e.name() == name)
    }
}

impl ExportCatalogue for Catalogue {
    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        self.find(name).map(|export| self.info(export))
    }

    fn list(&self) -> Vec<ExportInfo> {
        self.exports
            .iter()
            .map(|export| self.info(export))
            .collect()
    }
}

/// How a handshake ended without transmission.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoTransmission {
    #[error("the client ended the handshake (NBD_OPT_ABORT)")]
    Aborted,
    #[error("handshake: {0}")]
    Protocol(#[from] ProtoError),
    #[error("handshake: {0}")]
    Io(#[from] io::Error),
    #[error("closed in its handshake: a new connection needed its control buffers")]
    Evicted,
}

/// Runs the handshake; on transmission returns what was negotiated and the control buffers
/// back. Raising `evicted` ends it the next time it waits for the client.
pub(crate) async fn negotiate<R: RecvHalf, W: SendHalf>(
    input: &R,
    output: &W,
    control: (Message, Message),
    catalogue: &Catalogue,
    evicted: &Signal,
) -> Result<(Negotiated, Message, Message), NoTransmission> {
    let (mut inbox, mut outbox) = control;
    let mut out = Vec::new();
    let mut handshake = Handshake::start(&mut out);
    let mut received = Vec::new();
    loop {
        let step = handshake.advance(&received, catalogue, &mut out);
        outbox = send(output, outbox, &out).await?;
        out.clear();
        match step? {
            Step::Incomplete { missing } => {
                inbox = evicted
                    .or_raised(receive(input, inbox, missing, &mut received))
                    .await
                    .ok_or(NoTransmission::Evicted)??;
            }
            Step::Continue { consumed } => {
                received.drain(..consumed);
            }
            Step::Transmission { negotiated, .. } => return Ok((negotiated, inbox, outbox)),
            Step::Abort { .. } => return Err(NoTransmission::Aborted),
        }
    }
}

/// Sends `bytes` through `buf`, a control buffer's worth at a time.
async fn send<W: SendHalf>(output: &W, mut buf: Message, bytes: &[u8]) -> io::Result<Message> {
    let whole = buf.key();
    for piece in bytes.chunks(whole.len as usize) {
        buf.as_mut_slice()[..piece.len()].copy_from_slice(piece);
        let mut key = whole;
        key.len = piece.len() as u32;
        buf.descriptor_mut().set_slices(&[key]).expect("one slice");
        let (sent, back) = output.send_all(buf).await;
        buf = back;
        sent?;
    }
    Ok(buf)
}

/// Receives exactly `missing` more bytes (never more: what follows the handshake belongs to
/// the reader) into `received`.
async fn receive<R: RecvHalf>(
    input: &R,
    mut buf: Message,
    missing: usize,
    received: &mut Vec<u8>,
) -> io::Result<Message> {
    let whole = buf.key();
    let mut left = missing;
    while left > 0 {
        let mut key = whole;
        key.len = left.min(whole.len as usize) as u32;
        buf.descriptor_mut().set_slices(&[key]).expect("one slice");
        let (got, back) = input.recv_exact(buf).await;
        buf = back;
        got?;
        received.extend_from_slice(&buf.as_slice()[..key.len as usize]);
        left -= key.len as usize;
    }
    Ok(buf)
}
