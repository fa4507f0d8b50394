//! Simple replies: a 16-byte header, followed by the data of a successful read.

use super::consts::NBD_SIMPLE_REPLY_MAGIC;
use super::errno::Errno;
use super::error::ProtoError;
use super::request::Cookie;
use super::wire::array;

/// The size of a simple reply header: magic, error, cookie.
pub const SIMPLE_REPLY_LEN: usize = 16;

/// A simple reply. After a successful `NBD_CMD_READ`, the read's data follows it; the server
/// sends that from its own buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimpleReply {
    /// The cookie of the request answered.
    pub cookie: Cookie,
    /// The error, or `None` for success.
    pub error: Option<Errno>,
}

impl SimpleReply {
    /// A success.
    pub const fn ok(cookie: Cookie) -> Self {
        Self {
            cookie,
            error: None,
        }
    }

    /// A failure.
    pub const fn error(cookie: Cookie, errno: Errno) -> Self {
        Self {
            cookie,
            error: Some(errno),
        }
    }

    /// Encodes the header. Allocates nothing.
    pub fn encode(&self, out: &mut [u8; SIMPLE_REPLY_LEN]) {
        let error = self.error.map_or(0, Errno::code);
        out[0..4].copy_from_slice(&NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&error.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.0.to_be_bytes());
    }

    /// Decodes a header (client side); an error value the spec does not define reads as
    /// `NBD_EINVAL`, as the spec tells clients.
    pub fn decode(bytes: &[u8; SIMPLE_REPLY_LEN]) -> Result<Self, ProtoError> {
        let magic = u32::from_be_bytes(array(&bytes[0..]));
        if magic != NBD_SIMPLE_REPLY_MAGIC {
            return Err(ProtoError::BadReplyMagic { magic });
        }
        Ok(Self {
            error: Errno::from_code(u32::from_be_bytes(array(&bytes[4..]))),
            cookie: Cookie(u64::from_be_bytes(array(&bytes[8..]))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let mut bytes = [0; SIMPLE_REPLY_LEN];
        SimpleReply::ok(Cookie(0x0102_0304_0506_0708)).encode(&mut bytes);
        assert_eq!(
            bytes,
            *b"\x67\x44\x66\x98\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"
        );
        SimpleReply::error(Cookie(u64::MAX), Errno::ENOSPC).encode(&mut bytes);
        assert_eq!(
            bytes,
            *b"\x67\x44\x66\x98\x00\x00\x00\x1c\xff\xff\xff\xff\xff\xff\xff\xff"
        );
    }

    #[test]
    fn round_trip() {
        for reply in [
            SimpleReply::ok(Cookie(7)),
            SimpleReply::error(Cookie(9), Errno::EIO),
        ] {
            let mut bytes = [0; SIMPLE_REPLY_LEN];
            reply.encode(&mut bytes);
            assert_eq!(SimpleReply::decode(&bytes), Ok(reply));
        }
    }

    #[test]
    fn wrong_magic_is_fatal() {
        let bytes = [0; SIMPLE_REPLY_LEN];
        assert_eq!(
            SimpleReply::decode(&bytes),
            Err(ProtoError::BadReplyMagic { magic: 0 })
        );
    }
}
