//! The commands: one validated request in, its [`Reply`] out, through the export's storage
//! operations.

use std::sync::Arc;

use regio_pool::Message;

use super::buffers::Buffers;
use super::export::Export;
use super::stats::Stats;
use super::sync::{join_all, Semaphore};
use super::writer::{Data, InFlight, Reply};
use crate::proto::{
    encode_block_status, encode_offset_data_prefix, encode_offset_hole, Chunk, Command,
    CommandFlags, Cookie, Errno, Negotiated, Request, SimpleReply, OFFSET_DATA_PREFIX_LEN,
    OFFSET_HOLE_CHUNK_LEN, SIMPLE_REPLY_LEN,
};

/// What a connection's request tasks share.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) export: Arc<Export>,
    pub(crate) negotiated: Negotiated,
    pub(crate) buffers: Buffers,
    /// The connection's share of the data buffers ([`Buffers::share`]).
    pub(crate) share: Arc<Semaphore>,
    pub(crate) stats: Arc<Stats>,
}

impl Session {
    /// The reply for `request`, which passed validation; `payload` is a WRITE's data.
    pub(crate) async fn execute(
        &self,
        request: Request,
        payload: Vec<Message>,
        slot: InFlight,
    ) -> Reply {
        let export = &*self.export;
        let (offset, length) = (request.offset, request.length);
        let fua = request.flags.contains(CommandFlags::FUA);
        let done = match request.command {
            Command::Read => return self.read(request, slot).await,
            // Nothing to trim, zero or cache (fallocate and fadvise read 0 as "to the end").
            Command::Trim | Command::WriteZeroes | Command::Cache if length == 0 => Ok(()),
            Command::BlockStatus => return self.block_status(request, slot),
            Command::Write => self.write(offset, payload).await,
            Command::Flush => export.flush().await,
            Command::Trim => export.trim(offset, length).await,
            Command::WriteZeroes => {
                let no_hole = request.flags.contains(CommandFlags::NO_HOLE);
                let fast = request.flags.contains(CommandFlags::FAST_ZERO);
                export
                    .write_zeroes(offset, length, no_hole, fast, &self.buffers)
                    .await
            }
            Command::Cache => export.cache(offset, length).await,
            // Validation passes DISC to the reader, and refuses unknown commands.
            Command::Disc | Command::Unknown(_) => Err(Errno::EINVAL),
        };
        let done = match done {
            Ok(()) if fua && request.command != Command::Flush => export.sync_data().await,
            other => other,
        };
        match done {
            Ok(()) => simple_ok(request.cookie, slot),
            Err(errno) => self.error(&request, errno, slot),
        }
    }

    /// Writes a WRITE's buffers, side by side.
    async fn write(&self, offset: u64, payload: Vec<Message>) -> Result<(), Errno> {
        let len: usize = payload.iter().map(|buf| buf.descriptor().len()).sum();
        for (result, _) in self.chunks(offset, payload, true).await {
            result?;
        }
        self.stats.written(len as u64);
        Ok(())
    }

    /// Reads (or writes) each buffer at its place from `offset` on, all at once.
    async fn chunks(
        &self,
        mut offset: u64,
        bufs: Vec<Message>,
        write: bool,
    ) -> Vec<(Result<(), Errno>, Message)> {
        let export = &*self.export;
        let ops: Vec<_> = bufs
            .into_iter()
            .map(|buf| {
                let at = offset;
                offset += buf.descriptor().len() as u64;
                async move {
                    if write {
                        export.write(at, buf).await
                    } else {
                        export.read(at, buf).await
                    }
                }
            })
            .collect();
        if ops.len() == 1 {
            let op = ops.into_iter().next().expect("one");
            return vec![op.await];
        }
        join_all(ops).await
    }

