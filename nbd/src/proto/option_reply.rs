//! Option replies, the server's answers during option haggling, and the `NBD_OPT_EXPORT_NAME`
//! reply, which is not one.

use super::consts::{
    EXPORT_NAME_REPLY_ZEROES, MAX_ERROR_MESSAGE_LEN, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION,
    NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_OPTION_REPLY_MAGIC, NBD_REP_ACK,
    NBD_REP_ERR_BLOCK_SIZE_REQD, NBD_REP_ERR_INVALID, NBD_REP_ERR_PLATFORM, NBD_REP_ERR_POLICY,
    NBD_REP_ERR_SHUTDOWN, NBD_REP_ERR_TLS_REQD, NBD_REP_ERR_TOO_BIG, NBD_REP_ERR_UNKNOWN,
    NBD_REP_ERR_UNSUP, NBD_REP_INFO, NBD_REP_META_CONTEXT, NBD_REP_SERVER,
};
use super::error::{Malformation, ProtoError};
use super::export::BlockSizes;
use super::flags::TransmissionFlags;
use super::wire::{self, array, put_u16, put_u32, put_u64, Reader};

/// The size of an option reply header: magic, option, reply type, length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;

/// The error reply types (`NBD_REP_ERR_*`), each with bit 31 set on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionReplyError {
    /// `NBD_REP_ERR_UNSUP`: the option is unknown to this server.
    Unsup,
    /// `NBD_REP_ERR_POLICY`: the option is known and valid, but policy forbids it.
    Policy,
    /// `NBD_REP_ERR_INVALID`: the option is syntactically or semantically invalid.
    Invalid,
    /// `NBD_REP_ERR_PLATFORM`: the option is not supported on this platform or build.
    Platform,
    /// `NBD_REP_ERR_TLS_REQD`: TLS must be initiated first.
    TlsReqd,
    /// `NBD_REP_ERR_UNKNOWN`: the export is not available.
    Unknown,
    /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
    Shutdown,
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must request `NBD_INFO_BLOCK_SIZE`.
    BlockSizeReqd,
    /// `NBD_REP_ERR_TOO_BIG`: the request or the reply is too large.
    TooBig,
}

impl OptionReplyError {
    /// The reply type sent on the wire.
    pub const fn code(self) -> u32 {
        match self {
            Self::Unsup => NBD_REP_ERR_UNSUP,
            Self::Policy => NBD_REP_ERR_POLICY,
            Self::Invalid => NBD_REP_ERR_INVALID,
            Self::Platform => NBD_REP_ERR_PLATFORM,
            Self::TlsReqd => NBD_REP_ERR_TLS_REQD,
            Self::Unknown => NBD_REP_ERR_UNKNOWN,
            Self::Shutdown => NBD_REP_ERR_SHUTDOWN,
            Self::BlockSizeReqd => NBD_REP_ERR_BLOCK_SIZE_REQD,
            Self::TooBig => NBD_REP_ERR_TOO_BIG,
        }
    }

    /// The error of a reply type, if it is one of the spec's.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            NBD_REP_ERR_UNSUP => Self::Unsup,
            NBD_REP_ERR_POLICY => Self::Policy,
            NBD_REP_ERR_INVALID => Self::Invalid,
            NBD_REP_ERR_PLATFORM => Self::Platform,
            NBD_REP_ERR_TLS_REQD => Self::TlsReqd,
            NBD_REP_ERR_UNKNOWN => Self::Unknown,
            NBD_REP_ERR_SHUTDOWN => Self::Shutdown,
            NBD_REP_ERR_BLOCK_SIZE_REQD => Self::BlockSizeReqd,
            NBD_REP_ERR_TOO_BIG => Self::TooBig,
            _ => return None,
        })
    }
}

