//! Transmission requests: the 28-byte header the client sends for each command.

use std::fmt;

use super::consts::{
    NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE, NBD_CMD_DISC, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
    NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_REQUEST_MAGIC,
};
use super::error::ProtoError;
use super::flags::CommandFlags;
use super::wire::array;
use super::Decoded;

/// The size of a request header: magic, flags, type, cookie, offset, length.
pub const REQUEST_HEADER_LEN: usize = 28;

/// The client's opaque tag for a request (formerly "handle"), echoed in every reply to it.
///
/// It is kept as the `u64` its 8 bytes spell in big-endian order and written back the same way,
/// so the bytes the client sent are the bytes it gets back, whatever it put in them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cookie(pub u64);

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({:#018x})", self.0)
    }
}

/// A request type (`NBD_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`; *length* bytes of data follow the header.
    Write,
    /// `NBD_CMD_DISC`: the client is done; no reply.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_CACHE`.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS`.
    BlockStatus,
    /// A type this codec does not know (never one of the above), kept so that the server can
    /// answer `NBD_EINVAL`.
    Unknown(u16),
}

impl Command {
    /// The command of a wire type.
    pub const fn from_code(code: u16) -> Self {
        match code {
            NBD_CMD_READ => Self::Read,
            NBD_CMD_WRITE => Self::Write,
            NBD_CMD_DISC => Self::Disc,
            NBD_CMD_FLUSH => Self::Flush,
            NBD_CMD_TRIM => Self::Trim,
            NBD_CMD_CACHE => Self::Cache,
            NBD_CMD_WRITE_ZEROES => Self::WriteZeroes,
            NBD_CMD_BLOCK_STATUS => Self::BlockStatus,
            other => Self::Unknown(other),
        }
    }

    /// The wire type.
    pub const fn code(self) -> u16 {
        match self {
            Self::Read => NBD_CMD_READ,
            Self::Write => NBD_CMD_WRITE,
            Self::Disc => NBD_CMD_DISC,
            Self::Flush => NBD_CMD_FLUSH,
            Self::Trim => NBD_CMD_TRIM,
            Self::Cache => NBD_CMD_CACHE,
            Self::WriteZeroes => NBD_CMD_WRITE_ZEROES,
            Self::BlockStatus => NBD_CMD_BLOCK_STATUS,
            Self::Unknown(code) => code,
        }
    }
}

/// A request header, decoded as sent: unknown commands and flag bits are kept for
/// [`Request::validate`] to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// The command flags.
    pub flags: CommandFlags,
    /// The request type.
    pub command: Command,
    /// The cookie to echo.
    pub cookie: Cookie,
    /// The offset into the export.
    pub offset: u64,
    /// The length the request concerns (for `NBD_CMD_WRITE`, the data that follows).
    pub length: u32,
}

impl Request {
    /// Decodes a request header. Allocates nothing; a wrong magic is
    /// [`ProtoError::BadRequestMagic`], after which the stream cannot be trusted.
    pub fn decode(bytes: &[u8; REQUEST_HEADER_LEN]) -> Result<Self, ProtoError> {
        let magic = u32::from_be_bytes(array(&bytes[0..]));
        if magic != NBD_REQUEST_MAGIC {
            return Err(ProtoError::BadRequestMagic { magic });
        }
        Ok(Self {
            flags: CommandFlags::from_bits_retain(u16::from_be_bytes(array(&bytes[4..]))),
            command: Command::from_code(u16::from_be_bytes(array(&bytes[6..]))),
            cookie: Cookie(u64::from_be_bytes(array(&bytes[8..]))),
            offset: u64::from_be_bytes(array(&bytes[16..])),
            length: u32::from_be_bytes(array(&bytes[24..])),
        })
    }

    /// Decodes a request header from the front of `input`, or says how many more bytes it
    /// needs. The payload of a write is not part of it: see [`Request::payload_len`].
    pub fn parse(input: &[u8]) -> Result<Decoded<Self>, ProtoError> {
        match input.first_chunk::<REQUEST_HEADER_LEN>() {
            Some(bytes) => Ok(Decoded::Complete {
                item: Self::decode(bytes)?,
                consumed: REQUEST_HEADER_LEN,
            }),
            None => Ok(Decoded::Incomplete {
                missing: REQUEST_HEADER_LEN - input.len(),
            }),
        }
    }

