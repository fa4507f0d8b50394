//! The start of a fixed newstyle handshake: the server's greeting and the client's flags.

use super::consts::{IHAVEOPT, NBDMAGIC};
use super::error::ProtoError;
use super::flags::{ClientFlags, HandshakeFlags};

/// The size of the greeting: `NBDMAGIC`, `IHAVEOPT`, 16-bit handshake flags.
pub const GREETING_LEN: usize = 18;

/// The size of the client flags field.
pub const CLIENT_FLAGS_LEN: usize = 4;

/// The handshake flags this server sends: `FIXED_NEWSTYLE | NO_ZEROES`.
pub const SERVER_HANDSHAKE_FLAGS: HandshakeFlags =
    HandshakeFlags::FIXED_NEWSTYLE.union(HandshakeFlags::NO_ZEROES);

/// The greeting the server sends as soon as a client connects.
pub const fn greeting() -> [u8; GREETING_LEN] {
    let mut bytes = [0; GREETING_LEN];
    let magic = NBDMAGIC.to_be_bytes();
    let option_magic = IHAVEOPT.to_be_bytes();
    let flags = SERVER_HANDSHAKE_FLAGS.bits().to_be_bytes();
    let mut i = 0;
    while i < 8 {
        bytes[i] = magic[i];
        bytes[8 + i] = option_magic[i];
        i += 1;
    }
    bytes[16] = flags[0];
    bytes[17] = flags[1];
    bytes
}

/// Decodes the client flags that answer the greeting. A flag this server did not offer is
/// [`ProtoError::UnknownClientFlags`]: the spec says to drop the connection.
pub fn decode_client_flags(bytes: &[u8; CLIENT_FLAGS_LEN]) -> Result<ClientFlags, ProtoError> {
    let flags = ClientFlags::from_bits_retain(u32::from_be_bytes(*bytes));
    if flags.unknown().is_empty() {
        Ok(flags)
    } else {
        Err(ProtoError::UnknownClientFlags { flags })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_golden_bytes() {
        assert_eq!(greeting(), *b"NBDMAGICIHAVEOPT\x00\x03");
    }

    #[test]
    fn known_client_flags_are_accepted() {
        assert_eq!(decode_client_flags(&[0, 0, 0, 0]), Ok(ClientFlags::empty()));
        assert_eq!(
            decode_client_flags(&[0, 0, 0, 3]),
            Ok(ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES)
        );
    }

    #[test]
    fn unknown_client_flags_close_the_connection() {
        let error = decode_client_flags(&[0x80, 0, 0, 1]).unwrap_err();
        assert_eq!(
            error,
            ProtoError::UnknownClientFlags {
                flags: ClientFlags::from_bits_retain(0x8000_0001)
            }
        );
        assert!(error.must_close());
    }
}
