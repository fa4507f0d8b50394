//! The codec's error type: what went wrong, and what the server does about it.

use thiserror::Error;

use super::consts::{NBD_OPT_EXPORT_NAME, NBD_REPLY_TYPE_FLAG_ERROR};
use super::flags::ClientFlags;
use super::option_reply::OptionReplyError;

/// An error of the NBD codec.
///
/// Each variant says whether the connection must close ([`ProtoError::must_close`]) and, for a
/// bad option that the connection survives, which error reply answers it
/// ([`ProtoError::reply_code`]). Refusals of well-formed transmission requests are not errors of
/// the codec: [`Request::validate`](super::Request::validate) answers them with an
/// [`Errno`](super::Errno).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// The client set client flags the server does not know; the spec says to drop the
    /// connection. Closes the connection.
    #[error("the client set unknown client flags {flags:?}")]
    UnknownClientFlags {
        /// The flags as the client sent them.
        flags: ClientFlags,
    },
    /// An option header did not start with `IHAVEOPT`: the stream is out of step. Closes the
    /// connection.
    #[error("option header magic {magic:#018x} is not IHAVEOPT")]
    BadOptionMagic {
        /// The 64 bits found where `IHAVEOPT` belongs.
        magic: u64,
    },
    /// An option declared more data than the codec accepts
    /// ([`MAX_OPTION_LEN`](super::MAX_OPTION_LEN)). The header has been read; `length` bytes of
    /// data follow it. The server discards them and replies `NBD_REP_ERR_TOO_BIG`, except to
    /// `NBD_OPT_EXPORT_NAME`, which cannot be answered with an error: then the connection closes.
    #[error("option {option} declares {length} bytes of data, more than the codec accepts")]
    OptionTooBig {
        /// The option code.
        option: u32,
        /// The declared data length.
        length: u32,
    },
    /// The data of an option does not match its layout. The server replies
    /// `NBD_REP_ERR_INVALID`, except to `NBD_OPT_EXPORT_NAME`, which cannot be answered with an
    /// error: then the connection closes.
    #[error("option {option} is malformed: {problem}")]
    MalformedOption {
        /// The option code.
        option: u32,
        /// What is wrong with its data.
        problem: Malformation,
    },
    /// The client sent more options than one handshake allows. Closes the connection.
    #[error("the client sent more than {limit} options in one handshake")]
    TooManyOptions {
        /// The limit that was passed.
        limit: u32,
    },
    /// `NBD_OPT_EXPORT_NAME` named an export that does not exist; that option cannot be answered
    /// with an error, so the spec says to terminate the session. Closes the connection.
    #[error("NBD_OPT_EXPORT_NAME named an unknown export {name:?}")]
    UnknownExport {
        /// The name the client sent.
        name: String,
    },
    /// The handshake was fed bytes after it had ended (transmission began, or the client
    /// aborted). Closes the connection.
    #[error("the handshake has already ended")]
    HandshakeOver,
    /// A request header did not start with `NBD_REQUEST_MAGIC`: the stream is out of step.
    /// Closes the connection.
    #[error("request magic {magic:#010x} is not NBD_REQUEST_MAGIC")]
    BadRequestMagic {
        /// The 32 bits found where the magic belongs.
        magic: u32,
    },
    /// An option reply did not start with the option reply magic (client side). Closes the
    /// connection.
    #[error("option reply magic {magic:#018x} is wrong")]
    BadOptionReplyMagic {
        /// The 64 bits found where the magic belongs.
        magic: u64,
    },
    /// A transmission reply started with neither reply magic (client side). Closes the
    /// connection.
    #[error("reply magic {magic:#010x} is wrong")]
    BadReplyMagic {
        /// The 32 bits found where the magic belongs.
        magic: u32,
    },
    /// An option reply has a type the codec does not know (client side). Closes the connection.
    #[error("unknown option reply type {reply_type:#x}")]
    UnknownOptionReply {
        /// The reply type.
        reply_type: u32,
    },
    /// A structured reply chunk has a type the codec does not know (client side). The spec
    /// closes the connection, unless the type has the error bit (15) set: then only the reply
    /// counts as failed.
    #[error("unknown structured reply chunk type {chunk_type:#x}")]
    UnknownChunkType {
        /// The chunk type.
        chunk_type: u16,
    },
    /// A reply does not match its layout (client side). Closes the connection.
    #[error("malformed reply: {problem}")]
    MalformedReply {
        /// What is wrong with it.
        problem: Malformation,
    },
    /// A block status reply was asked for with no extent. Nothing was written; the connection
    /// goes on, and the server answers the request with an error instead.
    #[error("a block status reply needs at least one extent")]
    NoExtents,
    /// A block status extent had length zero, which the spec forbids. Nothing was written; the
    /// connection goes on, and the server answers the request with an error instead.
    #[error("block status extent {index} has length zero")]
    ZeroLengthExtent {
        /// Its position among the extents.
        index: usize,
    },
    /// A block status reply was asked for a request of length zero with `NBD_CMD_FLAG_REQ_ONE`,
    /// which no extent can describe. Nothing was written; the connection goes on.
    #[error("a block status request of length zero with REQ_ONE has no valid reply")]
    ZeroLengthRequest,
    /// A content chunk would describe no bytes (`NBD_REPLY_TYPE_OFFSET_DATA` without data or an
    /// `NBD_REPLY_TYPE_OFFSET_HOLE` of length zero). Nothing was written; the connection goes on.
    #[error("a content chunk must describe at least one byte")]
    EmptyChunk,
    /// A chunk's payload would not fit its 32-bit length field. Nothing was written; the
    /// connection goes on.
    #[error("a chunk payload of {length} bytes does not fit the 32-bit length field")]
    ChunkTooLong {
        /// The payload length that was asked for.
        length: u64,
    },
}