    /// Encodes the header, as a client sends it.
    pub fn encode(&self, out: &mut [u8; REQUEST_HEADER_LEN]) {
        out[0..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.bits().to_be_bytes());
        out[6..8].copy_from_slice(&self.command.code().to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.0.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
    }

    /// The bytes of data that follow this header on the wire: *length* for `NBD_CMD_WRITE`,
    /// zero otherwise. The server consumes them before the next header, whether it serves the
    /// request or refuses it.
    pub const fn payload_len(&self) -> u32 {
        match self.command {
            Command::Write => self.length,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: [u8; REQUEST_HEADER_LEN] = *b"\x25\x60\x95\x13\x00\x01\x00\x00\
        \xde\xad\xbe\xef\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x02\x00";

    #[test]
    fn decode_golden_bytes() {
        let request = Request::decode(&READ).unwrap();
        assert_eq!(
            request,
            Request {
                flags: CommandFlags::FUA,
                command: Command::Read,
                cookie: Cookie(0xdead_beef_0102_0304),
                offset: 0x1000,
                length: 0x200,
            }
        );
        let mut bytes = [0; REQUEST_HEADER_LEN];
        request.encode(&mut bytes);
        assert_eq!(bytes, READ);
    }

    #[test]
    fn wrong_magic_is_fatal() {
        let mut bytes = READ;
        bytes[0..4].copy_from_slice(&0x1256_0953_u32.to_be_bytes());
        let error = Request::decode(&bytes).unwrap_err();
        assert_eq!(error, ProtoError::BadRequestMagic { magic: 0x1256_0953 });
        assert!(error.must_close());
    }

    #[test]
    fn unknown_commands_and_flags_are_kept() {
        let mut bytes = READ;
        bytes[4..6].copy_from_slice(&0x8001_u16.to_be_bytes());
        bytes[6..8].copy_from_slice(&8_u16.to_be_bytes());
        let request = Request::decode(&bytes).unwrap();
        assert_eq!(request.command, Command::Unknown(8));
        assert_eq!(request.flags.unknown().bits(), 0x8000);
        let mut again = [0; REQUEST_HEADER_LEN];
        request.encode(&mut again);
        assert_eq!(again, bytes);
    }

    #[test]
    fn cookies_come_back_byte_for_byte() {
        let mut bytes = READ;
        bytes[8..16].copy_from_slice(&[0xff, 0x00, 0x80, 0x7f, 0x01, 0xfe, 0x00, 0x00]);
        let request = Request::decode(&bytes).unwrap();
        assert_eq!(
            request.cookie.0.to_be_bytes(),
            [0xff, 0x00, 0x80, 0x7f, 0x01, 0xfe, 0x00, 0x00]
        );
    }

    #[test]
    fn parse_asks_for_a_whole_header() {
        assert_eq!(
            Request::parse(&READ[..27]),
            Ok(Decoded::Incomplete { missing: 1 })
        );
        assert_eq!(Request::parse(&[]), Ok(Decoded::Incomplete { missing: 28 }));
        let mut input = READ.to_vec();
        input.extend_from_slice(b"next");
        assert!(matches!(
            Request::parse(&input),
            Ok(Decoded::Complete { consumed: 28, .. })
        ));
    }

    #[test]
    fn only_writes_carry_a_payload() {
        let mut request = Request::decode(&READ).unwrap();
        assert_eq!(request.payload_len(), 0);
        request.command = Command::Write;
        assert_eq!(request.payload_len(), 0x200);
        request.command = Command::WriteZeroes;
        assert_eq!(request.payload_len(), 0);
    }

    #[test]
    fn command_codes_are_the_spec_values() {
        for code in 0..=u16::MAX {
            assert_eq!(Command::from_code(code).code(), code);
        }
        assert_eq!(Command::from_code(7), Command::BlockStatus);
        assert_eq!(Command::from_code(8), Command::Unknown(8));
    }
}
