//! Structured reply chunks: the 20-byte chunk header and each chunk type's payload.
//!
//! The chunks of the hot path have fixed-size encoders that write into arrays
//! ([`encode_offset_data_prefix`], [`encode_offset_hole`], [`ChunkHeader::encode`]); the read's
//! data then goes out from its own buffer. [`Chunk`] covers every type, for the rest and for
//! decoding.

use super::consts::{
    MAX_ERROR_MESSAGE_LEN, NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_ERROR,
    NBD_REPLY_TYPE_ERROR_OFFSET, NBD_REPLY_TYPE_NONE, NBD_REPLY_TYPE_OFFSET_DATA,
    NBD_REPLY_TYPE_OFFSET_HOLE, NBD_STRUCTURED_REPLY_MAGIC,
};
use super::errno::Errno;
use super::error::{Malformation, ProtoError};
use super::flags::{BlockStatusFlags, ReplyFlags};
use super::request::Cookie;
use super::wire::{self, array, put_u16, put_u32, put_u64, Reader};

/// The size of a chunk header: magic, flags, type, cookie, length.
pub const CHUNK_HEADER_LEN: usize = 20;
/// The size of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk before its data: header and offset.
pub const OFFSET_DATA_PREFIX_LEN: usize = CHUNK_HEADER_LEN + 8;
/// The size of a whole `NBD_REPLY_TYPE_OFFSET_HOLE` chunk: header, offset, hole length.
pub const OFFSET_HOLE_CHUNK_LEN: usize = CHUNK_HEADER_LEN + 12;

/// A structured reply chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkHeader {
    /// The chunk flags (`DONE` on the last chunk).
    pub flags: ReplyFlags,
    /// The chunk type (`NBD_REPLY_TYPE_*`).
    pub chunk_type: u16,
    /// The cookie of the request answered.
    pub cookie: Cookie,
    /// The payload length that follows.
    pub length: u32,
}

impl ChunkHeader {
    /// The whole `NBD_REPLY_TYPE_NONE` chunk that ends a reply: type none, `DONE`, no payload.
    pub const fn none(cookie: Cookie) -> Self {
        Self {
            flags: ReplyFlags::DONE,
            chunk_type: NBD_REPLY_TYPE_NONE,
            cookie,
            length: 0,
        }
    }

    /// Encodes the header. Allocates nothing.
    pub fn encode(&self, out: &mut [u8; CHUNK_HEADER_LEN]) {
        out[0..4].copy_from_slice(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.bits().to_be_bytes());
        out[6..8].copy_from_slice(&self.chunk_type.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.0.to_be_bytes());
        out[16..20].copy_from_slice(&self.length.to_be_bytes());
    }

    /// Decodes a header (client side).
    pub fn decode(bytes: &[u8; CHUNK_HEADER_LEN]) -> Result<Self, ProtoError> {
        let magic = u32::from_be_bytes(array(&bytes[0..]));
        if magic != NBD_STRUCTURED_REPLY_MAGIC {
            return Err(ProtoError::BadReplyMagic { magic });
        }
        Ok(Self {
            flags: ReplyFlags::from_bits_retain(u16::from_be_bytes(array(&bytes[4..]))),
            chunk_type: u16::from_be_bytes(array(&bytes[6..])),
            cookie: Cookie(u64::from_be_bytes(array(&bytes[8..]))),
            length: u32::from_be_bytes(array(&bytes[16..])),
        })
    }
}

fn done_flags(done: bool) -> ReplyFlags {
    if done {
        ReplyFlags::DONE
    } else {
        ReplyFlags::empty()
    }
}