impl ProtoError {
    /// Whether the connection must be closed (a hard disconnect) rather than answered.
    pub fn must_close(&self) -> bool {
        match self {
            Self::OptionTooBig { option, .. } | Self::MalformedOption { option, .. } => {
                *option == NBD_OPT_EXPORT_NAME
            }
            Self::UnknownChunkType { chunk_type } => chunk_type & NBD_REPLY_TYPE_FLAG_ERROR == 0,
            Self::NoExtents
            | Self::ZeroLengthExtent { .. }
            | Self::ZeroLengthRequest
            | Self::EmptyChunk
            | Self::ChunkTooLong { .. } => false,
            Self::UnknownClientFlags { .. }
            | Self::BadOptionMagic { .. }
            | Self::TooManyOptions { .. }
            | Self::UnknownExport { .. }
            | Self::HandshakeOver
            | Self::BadRequestMagic { .. }
            | Self::BadOptionReplyMagic { .. }
            | Self::BadReplyMagic { .. }
            | Self::UnknownOptionReply { .. }
            | Self::MalformedReply { .. } => true,
        }
    }

    /// The error reply that answers this error during option haggling, if it is one the
    /// connection survives: `NBD_REP_ERR_TOO_BIG` for an oversized option, `NBD_REP_ERR_INVALID`
    /// for a malformed one.
    pub fn reply_code(&self) -> Option<OptionReplyError> {
        if self.must_close() {
            return None;
        }
        match self {
            Self::OptionTooBig { .. } => Some(OptionReplyError::TooBig),
            Self::MalformedOption { .. } => Some(OptionReplyError::Invalid),
            _ => None,
        }
    }
}

/// What is wrong with the layout of a message's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Malformation {
    /// The data ends inside a fixed-size field.
    #[error("{needed} bytes needed, {available} left")]
    Truncated {
        /// The bytes the field needs.
        needed: usize,
        /// The bytes that were left.
        available: usize,
    },
    /// A length field declares more bytes than the data has left (a name longer than the
    /// option, a query past its end).
    #[error("a length field declares {declared} bytes, {available} left")]
    LengthOverrun {
        /// The declared length.
        declared: u32,
        /// The bytes that were left.
        available: usize,
    },
    /// A count field declares more items than the data has room for.
    #[error("a count field declares {count} items, but only {available} bytes are left")]
    CountOverrun {
        /// The declared count.
        count: u32,
        /// The bytes that were left.
        available: usize,
    },
    /// Bytes are left over after the last field: the declared length does not match.
    #[error("{extra} bytes left over after the last field")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// An option that takes no data carried some.
    #[error("{length} bytes of data where none are allowed")]
    UnexpectedData {
        /// How many.
        length: usize,
    },
    /// A string is not valid UTF-8.
    #[error("a string is not valid UTF-8")]
    NotUtf8,
    /// A string contains a `NUL` character.
    #[error("a string contains NUL")]
    ContainsNul,
    /// A string is longer than the spec's 4096 bytes.
    #[error("a string of {length} bytes is longer than 4096")]
    StringTooLong {
        /// Its length.
        length: usize,
    },
    /// A field holds a value its message does not allow (a zero error, a wrong fixed length).
    #[error("a field holds a value the message does not allow")]
    BadValue,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::NBD_OPT_GO;

    #[test]
    fn bad_options_are_answered_except_export_name() {
        let malformed = |option| ProtoError::MalformedOption {
            option,
            problem: Malformation::NotUtf8,
        };
        assert!(!malformed(NBD_OPT_GO).must_close());
        assert_eq!(
            malformed(NBD_OPT_GO).reply_code(),
            Some(OptionReplyError::Invalid)
        );
        assert!(malformed(NBD_OPT_EXPORT_NAME).must_close());
        assert_eq!(malformed(NBD_OPT_EXPORT_NAME).reply_code(), None);

        let too_big = |option| ProtoError::OptionTooBig {
            option,
            length: 1 << 20,
        };
        assert_eq!(
            too_big(NBD_OPT_GO).reply_code(),
            Some(OptionReplyError::TooBig)
        );
        assert!(too_big(NBD_OPT_EXPORT_NAME).must_close());
    }

    #[test]
    fn stream_errors_close() {
        assert!(ProtoError::BadRequestMagic { magic: 0 }.must_close());
        assert!(ProtoError::BadOptionMagic { magic: 0 }.must_close());
        assert!(ProtoError::TooManyOptions { limit: 64 }.must_close());
        assert_eq!(ProtoError::BadRequestMagic { magic: 0 }.reply_code(), None);
        assert!(!ProtoError::NoExtents.must_close());
    }
}
