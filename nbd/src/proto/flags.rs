//! The protocol's flag fields, one small bit-set newtype each.
//!
//! Unknown bits are kept, not dropped: the server must see that a client set a flag it does not
//! know (client flags close the connection, command flags earn `NBD_EINVAL`).

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// Defines a bit-set newtype over an unsigned integer, with one associated constant per flag.
macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($bits:ty) {
            $(
                $(#[$flag_meta:meta])*
                const $flag:ident = $value:expr;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name($bits);

        impl $name {
            $(
                $(#[$flag_meta])*
                pub const $flag: Self = Self($value);
            )*
            /// Every flag this type names.
            pub const KNOWN: Self = Self(0 $(| $value)*);
            const NAMES: &'static [(&'static str, $bits)] = &[$((stringify!($flag), $value)),*];

            /// No flag set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// The flags of raw wire bits, unknown bits included.
            pub const fn from_bits_retain(bits: $bits) -> Self {
                Self(bits)
            }

            /// The raw bits, as sent on the wire.
            pub const fn bits(self) -> $bits {
                self.0
            }

            /// Whether no bit is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// Whether every bit of `other` is set here.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// The bits set here that this type does not name.
            pub const fn unknown(self) -> Self {
                Self(self.0 & !Self::KNOWN.0)
            }

            /// These bits and those of `other`.
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// These bits without those of `other`.
            pub const fn difference(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }
        }

        impl BitOr for $name {
            type Output = Self;

            fn bitor(self, other: Self) -> Self {
                self.union(other)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, other: Self) {
                self.0 |= other.0;
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut separator = "";
                for (name, value) in Self::NAMES {
                    if self.0 & value != 0 {
                        write!(f, "{separator}{name}")?;
                        separator = " | ";
                    }
                }
                if !self.unknown().is_empty() {
                    write!(f, "{separator}{:#x}", self.unknown().0)?;
                }
                write!(f, ")")
            }
        }
    };
}

flag_set! {
    /// The 16-bit handshake flags the server sends in its greeting.
    pub struct HandshakeFlags(u16) {
        /// `NBD_FLAG_FIXED_NEWSTYLE` (bit 0): the server speaks fixed newstyle.
        const FIXED_NEWSTYLE = 1 << 0;
        /// `NBD_FLAG_NO_ZEROES` (bit 1): the client may ask to skip the 124 zero bytes.
        const NO_ZEROES = 1 << 1;
    }
}

flag_set! {
    /// The 32-bit client flags the client answers the greeting with.
    pub struct ClientFlags(u32) {
        /// `NBD_FLAG_C_FIXED_NEWSTYLE` (bit 0): the client speaks fixed newstyle.
        const C_FIXED_NEWSTYLE = 1 << 0;
        /// `NBD_FLAG_C_NO_ZEROES` (bit 1): no 124 zero bytes after an `NBD_OPT_EXPORT_NAME` reply.
        const C_NO_ZEROES = 1 << 1;
    }
}

flag_set! {
    /// The 16-bit transmission flags that describe an export and the features it exposes.
    pub struct TransmissionFlags(u16) {
        /// `NBD_FLAG_HAS_FLAGS` (bit 0): always set.
        const HAS_FLAGS = 1 << 0;
        /// `NBD_FLAG_READ_ONLY` (bit 1): writes are refused.
        const READ_ONLY = 1 << 1;
        /// `NBD_FLAG_SEND_FLUSH` (bit 2): `NBD_CMD_FLUSH` is supported.
        const SEND_FLUSH = 1 << 2;
        /// `NBD_FLAG_SEND_FUA` (bit 3): `NBD_CMD_FLAG_FUA` is supported.
        const SEND_FUA = 1 << 3;
        /// `NBD_FLAG_ROTATIONAL` (bit 4): the export behaves like a rotational medium.
        const ROTATIONAL = 1 << 4;
        /// `NBD_FLAG_SEND_TRIM` (bit 5): `NBD_CMD_TRIM` is supported.
        const SEND_TRIM = 1 << 5;
        /// `NBD_FLAG_SEND_WRITE_ZEROES` (bit 6): `NBD_CMD_WRITE_ZEROES` and
        /// `NBD_CMD_FLAG_NO_HOLE` are supported.
        const SEND_WRITE_ZEROES = 1 << 6;
        /// `NBD_FLAG_SEND_DF` (bit 7): `NBD_CMD_FLAG_DF` is supported (structured replies only).
        const SEND_DF = 1 << 7;
        /// `NBD_FLAG_CAN_MULTI_CONN` (bit 8): flushes are visible across connections.
        const CAN_MULTI_CONN = 1 << 8;
        /// `NBD_FLAG_SEND_RESIZE` (bit 9): the experimental `RESIZE` extension.
        const SEND_RESIZE = 1 << 9;
        /// `NBD_FLAG_SEND_CACHE` (bit 10): `NBD_CMD_CACHE` is understood.
        const SEND_CACHE = 1 << 10;
        /// `NBD_FLAG_SEND_FAST_ZERO` (bit 11): `NBD_CMD_FLAG_FAST_ZERO` is supported.
        const SEND_FAST_ZERO = 1 << 11;
        /// `NBD_FLAG_BLOCK_STATUS_PAYLOAD` (bit 12): the experimental `EXTENDED_HEADERS`
        /// extension.
        const BLOCK_STATUS_PAYLOAD = 1 << 12;
    }
}