/// Encodes the header and offset of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk whose `data_len`
/// bytes of data the caller sends next from its own buffer. Allocates nothing. The data must be
/// at least one byte ([`ProtoError::EmptyChunk`]) and fit the length field with the offset
/// ([`ProtoError::ChunkTooLong`]).
pub fn encode_offset_data_prefix(
    cookie: Cookie,
    done: bool,
    offset: u64,
    data_len: u32,
    out: &mut [u8; OFFSET_DATA_PREFIX_LEN],
) -> Result<(), ProtoError> {
    if data_len == 0 {
        return Err(ProtoError::EmptyChunk);
    }
    let length = data_len.checked_add(8).ok_or(ProtoError::ChunkTooLong {
        length: u64::from(data_len) + 8,
    })?;
    let header = ChunkHeader {
        flags: done_flags(done),
        chunk_type: NBD_REPLY_TYPE_OFFSET_DATA,
        cookie,
        length,
    };
    let mut head = [0; CHUNK_HEADER_LEN];
    header.encode(&mut head);
    out[..CHUNK_HEADER_LEN].copy_from_slice(&head);
    out[CHUNK_HEADER_LEN..].copy_from_slice(&offset.to_be_bytes());
    Ok(())
}

/// Encodes a whole `NBD_REPLY_TYPE_OFFSET_HOLE` chunk: `length` bytes from `offset` read as
/// zeroes. Allocates nothing. A hole of length zero is [`ProtoError::EmptyChunk`].
pub fn encode_offset_hole(
    cookie: Cookie,
    done: bool,
    offset: u64,
    length: u32,
    out: &mut [u8; OFFSET_HOLE_CHUNK_LEN],
) -> Result<(), ProtoError> {
    if length == 0 {
        return Err(ProtoError::EmptyChunk);
    }
    let header = ChunkHeader {
        flags: done_flags(done),
        chunk_type: NBD_REPLY_TYPE_OFFSET_HOLE,
        cookie,
        length: 12,
    };
    let mut head = [0; CHUNK_HEADER_LEN];
    header.encode(&mut head);
    out[..CHUNK_HEADER_LEN].copy_from_slice(&head);
    out[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + 8].copy_from_slice(&offset.to_be_bytes());
    out[CHUNK_HEADER_LEN + 8..].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// One block status descriptor as it travels: a nonzero length and the status flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// The extent's length in bytes.
    pub length: u32,
    /// Its status (`NBD_STATE_HOLE`, `NBD_STATE_ZERO` for `base:allocation`).
    pub flags: BlockStatusFlags,
}

/// A structured reply chunk's payload, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// `NBD_REPLY_TYPE_NONE`: no payload; always the last chunk.
    None,
    /// `NBD_REPLY_TYPE_OFFSET_DATA`: data read from `offset`.
    OffsetData {
        /// Where the data starts in the export.
        offset: u64,
        /// The data, at least one byte.
        data: &'a [u8],
    },
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`: `length` bytes from `offset` read as zeroes.
    OffsetHole {
        /// Where the hole starts in the export.
        offset: u64,
        /// Its length, nonzero.
        length: u32,
    },
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`: consecutive extents of one metadata context.
    /// [`encode_block_status`](super::encode_block_status) builds one from a request's extents.
    BlockStatus {
        /// The metadata context id.
        context_id: u32,
        /// At least one descriptor, none of length zero.
        descriptors: Vec<Descriptor>,
    },
    /// `NBD_REPLY_TYPE_ERROR`: the request failed. Messages longer than
    /// [`MAX_ERROR_MESSAGE_LEN`] are cut at a character boundary.
    Error {
        /// The error.
        error: Errno,
        /// A message for people, or empty.
        message: &'a str,
    },
    /// `NBD_REPLY_TYPE_ERROR_OFFSET`: the request failed at `offset`.
    ErrorOffset {
        /// The error.
        error: Errno,
        /// A message for people, or empty.
        message: &'a str,
        /// Where in the export it failed.
        offset: u64,
    },
}