    async fn read(&self, request: Request, mut slot: InFlight) -> Reply {
        let len = request.length as usize;
        // A read of nothing but a hole is one OFFSET_HOLE chunk: no buffer, no read.
        if self.negotiated.structured_replies && self.export.is_hole(request.offset, len) {
            let mut head = vec![0; OFFSET_HOLE_CHUNK_LEN];
            encode_offset_hole(
                request.cookie,
                true,
                request.offset,
                request.length,
                array_mut(&mut head),
            )
            .expect("a nonempty hole");
            self.stats.read(len as u64);
            return Reply {
                head,
                data: Data::None,
                slot,
            };
        }
        let data = if len == 0 {
            Data::None
        } else if self.export.region().is_some() {
            // Sent from the export itself by the writer: no buffer, no copy.
            Data::Export {
                export: Arc::clone(&self.export),
                offset: request.offset,
                len,
            }
        } else {
            let (bufs, part) = self.buffers.for_len(len, &self.share).await;
            slot.hold(part);
            let mut filled = Vec::with_capacity(bufs.len());
            for (result, buf) in self.chunks(request.offset, bufs, false).await {
                if let Err(errno) = result {
                    return self.error(&request, errno, slot);
                }
                filled.push(buf);
            }
            Data::Buffers(filled)
        };
        self.stats.read(len as u64);
        if !self.negotiated.structured_replies {
            let mut head = vec![0; SIMPLE_REPLY_LEN];
            SimpleReply::ok(request.cookie).encode(array_mut(&mut head));
            return Reply { head, data, slot };
        }
        let mut head = vec![0; OFFSET_DATA_PREFIX_LEN];
        if len == 0 {
            head.clear();
            Chunk::None
                .encode(request.cookie, true, &mut head)
                .expect("a NONE chunk always encodes");
        } else {
            encode_offset_data_prefix(
                request.cookie,
                true,
                request.offset,
                request.length,
                array_mut(&mut head),
            )
            .expect("a nonempty read of at most the maximum payload");
        }
        Reply { head, data, slot }
    }

    fn block_status(&self, request: Request, slot: InFlight) -> Reply {
        let Some(context) = self.negotiated.base_allocation else {
            return self.error(&request, Errno::EINVAL, slot);
        };
        let extents = self
            .export
            .extents(request.offset, u64::from(request.length));
        let mut head = Vec::new();
        match encode_block_status(&request, context, true, extents, &mut head) {
            Ok(_) => Reply {
                head,
                data: Data::None,
                slot,
            },
            Err(e) => {
                tracing::warn!(error = %e, ?request, "no extents to answer a block status");
                self.error(&request, Errno::EIO, slot)
            }
        }
    }

    /// The error reply to `request`: an error chunk for READ and BLOCK_STATUS once structured
    /// replies are on (every reply to those is structured then), else a simple reply.
    pub(crate) fn error(&self, request: &Request, errno: Errno, slot: InFlight) -> Reply {
        self.stats.failed();
        error_reply(&self.negotiated, request, errno, slot)
    }
}

/// A successful reply without data.
fn simple_ok(cookie: Cookie, slot: InFlight) -> Reply {
    let mut head = vec![0; SIMPLE_REPLY_LEN];
    SimpleReply::ok(cookie).encode(array_mut(&mut head));
    Reply {
        head,
        data: Data::None,
        slot,
    }
}

/// The error reply to `request` on a connection that negotiated `negotiated`.
pub(crate) fn error_reply(
    negotiated: &Negotiated,
    request: &Request,
    errno: Errno,
    slot: InFlight,
) -> Reply {
    let structured = negotiated.structured_replies
        && matches!(request.command, Command::Read | Command::BlockStatus);
    let head = if structured {
        let mut head = Vec::new();
        let message = format!("{:?} failed", request.command);
        Chunk::Error {
            error: errno,
            message: &message,
        }
        .encode(request.cookie, true, &mut head)
        .expect("an error chunk with a short message always encodes");
        head
    } else {
        let mut head = vec![0; SIMPLE_REPLY_LEN];
        SimpleReply::error(request.cookie, errno).encode(array_mut(&mut head));
        head
    };
    Reply {
        head,
        data: Data::None,
        slot,
    }
}

/// The first `N` bytes of `bytes` as an array (`bytes` was made `N` long).
fn array_mut<const N: usize>(bytes: &mut [u8]) -> &mut [u8; N] {
    (&mut bytes[..N]).try_into().expect("sized by the caller")
}
