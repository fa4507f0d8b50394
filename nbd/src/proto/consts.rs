//! The protocol's numbers, named as `doc/proto.md` of the NBD project names them.
//!
//! Flag bits are not here: each flag field is a newtype, such as
//! [`TransmissionFlags`](super::TransmissionFlags). All values travel in big-endian byte order.

/// `NBDMAGIC` (also known as `INIT_PASSWD`): the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, sent by the server after [`NBDMAGIC`] and by the client before
/// each option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic that starts every option reply (fixed newstyle).
pub const NBD_OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`: the magic that starts every transmission request.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC` (formerly `NBD_REPLY_MAGIC`).
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`: the magic of each structured reply chunk.
pub const NBD_STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// `NBD_OPT_EXPORT_NAME`: choose an export and enter transmission, with no way to report errors.
pub const NBD_OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`: the client ends the negotiation (soft disconnect).
pub const NBD_OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`: list the exports.
pub const NBD_OPT_LIST: u32 = 3;
/// `NBD_OPT_STARTTLS`: upgrade the connection to TLS.
pub const NBD_OPT_STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`: describe an export without entering transmission.
pub const NBD_OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`: describe an export and enter transmission.
pub const NBD_OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`: use structured replies during transmission.
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`: list metadata contexts.
pub const NBD_OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`: select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_OPT_EXTENDED_HEADERS`: the experimental 64-bit headers extension (refused here).
pub const NBD_OPT_EXTENDED_HEADERS: u32 = 11;

/// `NBD_REP_ACK`: the option succeeded, or a list of replies is complete.
pub const NBD_REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`: one export of an `NBD_OPT_LIST`.
pub const NBD_REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`: one piece of information about an export.
pub const NBD_REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`: one metadata context.
pub const NBD_REP_META_CONTEXT: u32 = 4;
/// Bit 31 marks every error reply type.
pub const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
/// `NBD_REP_ERR_UNSUP`: the option is unknown to this server.
pub const NBD_REP_ERR_UNSUP: u32 = NBD_REP_FLAG_ERROR | 1;
/// `NBD_REP_ERR_POLICY`: the option is forbidden by server policy.
pub const NBD_REP_ERR_POLICY: u32 = NBD_REP_FLAG_ERROR | 2;
/// `NBD_REP_ERR_INVALID`: the option is syntactically or semantically invalid.
pub const NBD_REP_ERR_INVALID: u32 = NBD_REP_FLAG_ERROR | 3;
/// `NBD_REP_ERR_PLATFORM`: the option is not supported on this platform or build.
pub const NBD_REP_ERR_PLATFORM: u32 = NBD_REP_FLAG_ERROR | 4;
/// `NBD_REP_ERR_TLS_REQD`: TLS must be initiated first.
pub const NBD_REP_ERR_TLS_REQD: u32 = NBD_REP_FLAG_ERROR | 5;
/// `NBD_REP_ERR_UNKNOWN`: the requested export is not available.
pub const NBD_REP_ERR_UNKNOWN: u32 = NBD_REP_FLAG_ERROR | 6;
/// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
pub const NBD_REP_ERR_SHUTDOWN: u32 = NBD_REP_FLAG_ERROR | 7;
/// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must request `NBD_INFO_BLOCK_SIZE` first.
pub const NBD_REP_ERR_BLOCK_SIZE_REQD: u32 = NBD_REP_FLAG_ERROR | 8;
/// `NBD_REP_ERR_TOO_BIG`: the request or the reply is too large to process.
pub const NBD_REP_ERR_TOO_BIG: u32 = NBD_REP_FLAG_ERROR | 9;

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const NBD_INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`: the canonical export name.
pub const NBD_INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`: a human-readable description.
pub const NBD_INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

/// `NBD_CMD_READ`.
pub const NBD_CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`: followed by *length* bytes of data.
pub const NBD_CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`: the client disconnects; there is no reply.
pub const NBD_CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const NBD_CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const NBD_CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE`.
pub const NBD_CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;

/// `NBD_REPLY_TYPE_NONE`: the final chunk, with no payload.
pub const NBD_REPLY_TYPE_NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`: an offset followed by data.
pub const NBD_REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`: an offset and the length of a range that reads as zeroes.
pub const NBD_REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`: a context id followed by extent descriptors.
pub const NBD_REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Bit 15 marks every error chunk type.
pub const NBD_REPLY_TYPE_FLAG_ERROR: u16 = 1 << 15;
/// `NBD_REPLY_TYPE_ERROR`: an error and an optional message.
pub const NBD_REPLY_TYPE_ERROR: u16 = NBD_REPLY_TYPE_FLAG_ERROR | 1;
/// `NBD_REPLY_TYPE_ERROR_OFFSET`: an error, an optional message and the offset it concerns.
pub const NBD_REPLY_TYPE_ERROR_OFFSET: u16 = NBD_REPLY_TYPE_FLAG_ERROR | 2;

/// `NBD_EPERM`: operation not permitted.
pub const NBD_EPERM: u32 = 1;
/// `NBD_EIO`: input/output error.
pub const NBD_EIO: u32 = 5;
/// `NBD_ENOMEM`: cannot allocate memory.
pub const NBD_ENOMEM: u32 = 12;
/// `NBD_EINVAL`: invalid argument.
pub const NBD_EINVAL: u32 = 22;
/// `NBD_ENOSPC`: no space left on device.
pub const NBD_ENOSPC: u32 = 28;
/// `NBD_EOVERFLOW`: value too large.
pub const NBD_EOVERFLOW: u32 = 75;
/// `NBD_ENOTSUP`: operation not supported.
pub const NBD_ENOTSUP: u32 = 95;
/// `NBD_ESHUTDOWN`: the server is shutting down.
pub const NBD_ESHUTDOWN: u32 = 108;

/// The longest string the spec allows (export names, queries, messages), in bytes.
pub const MAX_STRING_LEN: usize = 4096;
/// The number of zero bytes that end an `NBD_OPT_EXPORT_NAME` reply unless the client set
/// `NBD_FLAG_C_NO_ZEROES`.
pub const EXPORT_NAME_REPLY_ZEROES: usize = 124;
/// The longest error message the codec sends, in bytes: its own choice, well under the spec's
/// 4096-byte string limit, so that no client truncates or refuses a message.
pub const MAX_ERROR_MESSAGE_LEN: usize = 512;
/// The maximum payload size the spec tells servers to support when none is advertised (2^25).
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 25;
/// The preferred block size the spec gives as the default (2^12).
pub const DEFAULT_PREFERRED_BLOCK: u32 = 1 << 12;
/// The largest minimum block size the spec allows (2^16).
pub const MAX_MINIMUM_BLOCK: u32 = 1 << 16;
/// The most descriptors a server should put in one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk (2^20).
pub const MAX_BLOCK_STATUS_EXTENTS: usize = 1 << 20;
/// `base:allocation`, the one metadata context the spec defines.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The query for the whole `base:` namespace, which lists every context in it.
pub const BASE_NAMESPACE: &str = "base:";