impl<'a> Chunk<'a> {
    /// The chunk type sent on the wire.
    pub fn chunk_type(&self) -> u16 {
        match self {
            Self::None => NBD_REPLY_TYPE_NONE,
            Self::OffsetData { .. } => NBD_REPLY_TYPE_OFFSET_DATA,
            Self::OffsetHole { .. } => NBD_REPLY_TYPE_OFFSET_HOLE,
            Self::BlockStatus { .. } => NBD_REPLY_TYPE_BLOCK_STATUS,
            Self::Error { .. } => NBD_REPLY_TYPE_ERROR,
            Self::ErrorOffset { .. } => NBD_REPLY_TYPE_ERROR_OFFSET,
        }
    }

    /// Appends the chunk, header and payload, to `out`. `done` marks the last chunk of the
    /// reply; an `NBD_REPLY_TYPE_NONE` chunk is always marked, as the spec requires. A chunk the
    /// spec forbids (empty content, no or zero-length descriptors, a payload past the 32-bit
    /// length) is an error, and nothing is appended.
    pub fn encode(&self, cookie: Cookie, done: bool, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.check()?;
        let start = out.len();
        let flags = done_flags(done || matches!(self, Self::None));
        out.resize(start + CHUNK_HEADER_LEN, 0);
        match self {
            Self::None => {}
            Self::OffsetData { offset, data } => {
                put_u64(out, *offset);
                out.extend_from_slice(data);
            }
            Self::OffsetHole { offset, length } => {
                put_u64(out, *offset);
                put_u32(out, *length);
            }
            Self::BlockStatus {
                context_id,
                descriptors,
            } => {
                put_u32(out, *context_id);
                for descriptor in descriptors {
                    put_u32(out, descriptor.length);
                    put_u32(out, descriptor.flags.bits());
                }
            }
            Self::Error { error, message } => put_error(out, *error, message),
            Self::ErrorOffset {
                error,
                message,
                offset,
            } => {
                put_error(out, *error, message);
                put_u64(out, *offset);
            }
        }
        let payload_len = out.len() - start - CHUNK_HEADER_LEN;
        let Ok(length) = u32::try_from(payload_len) else {
            out.truncate(start);
            return Err(ProtoError::ChunkTooLong {
                length: payload_len as u64,
            });
        };
        let header = ChunkHeader {
            flags,
            chunk_type: self.chunk_type(),
            cookie,
            length,
        };
        let mut head = [0; CHUNK_HEADER_LEN];
        header.encode(&mut head);
        out[start..start + CHUNK_HEADER_LEN].copy_from_slice(&head);
        Ok(())
    }

