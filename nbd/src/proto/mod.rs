//! The NBD protocol codec: bytes in, typed messages out, and back. No I/O, no runtime.
//!
//! The codec follows `doc/proto.md` of the NBD project (fixed newstyle handshake, simple and
//! structured replies, the `base:allocation` metadata context). Every value is big-endian on the
//! wire. What it offers, in the order a connection needs it:
//!
//! - **Handshake**: [`Handshake`] drives the server side from the greeting to transmission,
//!   answering each option from an [`ExportCatalogue`]. Its parts are public too: [`greeting`],
//!   [`decode_client_flags`], [`OptionHeader`], [`ClientOption`], [`OptionReply`],
//!   [`encode_export_name_reply`].
//! - **Transmission**: [`Request::decode`] reads a 28-byte header without allocating,
//!   [`Request::validate`] checks it against what was [`Negotiated`] and names the spec's error.
//!   Replies are a [`SimpleReply`], or structured chunks: [`ChunkHeader`],
//!   [`encode_offset_data_prefix`] (the read's data goes out from its own buffer),
//!   [`encode_offset_hole`], [`encode_block_status`], and [`Chunk`] for every type.
//! - **Errors**: [`ProtoError`] says what was wrong and whether the connection must close;
//!   [`Errno`] is the error field of a reply.
//!
//! Decoders that read from a byte stream return [`Decoded`]: the item and the bytes it used, or
//! how many more bytes are needed. Each decoder exists for the client side as well, so that
//! tests (and fuzzers) check every message by a round trip.

mod block_status;
pub mod consts;
mod errno;
mod error;
mod export;
mod flags;
mod greeting;
mod handshake;
mod option;
mod option_reply;
mod reply;
mod request;
mod structured;
mod validate;
mod wire;

pub use block_status::{encode_block_status, Extent};
pub use errno::Errno;
pub use error::{Malformation, ProtoError};
pub use export::{BlockSizes, ExportCatalogue, ExportInfo, Negotiated};
pub use flags::{
    BlockStatusFlags, ClientFlags, CommandFlags, HandshakeFlags, ReplyFlags, TransmissionFlags,
};
pub use greeting::{
    decode_client_flags, greeting, CLIENT_FLAGS_LEN, GREETING_LEN, SERVER_HANDSHAKE_FLAGS,
};
pub use handshake::{Handshake, Step, BASE_ALLOCATION_ID, DEFAULT_MAX_OPTIONS};
pub use option::{
    ClientOption, ExportRequest, MetaContextRequest, OptionHeader, MAX_OPTION_LEN,
    OPTION_HEADER_LEN,
};
pub use option_reply::{
    encode_export_name_reply, Info, OptionReply, OptionReplyError, OptionReplyHeader,
    EXPORT_NAME_REPLY_LEN, OPTION_REPLY_HEADER_LEN,
};
pub use reply::{SimpleReply, SIMPLE_REPLY_LEN};
pub use request::{Command, Cookie, Request, REQUEST_HEADER_LEN};
pub use structured::{
    encode_offset_data_prefix, encode_offset_hole, Chunk, ChunkHeader, Descriptor,
    CHUNK_HEADER_LEN, OFFSET_DATA_PREFIX_LEN, OFFSET_HOLE_CHUNK_LEN,
};
pub use validate::{Refusal, RefusedPayload, DISCARD_LIMIT};

/// The outcome of decoding from the front of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole item was there.
    Complete {
        /// The item.
        item: T,
        /// The bytes it took from the front of the input.
        consumed: usize,
    },
    /// The input ends too early: at least `missing` more bytes are needed.
    Incomplete {
        /// The bytes still missing.
        missing: usize,
    },
}