/// The information of one `NBD_REP_INFO` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info<'a> {
    /// `NBD_INFO_EXPORT`: the export's size and transmission flags.
    Export {
        /// The size in bytes.
        size: u64,
        /// The transmission flags.
        flags: TransmissionFlags,
    },
    /// `NBD_INFO_NAME`: the canonical export name.
    Name(&'a str),
    /// `NBD_INFO_DESCRIPTION`: a description for people.
    Description(&'a str),
    /// `NBD_INFO_BLOCK_SIZE`: the size constraints.
    BlockSize(BlockSizes),
    /// An information type the codec does not know (client side); the spec says to ignore it.
    Unknown(u16),
}

/// An option reply, apart from its header's option code.
///
/// Strings borrow: encoding allocates nothing beyond `out`, decoding borrows the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionReply<'a> {
    /// `NBD_REP_ACK`: success, or the end of a list.
    Ack,
    /// `NBD_REP_SERVER`: one export of `NBD_OPT_LIST`. An empty description is not sent.
    Server {
        /// The export name.
        name: &'a str,
        /// A description for people, or empty.
        description: &'a str,
    },
    /// `NBD_REP_INFO`.
    Info(Info<'a>),
    /// `NBD_REP_META_CONTEXT`: one metadata context and its id.
    MetaContext {
        /// The id `NBD_CMD_BLOCK_STATUS` replies will carry (zero in list replies).
        id: u32,
        /// The context name, `namespace:leaf`.
        name: &'a str,
    },
    /// An error reply, with an optional message for people (empty: none). Messages longer than
    /// [`MAX_ERROR_MESSAGE_LEN`] are cut at a character boundary.
    Error {
        /// The error.
        error: OptionReplyError,
        /// The message, or empty.
        message: &'a str,
    },
}

impl<'a> OptionReply<'a> {
    /// The reply type sent on the wire.
    pub fn reply_type(&self) -> u32 {
        match self {
            Self::Ack => NBD_REP_ACK,
            Self::Server { .. } => NBD_REP_SERVER,
            Self::Info(_) => NBD_REP_INFO,
            Self::MetaContext { .. } => NBD_REP_META_CONTEXT,
            Self::Error { error, .. } => error.code(),
        }
    }

    /// Appends the reply, header and payload, to `out`, as the answer to option `option`.
    /// Names must be spec strings (at most 4096 bytes); the catalogue is trusted for that.
    pub fn encode(&self, option: u32, out: &mut Vec<u8>) {
        let start = out.len();
        put_u64(out, NBD_OPTION_REPLY_MAGIC);
        put_u32(out, option);
        put_u32(out, self.reply_type());
        put_u32(out, 0);
        match *self {
            Self::Ack => {}
            Self::Server { name, description } => {
                put_u32(out, wire::len_u32(name.as_bytes()));
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(description.as_bytes());
            }
            Self::Info(info) => encode_info(info, out),
            Self::MetaContext { id, name } => {
                put_u32(out, id);
                out.extend_from_slice(name.as_bytes());
            }
            Self::Error { message, .. } => {
                out.extend_from_slice(wire::truncate(message, MAX_ERROR_MESSAGE_LEN).as_bytes());
            }
        }
        let length = wire::len_u32(&out[start + OPTION_REPLY_HEADER_LEN..]);
        out[start + 16..start + OPTION_REPLY_HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    }

    /// Decodes the payload of a reply of type `reply_type` (client side).
    pub fn decode(reply_type: u32, payload: &'a [u8]) -> Result<Self, ProtoError> {
        Self::decode_payload(reply_type, payload)?
            .ok_or(ProtoError::UnknownOptionReply { reply_type })
    }

    fn decode_payload(reply_type: u32, payload: &'a [u8]) -> Result<Option<Self>, ProtoError> {
        let malformed = |problem| ProtoError::MalformedReply { problem };
        let mut reader = Reader::new(payload);
        let reply = match reply_type {
            NBD_REP_ACK => {
                reader.finish().map_err(malformed)?;
                Self::Ack
            }
            NBD_REP_SERVER => {
                let name = reader.string_u32().map_err(malformed)?;
                let description = wire::string(reader.rest()).map_err(malformed)?;
                Self::Server { name, description }
            }
            NBD_REP_INFO => Self::Info(decode_info(reader).map_err(malformed)?),
            NBD_REP_META_CONTEXT => {
                let id = reader.u32().map_err(malformed)?;
                let name = wire::string(reader.rest()).map_err(malformed)?;
                Self::MetaContext { id, name }
            }
            other => match OptionReplyError::from_code(other) {
                Some(error) => {
                    let message = wire::string(reader.rest()).map_err(malformed)?;
                    Self::Error { error, message }
                }
                None => return Ok(None),
            },
        };
        Ok(Some(reply))
    }
}

fn encode_info(info: Info<'_>, out: &mut Vec<u8>) {
    match info {
        Info::Export { size, flags } => {
            put_u16(out, NBD_INFO_EXPORT);
            put_u64(out, size);
            put_u16(out, flags.bits());
        }
        Info::Name(name) => {
            put_u16(out, NBD_INFO_NAME);
            out.extend_from_slice(name.as_bytes());
        }
        Info::Description(description) => {
            put_u16(out, NBD_INFO_DESCRIPTION);
            out.extend_from_slice(description.as_bytes());
        }
        Info::BlockSize(sizes) => {
            put_u16(out, NBD_INFO_BLOCK_SIZE);
            put_u32(out, sizes.minimum());
            put_u32(out, sizes.preferred());
            put_u32(out, sizes.maximum());
        }
        Info::Unknown(info_type) => put_u16(out, info_type),
    }
}

fn decode_info(mut reader: Reader<'_>) -> Result<Info<'_>, Malformation> {
    let info = match reader.u16()? {
        NBD_INFO_EXPORT => {
            let size = reader.u64()?;
            let flags = TransmissionFlags::from_bits_retain(reader.u16()?);
            Info::Export { size, flags }
        }
        NBD_INFO_NAME => Info::Name(wire::string(reader.rest())?),
        NBD_INFO_DESCRIPTION => Info::Description(wire::string(reader.rest())?),
        NBD_INFO_BLOCK_SIZE => {
            let (minimum, preferred, maximum) = (reader.u32()?, reader.u32()?, reader.u32()?);
            Info::BlockSize(
                BlockSizes::new(minimum, preferred, maximum).ok_or(Malformation::BadValue)?,
            )
        }
        unknown => {
            reader.rest();
            Info::Unknown(unknown)
        }
    };
    reader.finish()?;
    Ok(info)
}

/// An option reply header (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option answered.
    pub option: u32,
    /// The reply type (`NBD_REP_*`).
    pub reply_type: u32,
    /// The payload length that follows.
    pub length: u32,
}

impl OptionReplyHeader {
    /// Decodes a header; a wrong magic is [`ProtoError::BadOptionReplyMagic`].
    pub fn decode(bytes: &[u8; OPTION_REPLY_HEADER_LEN]) -> Result<Self, ProtoError> {
        let magic = u64::from_be_bytes(array(&bytes[0..]));
        if magic != NBD_OPTION_REPLY_MAGIC {
            return Err(ProtoError::BadOptionReplyMagic { magic });
        }
        Ok(Self {
            option: u32::from_be_bytes(array(&bytes[8..])),
            reply_type: u32::from_be_bytes(array(&bytes[12..])),
            length: u32::from_be_bytes(array(&bytes[16..])),
        })
    }
}

/// The largest `NBD_OPT_EXPORT_NAME` reply: size, flags and 124 zero bytes.
pub const EXPORT_NAME_REPLY_LEN: usize = 8 + 2 + EXPORT_NAME_REPLY_ZEROES;

/// Appends the reply to `NBD_OPT_EXPORT_NAME`: the export size, the transmission flags and,
/// unless the client set `NBD_FLAG_C_NO_ZEROES`, 124 zero bytes.
pub fn encode_export_name_reply(
    size: u64,
    flags: TransmissionFlags,
    no_zeroes: bool,
    out: &mut Vec<u8>,
) {
    put_u64(out, size);
    put_u16(out, flags.bits());
    if !no_zeroes {
        out.extend_from_slice(&[0; EXPORT_NAME_REPLY_ZEROES]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option reply error the spec defines.
    const ALL_ERRORS: [OptionReplyError; 9] = [
        OptionReplyError::Unsup,
        OptionReplyError::Policy,
        OptionReplyError::Invalid,
        OptionReplyError::Platform,
        OptionReplyError::TlsReqd,
        OptionReplyError::Unknown,
        OptionReplyError::Shutdown,
        OptionReplyError::BlockSizeReqd,
        OptionReplyError::TooBig,
    ];
    use crate::proto::consts::{NBD_OPT_GO, NBD_OPT_LIST};

    fn encoded(option: u32, reply: OptionReply<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(option, &mut out);
        out
    }

    fn round_trip(option: u32, reply: OptionReply<'_>) {
        let bytes = encoded(option, reply);
        let header = OptionReplyHeader::decode(&array(&bytes)).unwrap();
        assert_eq!(header.option, option);
        assert_eq!(
            header.length as usize,
            bytes.len() - OPTION_REPLY_HEADER_LEN
        );
        let payload = &bytes[OPTION_REPLY_HEADER_LEN..];
        assert_eq!(OptionReply::decode(header.reply_type, payload), Ok(reply));
    }

    #[test]
    fn ack_golden_bytes() {
        assert_eq!(
            encoded(NBD_OPT_GO, OptionReply::Ack),
            b"\x00\x03\xe8\x89\x04\x55\x65\xa9\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00"
        );
    }

    #[test]
    fn info_export_golden_bytes() {
        let flags = TransmissionFlags::HAS_FLAGS | TransmissionFlags::SEND_FLUSH;
        let reply = OptionReply::Info(Info::Export {
            size: 0x1_0000_0000,
            flags,
        });
        let mut expected =
            b"\x00\x03\xe8\x89\x04\x55\x65\xa9\x00\x00\x00\x07\x00\x00\x00\x03\x00\x00\x00\x0c"
                .to_vec();
        expected.extend_from_slice(b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x05");
        assert_eq!(encoded(NBD_OPT_GO, reply), expected);
    }

    #[test]
    fn info_block_size_golden_bytes() {
        let sizes = BlockSizes::new(512, 4096, 1 << 25).unwrap();
        let bytes = encoded(NBD_OPT_GO, OptionReply::Info(Info::BlockSize(sizes)));
        assert_eq!(&bytes[16..20], b"\x00\x00\x00\x0e");
        assert_eq!(
            &bytes[20..],
            b"\x00\x03\x00\x00\x02\x00\x00\x00\x10\x00\x02\x00\x00\x00"
        );
    }

    #[test]
    fn server_golden_bytes() {
        let bytes = encoded(
            NBD_OPT_LIST,
            OptionReply::Server {
                name: "disk",
                description: "d",
            },
        );
        assert_eq!(
            &bytes[12..],
            b"\x00\x00\x00\x02\x00\x00\x00\x09\x00\x00\x00\x04diskd"
        );
    }

    #[test]
    fn error_golden_bytes() {
        let reply = OptionReply::Error {
            error: OptionReplyError::Unknown,
            message: "no",
        };
        assert_eq!(
            &encoded(NBD_OPT_GO, reply)[12..],
            b"\x80\x00\x00\x06\x00\x00\x00\x02no"
        );
    }

    #[test]
    fn every_reply_round_trips() {
        let sizes = BlockSizes::new(1, 4096, 1 << 25).unwrap();
        let flags = TransmissionFlags::HAS_FLAGS | TransmissionFlags::READ_ONLY;
        for reply in [
            OptionReply::Ack,
            OptionReply::Server {
                name: "disk",
                description: "",
            },
            OptionReply::Server {
                name: "",
                description: "the default",
            },
            OptionReply::Info(Info::Export {
                size: 1 << 40,
                flags,
            }),
            OptionReply::Info(Info::Name("disk")),
            OptionReply::Info(Info::Description("a disk")),
            OptionReply::Info(Info::BlockSize(sizes)),
            OptionReply::Info(Info::Unknown(99)),
            OptionReply::MetaContext {
                id: 7,
                name: "base:allocation",
            },
        ] {
            round_trip(NBD_OPT_GO, reply);
        }
        for error in ALL_ERRORS {
            assert_eq!(error.code(), (1 << 31) + (error.code() & 0xff));
            round_trip(
                NBD_OPT_GO,
                OptionReply::Error {
                    error,
                    message: "why",
                },
            );
            round_trip(NBD_OPT_GO, OptionReply::Error { error, message: "" });
        }
    }

    #[test]
    fn error_codes_are_the_spec_values() {
        let codes = ALL_ERRORS.map(|error| error.code() - (1 << 31));
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn long_messages_are_cut() {
        let message = "é".repeat(MAX_ERROR_MESSAGE_LEN);
        let reply = OptionReply::Error {
            error: OptionReplyError::Invalid,
            message: &message,
        };
        let bytes = encoded(NBD_OPT_GO, reply);
        assert_eq!(bytes.len() - OPTION_REPLY_HEADER_LEN, MAX_ERROR_MESSAGE_LEN);
    }

    #[test]
    fn export_name_reply_with_and_without_zeroes() {
        let flags = TransmissionFlags::HAS_FLAGS | TransmissionFlags::SEND_FLUSH;
        let mut with = Vec::new();
        encode_export_name_reply(0x0102_0304_0506_0708, flags, false, &mut with);
        let mut expected = b"\x01\x02\x03\x04\x05\x06\x07\x08\x00\x05".to_vec();
        expected.extend_from_slice(&[0; 124]);
        assert_eq!(with, expected);
        assert_eq!(with.len(), EXPORT_NAME_REPLY_LEN);

        let mut without = Vec::new();
        encode_export_name_reply(0x0102_0304_0506_0708, flags, true, &mut without);
        assert_eq!(without, b"\x01\x02\x03\x04\x05\x06\x07\x08\x00\x05");
    }

    #[test]
    fn decode_rejects_what_does_not_fit() {
        assert_eq!(
            OptionReply::decode(NBD_REP_ACK, b"x"),
            Err(ProtoError::MalformedReply {
                problem: Malformation::TrailingBytes { extra: 1 }
            })
        );
        assert_eq!(
            OptionReply::decode(NBD_REP_INFO, b"\x00\x00\x00"),
            Err(ProtoError::MalformedReply {
                problem: Malformation::Truncated {
                    needed: 8,
                    available: 1
                }
            })
        );
        assert_eq!(
            OptionReply::decode(77, b""),
            Err(ProtoError::UnknownOptionReply { reply_type: 77 })
        );
        let mut bytes = encoded(NBD_OPT_GO, OptionReply::Ack);
        bytes[0] = 1;
        assert!(matches!(
            OptionReplyHeader::decode(&array(&bytes)),
            Err(ProtoError::BadOptionReplyMagic { .. })
        ));
    }
}