    fn check(&self) -> Result<(), ProtoError> {
        match self {
            Self::OffsetData { data: [], .. } | Self::OffsetHole { length: 0, .. } => {
                Err(ProtoError::EmptyChunk)
            }
            Self::BlockStatus { descriptors, .. } => {
                if descriptors.is_empty() {
                    return Err(ProtoError::NoExtents);
                }
                match descriptors
                    .iter()
                    .position(|descriptor| descriptor.length == 0)
                {
                    Some(index) => Err(ProtoError::ZeroLengthExtent { index }),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Decodes the payload of a chunk (client side). An unknown type is
    /// [`ProtoError::UnknownChunkType`]; a payload that breaks its type's layout is
    /// [`ProtoError::MalformedReply`]. An error value the spec does not define reads as
    /// `NBD_EINVAL`.
    pub fn decode(header: &ChunkHeader, payload: &'a [u8]) -> Result<Self, ProtoError> {
        let malformed = |problem| ProtoError::MalformedReply { problem };
        let mut reader = Reader::new(payload);
        let chunk = match header.chunk_type {
            NBD_REPLY_TYPE_NONE => Self::None,
            NBD_REPLY_TYPE_OFFSET_DATA => {
                let offset = reader.u64().map_err(malformed)?;
                match reader.rest() {
                    [] => return Err(malformed(Malformation::BadValue)),
                    data => Self::OffsetData { offset, data },
                }
            }
            NBD_REPLY_TYPE_OFFSET_HOLE => {
                let offset = reader.u64().map_err(malformed)?;
                match reader.u32().map_err(malformed)? {
                    0 => return Err(malformed(Malformation::BadValue)),
                    length => Self::OffsetHole { offset, length },
                }
            }
            NBD_REPLY_TYPE_BLOCK_STATUS => {
                let context_id = reader.u32().map_err(malformed)?;
                if reader.remaining() == 0 || reader.remaining() % 8 != 0 {
                    return Err(malformed(Malformation::BadValue));
                }
                let mut descriptors = Vec::with_capacity(reader.remaining() / 8);
                while reader.remaining() > 0 {
                    let length = reader.u32().map_err(malformed)?;
                    let flags =
                        BlockStatusFlags::from_bits_retain(reader.u32().map_err(malformed)?);
                    if length == 0 {
                        return Err(malformed(Malformation::BadValue));
                    }
                    descriptors.push(Descriptor { length, flags });
                }
                Self::BlockStatus {
                    context_id,
                    descriptors,
                }
            }
            NBD_REPLY_TYPE_ERROR => {
                let (error, message) = read_error(&mut reader).map_err(malformed)?;
                Self::Error { error, message }
            }
            NBD_REPLY_TYPE_ERROR_OFFSET => {
                let (error, message) = read_error(&mut reader).map_err(malformed)?;
                let offset = reader.u64().map_err(malformed)?;
                Self::ErrorOffset {
                    error,
                    message,
                    offset,
                }
            }
            chunk_type => return Err(ProtoError::UnknownChunkType { chunk_type }),
        };
        reader.finish().map_err(malformed)?;
        Ok(chunk)
    }
}

/// The common start of error chunks: error, 16-bit message length, message.
fn put_error(out: &mut Vec<u8>, error: Errno, message: &str) {
    let message = wire::truncate(message, MAX_ERROR_MESSAGE_LEN);
    put_u32(out, error.code());
    put_u16(out, message.len() as u16);
    out.extend_from_slice(message.as_bytes());
}

fn read_error<'a>(reader: &mut Reader<'a>) -> Result<(Errno, &'a str), Malformation> {
    let error = Errno::from_code(reader.u32()?).ok_or(Malformation::BadValue)?;
    let declared = reader.u16()?;
    let message = reader
        .take(usize::from(declared))
        .map_err(|_| Malformation::LengthOverrun {
            declared: declared.into(),
            available: reader.remaining(),
        })?;
    Ok((error, wire::string(message)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: Cookie = Cookie(0x0102_0304_0506_0708);
    const HEADER_START: &[u8] = b"\x66\x8e\x33\xef";

    fn encoded(chunk: &Chunk<'_>, done: bool) -> Vec<u8> {
        let mut out = Vec::new();
        chunk.encode(COOKIE, done, &mut out).unwrap();
        out
    }

    fn decoded(bytes: &[u8]) -> Result<(ChunkHeader, Chunk<'_>), ProtoError> {
        let header = ChunkHeader::decode(bytes.first_chunk().unwrap())?;
        assert_eq!(header.length as usize, bytes.len() - CHUNK_HEADER_LEN);
        Ok((header, Chunk::decode(&header, &bytes[CHUNK_HEADER_LEN..])?))
    }

    #[test]
    fn none_golden_bytes() {
        let mut bytes = [0; CHUNK_HEADER_LEN];
        ChunkHeader::none(COOKIE).encode(&mut bytes);
        assert_eq!(&bytes[..4], HEADER_START);
        assert_eq!(
            &bytes[4..],
            b"\x00\x01\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00"
        );
        assert_eq!(encoded(&Chunk::None, false), bytes);
    }

    #[test]
    fn offset_data_golden_bytes() {
        let mut prefix = [0; OFFSET_DATA_PREFIX_LEN];
        encode_offset_data_prefix(COOKIE, true, 0x200, 3, &mut prefix).unwrap();
        assert_eq!(&prefix[..4], HEADER_START);
        assert_eq!(
            &prefix[4..],
            b"\x00\x01\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x0b\
              \x00\x00\x00\x00\x00\x00\x02\x00"
        );
        let whole = encoded(
            &Chunk::OffsetData {
                offset: 0x200,
                data: b"abc",
            },
            true,
        );
        assert_eq!(whole[..OFFSET_DATA_PREFIX_LEN], prefix);
        assert_eq!(&whole[OFFSET_DATA_PREFIX_LEN..], b"abc");
    }

    #[test]
    fn offset_hole_golden_bytes() {
        let mut bytes = [0; OFFSET_HOLE_CHUNK_LEN];
        encode_offset_hole(COOKIE, false, 0x1000, 0x2000, &mut bytes).unwrap();
        assert_eq!(&bytes[..4], HEADER_START);
        assert_eq!(
            &bytes[4..],
            b"\x00\x00\x00\x02\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x0c\
              \x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x20\x00"
        );
        assert_eq!(
            encoded(
                &Chunk::OffsetHole {
                    offset: 0x1000,
                    length: 0x2000
                },
                false
            ),
            bytes
        );
    }

    #[test]
    fn error_golden_bytes() {
        let bytes = encoded(
            &Chunk::Error {
                error: Errno::EIO,
                message: "bad",
            },
            true,
        );
        assert_eq!(
            &bytes[4..],
            b"\x00\x01\x80\x01\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x09\
              \x00\x00\x00\x05\x00\x03bad"
        );
    }

    #[test]
    fn error_offset_golden_bytes() {
        let chunk = Chunk::ErrorOffset {
            error: Errno::EINVAL,
            message: "",
            offset: 0x10,
        };
        assert_eq!(
            &encoded(&chunk, true)[4..],
            b"\x00\x01\x80\x02\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x0e\
              \x00\x00\x00\x16\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10"
        );
    }

    #[test]
    fn block_status_golden_bytes() {
        let chunk = Chunk::BlockStatus {
            context_id: 1,
            descriptors: vec![
                Descriptor {
                    length: 0x1000,
                    flags: BlockStatusFlags::empty(),
                },
                Descriptor {
                    length: 0x2000,
                    flags: BlockStatusFlags::HOLE | BlockStatusFlags::ZERO,
                },
            ],
        };
        assert_eq!(
            &encoded(&chunk, true)[4..],
            b"\x00\x01\x00\x05\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x14\
              \x00\x00\x00\x01\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00\x00\x03"
        );
    }

    #[test]
    fn every_chunk_round_trips() {
        let chunks = [
            Chunk::None,
            Chunk::OffsetData {
                offset: 1 << 40,
                data: b"data",
            },
            Chunk::OffsetHole {
                offset: 512,
                length: u32::MAX,
            },
            Chunk::BlockStatus {
                context_id: 7,
                descriptors: vec![Descriptor {
                    length: 1,
                    flags: BlockStatusFlags::ZERO,
                }],
            },
            Chunk::Error {
                error: Errno::ENOSPC,
                message: "full",
            },
            Chunk::ErrorOffset {
                error: Errno::EIO,
                message: "sector",
                offset: 4096,
            },
        ];
        for chunk in chunks {
            for done in [false, true] {
                let bytes = encoded(&chunk, done);
                let (header, back) = decoded(&bytes).unwrap();
                assert_eq!(back, chunk);
                assert_eq!(header.cookie, COOKIE);
                assert_eq!(
                    header.flags.contains(ReplyFlags::DONE),
                    done || chunk == Chunk::None
                );
            }
        }
    }

    #[test]
    fn forbidden_chunks_are_refused_and_write_nothing() {
        let mut out = vec![9];
        for (chunk, error) in [
            (
                Chunk::OffsetData {
                    offset: 0,
                    data: b"",
                },
                ProtoError::EmptyChunk,
            ),
            (
                Chunk::OffsetHole {
                    offset: 0,
                    length: 0,
                },
                ProtoError::EmptyChunk,
            ),
            (
                Chunk::BlockStatus {
                    context_id: 1,
                    descriptors: vec![],
                },
                ProtoError::NoExtents,
            ),
            (
                Chunk::BlockStatus {
                    context_id: 1,
                    descriptors: vec![
                        Descriptor {
                            length: 1,
                            flags: BlockStatusFlags::empty(),
                        },
                        Descriptor {
                            length: 0,
                            flags: BlockStatusFlags::empty(),
                        },
                    ],
                },
                ProtoError::ZeroLengthExtent { index: 1 },
            ),
        ] {
            assert_eq!(chunk.encode(COOKIE, true, &mut out), Err(error));
            assert_eq!(out, [9]);
        }
        let mut prefix = [0; OFFSET_DATA_PREFIX_LEN];
        assert_eq!(
            encode_offset_data_prefix(COOKIE, true, 0, 0, &mut prefix),
            Err(ProtoError::EmptyChunk)
        );
        assert_eq!(
            encode_offset_data_prefix(COOKIE, true, 0, u32::MAX - 7, &mut prefix),
            Err(ProtoError::ChunkTooLong {
                length: u64::from(u32::MAX) + 1
            })
        );
        assert!(encode_offset_data_prefix(COOKIE, true, 0, u32::MAX - 8, &mut prefix).is_ok());
        let mut hole = [0; OFFSET_HOLE_CHUNK_LEN];
        assert_eq!(
            encode_offset_hole(COOKIE, true, 0, 0, &mut hole),
            Err(ProtoError::EmptyChunk)
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let message = "x".repeat(5000);
        let bytes = encoded(
            &Chunk::Error {
                error: Errno::EIO,
                message: &message,
            },
            true,
        );
        let (_, chunk) = decoded(&bytes).unwrap();
        assert_eq!(
            chunk,
            Chunk::Error {
                error: Errno::EIO,
                message: &message[..MAX_ERROR_MESSAGE_LEN]
            }
        );
    }

    #[test]
    fn decode_rejects_what_does_not_fit() {
        let header = |chunk_type, length| ChunkHeader {
            flags: ReplyFlags::DONE,
            chunk_type,
            cookie: COOKIE,
            length,
        };
        let bad = |problem| Err(ProtoError::MalformedReply { problem });
        assert_eq!(
            Chunk::decode(&header(NBD_REPLY_TYPE_NONE, 1), b"x"),
            bad(Malformation::TrailingBytes { extra: 1 })
        );
        assert_eq!(
            Chunk::decode(&header(NBD_REPLY_TYPE_OFFSET_DATA, 8), &[0; 8]),
            bad(Malformation::BadValue)
        );
        assert_eq!(
            Chunk::decode(&header(NBD_REPLY_TYPE_BLOCK_STATUS, 8), &[0; 8]),
            bad(Malformation::BadValue)
        );
        assert_eq!(
            Chunk::decode(
                &header(NBD_REPLY_TYPE_ERROR, 6),
                b"\x00\x00\x00\x00\x00\x00"
            ),
            bad(Malformation::BadValue)
        );
        assert_eq!(
            Chunk::decode(
                &header(NBD_REPLY_TYPE_ERROR, 7),
                b"\x00\x00\x00\x05\x00\x02x"
            ),
            bad(Malformation::LengthOverrun {
                declared: 2,
                available: 1
            })
        );
        assert_eq!(
            Chunk::decode(&header(3, 0), b""),
            Err(ProtoError::UnknownChunkType { chunk_type: 3 })
        );
        assert_eq!(
            ChunkHeader::decode(&[0; CHUNK_HEADER_LEN]),
            Err(ProtoError::BadReplyMagic { magic: 0 })
        );
    }
}
