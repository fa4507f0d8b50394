//! The NBD target behind `regio serve`: its protocol codec and its server.
//!
//! [`proto`] is a pure codec for the NBD protocol (`doc/proto.md` of the NBD project): the fixed
//! newstyle handshake as a state machine ([`proto::Handshake`]), transmission requests and their
//! validation, simple and structured replies. It does no I/O and needs no runtime: the server
//! feeds it the bytes it received and writes out the bytes it produces, so it can be tested and
//! fuzzed on its own. [`target`] is the server on the regio runtime: exports in memory or in
//! files and block devices, served over TCP and Unix sockets.
//!
//! A request header is decoded without allocating, checked against what the handshake
//! negotiated, and answered:
//!
//! ```
//! use regio_nbd::proto::{
//!     BlockSizes, Errno, ExportInfo, Negotiated, Request, SimpleReply, TransmissionFlags,
//!     REQUEST_HEADER_LEN, SIMPLE_REPLY_LEN,
//! };
//!
//! // What the handshake settled (normally from `Handshake::advance`).
//! let negotiated = Negotiated {
//!     export: ExportInfo {
//!         name: "disk".into(),
//!         description: String::new(),
//!         size: 1 << 20,
//!         flags: TransmissionFlags::HAS_FLAGS | TransmissionFlags::READ_ONLY,
//!         block_sizes: BlockSizes::DEFAULT,
//!     },
//!     structured_replies: false,
//!     base_allocation: None,
//! };
//!
//! // A write of 512 bytes at offset 0, cookie 0x2a, as received.
//! let header: [u8; REQUEST_HEADER_LEN] = *b"\x25\x60\x95\x13\x00\x00\x00\x01\
//!     \x00\x00\x00\x00\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00";
//! let request = Request::decode(&header)?;
//!
//! // The export is read-only: the write is refused, and its 512 bytes of data must be read
//! // and thrown away before the reply.
//! let refusal = request.validate(&negotiated).unwrap_err();
//! assert_eq!(refusal.errno, Errno::EPERM);
//!
//! let mut reply = [0; SIMPLE_REPLY_LEN];
//! SimpleReply::error(request.cookie, refusal.errno).encode(&mut reply);
//! assert_eq!(reply, *b"\x67\x44\x66\x98\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x2a");
//! # Ok::<(), regio_nbd::proto::ProtoError>(())
//! ```
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod proto;
pub mod target;
