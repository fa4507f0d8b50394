//! What the server offers (exports and their size constraints) and what a handshake settles.

use super::consts::{DEFAULT_MAX_PAYLOAD, DEFAULT_PREFERRED_BLOCK, MAX_MINIMUM_BLOCK};
use super::flags::TransmissionFlags;

/// An export's size constraints, as `NBD_INFO_BLOCK_SIZE` advertises them.
///
/// Always valid by construction: the minimum is a power of two no larger than 64 KiB, the
/// preferred size a power of two at least the minimum and at least 512, the maximum payload at
/// least the preferred size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSizes {
    minimum: u32,
    preferred: u32,
    maximum: u32,
}

impl BlockSizes {
    /// The spec's defaults when nothing is advertised: minimum 1, preferred 4096, maximum
    /// payload 2^25.
    pub const DEFAULT: Self = Self {
        minimum: 1,
        preferred: DEFAULT_PREFERRED_BLOCK,
        maximum: DEFAULT_MAX_PAYLOAD,
    };

    /// Checks the spec's rules; `None` if the three sizes break one.
    pub const fn new(minimum: u32, preferred: u32, maximum: u32) -> Option<Self> {
        let minimum_ok = minimum.is_power_of_two() && minimum <= MAX_MINIMUM_BLOCK;
        let preferred_ok = preferred.is_power_of_two() && preferred >= minimum && preferred >= 512;
        if minimum_ok && preferred_ok && maximum >= preferred {
            Some(Self {
                minimum,
                preferred,
                maximum,
            })
        } else {
            None
        }
    }

    /// The minimum block size: offsets and lengths must be multiples of it.
    pub const fn minimum(&self) -> u32 {
        self.minimum
    }

    /// The preferred block size.
    pub const fn preferred(&self) -> u32 {
        self.preferred
    }

    /// The maximum payload of a read or write request.
    pub const fn maximum(&self) -> u32 {
        self.maximum
    }
}

impl Default for BlockSizes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One export, as the server's catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The canonical name (a spec string: UTF-8, no `NUL`, at most 4096 bytes).
    pub name: String,
    /// A description for people, or empty.
    pub description: String,
    /// The size in bytes.
    pub size: u64,
    /// The transmission flags the export supports; the handshake adjusts them to what was
    /// negotiated ([`ExportInfo::advertised_flags`]).
    pub flags: TransmissionFlags,
    /// The size constraints.
    pub block_sizes: BlockSizes,
}

impl ExportInfo {
    /// The transmission flags to send for this export: [`Self::flags`] with `HAS_FLAGS` set and
    /// without what the spec forbids here. `SEND_DF` needs structured replies, `SEND_FAST_ZERO`
    /// needs `SEND_WRITE_ZEROES`, and `SEND_RESIZE` and `BLOCK_STATUS_PAYLOAD` belong to
    /// extensions this codec does not speak.
    pub fn advertised_flags(&self, structured_replies: bool) -> TransmissionFlags {
        let mut flags = self.flags | TransmissionFlags::HAS_FLAGS;
        flags = flags.difference(TransmissionFlags::SEND_RESIZE);
        flags = flags.difference(TransmissionFlags::BLOCK_STATUS_PAYLOAD);
        if !structured_replies {
            flags = flags.difference(TransmissionFlags::SEND_DF);
        }
        if !flags.contains(TransmissionFlags::SEND_WRITE_ZEROES) {
            flags = flags.difference(TransmissionFlags::SEND_FAST_ZERO);
        }
        flags
    }
}

/// The exports a server offers, as the handshake looks them up.
pub trait ExportCatalogue {
    /// The export the client names; the empty name means the default export, if there is one.
    fn lookup(&self, name: &str) -> Option<ExportInfo>;

    /// Every export to show in answer to `NBD_OPT_LIST`.
    fn list(&self) -> Vec<ExportInfo>;
}

/// A fixed list of exports, found by exact name; the first one is the default export.
impl ExportCatalogue for [ExportInfo] {
    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        if name.is_empty() {
            return self.first().cloned();
        }
        self.iter().find(|export| export.name == name).cloned()
    }

    fn list(&self) -> Vec<ExportInfo> {
        self.to_vec()
    }
}

/// What a handshake settled for the transmission phase, which
/// [`Request::validate`](super::Request::validate) checks requests against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The export, its flags as they were sent to the client.
    pub export: ExportInfo,
    /// Whether structured replies were negotiated.
    pub structured_replies: bool,
    /// The id of the `base:allocation` metadata context if the client selected it for this
    /// export; `NBD_CMD_BLOCK_STATUS` is refused without it.
    pub base_allocation: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(name: &str, flags: TransmissionFlags) -> ExportInfo {
        ExportInfo {
            name: name.into(),
            description: String::new(),
            size: 1 << 20,
            flags,
            block_sizes: BlockSizes::DEFAULT,
        }
    }

    #[test]
    fn block_sizes_follow_the_spec_rules() {
        assert_eq!(BlockSizes::new(1, 4096, 1 << 25), Some(BlockSizes::DEFAULT));
        assert!(BlockSizes::new(512, 512, 512).is_some());
        assert!(BlockSizes::new(4096, 4096, 0xffff_ffff).is_some());
        assert!(BlockSizes::new(0, 4096, 1 << 25).is_none());
        assert!(BlockSizes::new(3, 4096, 1 << 25).is_none());
        assert!(BlockSizes::new(1 << 17, 1 << 17, 1 << 25).is_none());
        assert!(BlockSizes::new(1, 256, 1 << 25).is_none());
        assert!(BlockSizes::new(4096, 2048, 1 << 25).is_none());
        assert!(BlockSizes::new(1, 4096, 4095).is_none());
        assert!(BlockSizes::new(1, 4096, 5000).is_some());
    }

    #[test]
    fn advertised_flags_drop_what_was_not_negotiated() {
        let all = export(
            "disk",
            TransmissionFlags::KNOWN.difference(TransmissionFlags::HAS_FLAGS),
        );
        let plain = all.advertised_flags(false);
        assert!(plain.contains(TransmissionFlags::HAS_FLAGS | TransmissionFlags::SEND_FAST_ZERO));
        assert!(!plain.contains(TransmissionFlags::SEND_DF));
        assert!(!plain.contains(TransmissionFlags::SEND_RESIZE));
        assert!(!plain.contains(TransmissionFlags::BLOCK_STATUS_PAYLOAD));
        assert!(all
            .advertised_flags(true)
            .contains(TransmissionFlags::SEND_DF));

        let fast_zero_alone = export("disk", TransmissionFlags::SEND_FAST_ZERO);
        assert_eq!(
            fast_zero_alone.advertised_flags(true),
            TransmissionFlags::HAS_FLAGS
        );
    }

    #[test]
    fn a_list_catalogue_has_a_default_export() {
        let exports = [
            export("first", TransmissionFlags::empty()),
            export("second", TransmissionFlags::empty()),
        ];
        assert_eq!(
            exports.lookup("").map(|export| export.name),
            Some("first".into())
        );
        assert_eq!(
            exports.lookup("second").map(|export| export.name),
            Some("second".into())
        );
        assert_eq!(exports.lookup("third"), None);
        assert_eq!(exports.list().len(), 2);
        let none: [ExportInfo; 0] = [];
        assert_eq!(none.lookup(""), None);
    }
}
