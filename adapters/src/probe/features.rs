//! The `IORING_FEAT_*` bits the kernel reports when a ring is created.

use io_uring::Parameters;
use serde::Serialize;

/// One feature bit regio cares about, as this kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RingFeature {
    /// The name without the `IORING_FEAT_` prefix.
    pub name: &'static str,
    /// The Linux version that brought it.
    pub since: &'static str,
    /// Whether `io_uring_setup` set the bit.
    pub present: bool,
    /// What regio does without it.
    pub instead: &'static str,
}

/// Reads the feature bits from a ring's setup parameters.
pub(super) fn read(params: &Parameters) -> Vec<RingFeature> {
    vec![
        RingFeature {
            name: "NODROP",
            since: "5.5",
            present: params.is_feature_nodrop(),
            instead: "an overflowing CQ drops completions; regio sizes each CQ so its SQ credits \
                      cannot overflow it, and reports an overflow as an error",
        },
        RingFeature {
            name: "FAST_POLL",
            since: "5.7",
            present: params.is_feature_fast_poll(),
            instead: "socket operations that would block are handed to io-wq threads (slower)",
        },
        RingFeature {
            name: "EXT_ARG",
            since: "5.11",
            present: params.is_feature_ext_arg(),
            instead: "bounded waits submit a TIMEOUT instead of passing one to io_uring_enter",
        },
    ]
}