flag_set! {
    /// The 16-bit command flags of a transmission request.
    pub struct CommandFlags(u16) {
        /// `NBD_CMD_FLAG_FUA` (bit 0): persist before replying.
        const FUA = 1 << 0;
        /// `NBD_CMD_FLAG_NO_HOLE` (bit 1): `NBD_CMD_WRITE_ZEROES` must not punch a hole.
        const NO_HOLE = 1 << 1;
        /// `NBD_CMD_FLAG_DF` (bit 2): at most one content chunk in the reply to `NBD_CMD_READ`.
        const DF = 1 << 2;
        /// `NBD_CMD_FLAG_REQ_ONE` (bit 3): one extent per context in `NBD_CMD_BLOCK_STATUS`.
        const REQ_ONE = 1 << 3;
        /// `NBD_CMD_FLAG_FAST_ZERO` (bit 4): fail `NBD_CMD_WRITE_ZEROES` unless it is fast.
        const FAST_ZERO = 1 << 4;
        /// `NBD_CMD_FLAG_PAYLOAD_LEN` (bit 5): the experimental `EXTENDED_HEADERS` extension.
        const PAYLOAD_LEN = 1 << 5;
    }
}

flag_set! {
    /// The 16-bit flags of a structured reply chunk.
    pub struct ReplyFlags(u16) {
        /// `NBD_REPLY_FLAG_DONE` (bit 0): the last chunk of the reply.
        const DONE = 1 << 0;
    }
}

flag_set! {
    /// The 32-bit status flags of a `base:allocation` extent.
    pub struct BlockStatusFlags(u32) {
        /// `NBD_STATE_HOLE` (bit 0): the extent is not allocated.
        const HOLE = 1 << 0;
        /// `NBD_STATE_ZERO` (bit 1): the extent reads as zeroes.
        const ZERO = 1 << 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_bits_are_kept_and_reported() {
        let flags = CommandFlags::from_bits_retain(0x8001);
        assert!(flags.contains(CommandFlags::FUA));
        assert_eq!(flags.unknown().bits(), 0x8000);
        assert_eq!(flags.bits(), 0x8001);
        assert_eq!(format!("{flags:?}"), "CommandFlags(FUA | 0x8000)");
    }

    #[test]
    fn known_is_the_union_of_the_named_flags() {
        assert_eq!(TransmissionFlags::KNOWN.bits(), 0x1fff);
        assert_eq!(CommandFlags::KNOWN.bits(), 0x3f);
        assert_eq!(ClientFlags::KNOWN.bits(), 0x3);
    }

    #[test]
    fn union_and_difference() {
        let both = HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES;
        assert_eq!(both.bits(), 3);
        assert_eq!(
            both.difference(HandshakeFlags::NO_ZEROES),
            HandshakeFlags::FIXED_NEWSTYLE
        );
        let mut flags = ReplyFlags::empty();
        flags |= ReplyFlags::DONE;
        assert!(flags.contains(ReplyFlags::DONE) && !flags.is_empty());
    }
}
