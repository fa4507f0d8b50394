//! The server side of a fixed newstyle handshake as a pure state machine: bytes in, reply bytes
//! out, until transmission begins or the client leaves.

use super::consts::{BASE_ALLOCATION, BASE_NAMESPACE};
use super::consts::{
    NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_NAME, NBD_OPT_GO, NBD_OPT_INFO,
};
use super::error::ProtoError;
use super::export::{BlockSizes, ExportCatalogue, ExportInfo, Negotiated};
use super::flags::ClientFlags;
use super::greeting::{decode_client_flags, greeting, CLIENT_FLAGS_LEN};
use super::option::{
    ClientOption, ExportRequest, MetaContextRequest, OptionHeader, OPTION_HEADER_LEN,
};
use super::option_reply::{encode_export_name_reply, Info, OptionReply, OptionReplyError};
use super::Decoded;

/// How many options one handshake may send before the server drops the connection.
pub const DEFAULT_MAX_OPTIONS: u32 = 64;

/// The id `NBD_OPT_SET_META_CONTEXT` gives `base:allocation` (list replies use zero, as the
/// spec asks).
pub const BASE_ALLOCATION_ID: u32 = 1;

/// What the caller does after [`Handshake::advance`]. Reply bytes, if any, were appended to
/// `out` and are to be sent in order before anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing was consumed: call again once the input holds at least `missing` more bytes. A
    /// whole option is needed at once, so the input may have to hold up to
    /// [`OPTION_HEADER_LEN`] + [`MAX_OPTION_LEN`](super::MAX_OPTION_LEN) bytes.
    Incomplete {
        /// The bytes still missing.
        missing: usize,
    },
    /// `consumed` bytes of input were used: drop them, and call again with the rest.
    Continue {
        /// The bytes used.
        consumed: usize,
    },
    /// The handshake is over and transmission begins after `consumed` bytes of input: send the
    /// reply, then serve requests as `negotiated` says.
    Transmission {
        /// The bytes used.
        consumed: usize,
        /// What was negotiated.
        negotiated: Negotiated,
    },
    /// The client sent `NBD_OPT_ABORT`: send the acknowledgement, then close.
    Abort {
        /// The bytes used.
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Discarding { option: u32, remaining: u32 },
    Ended,
}

/// A server handshake in progress.
///
/// It speaks fixed newstyle with `NO_ZEROES` and no TLS (`NBD_OPT_STARTTLS` is answered
/// `NBD_REP_ERR_UNSUP`). It tracks what the client negotiated: whether it asked for no zeroes,
/// structured replies, and the `base:allocation` metadata context (and for which export). It
/// answers at most [`DEFAULT_MAX_OPTIONS`] options (or the limit given) and then closes.
/// Every error [`Handshake::advance`] returns closes the connection; options that are merely
/// bad are answered with an error reply and the handshake goes on.
#[derive(Debug, Clone)]
pub struct Handshake {
    phase: Phase,
    max_options: u32,
    options_seen: u32,
    no_zeroes: bool,
    structured_replies: bool,
    /// The canonical name of the export `base:allocation` was selected for, if any.
    meta_context_export: Option<String>,
}

impl Handshake {
    /// Starts a handshake: appends the greeting to `out`, to be sent as soon as the client
    /// connects.
    pub fn start(out: &mut Vec<u8>) -> Self {
        Self::start_with_limit(DEFAULT_MAX_OPTIONS, out)
    }

    /// Starts a handshake that allows `max_options` options.
    pub fn start_with_limit(max_options: u32, out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(&greeting());
        Self {
            phase: Phase::ClientFlags,
            max_options,
            options_seen: 0,
            no_zeroes: false,
            structured_replies: false,
            meta_context_export: None,
        }
    }

    /// Consumes the next message at the front of `input` (client flags, an option, or part of
    /// an oversized option being discarded), appends any reply to `out`, and says what to do
    /// next. `exports` answers the lookups of `NBD_OPT_EXPORT_NAME`, `NBD_OPT_INFO`,
    /// `NBD_OPT_GO`, `NBD_OPT_LIST` and the meta context options.
    ///
    /// An error means the connection must close (after sending what `out` holds);
    /// the handshake is then over.
    pub fn advance<C: ExportCatalogue + ?Sized>(
        &mut self,
        input: &[u8],
        exports: &C,
        out: &mut Vec<u8>,
    ) -> Result<Step, ProtoError> {
        let step = match self.phase {
            Phase::ClientFlags => self.client_flags(input),
            Phase::Options => self.option(input, exports, out),
            Phase::Discarding { option, remaining } => {
                Ok(self.discard(option, remaining, input, out))
            }
            Phase::Ended => Err(ProtoError::HandshakeOver),
        };
        if matches!(
            step,
            Err(_) | Ok(Step::Transmission { .. } | Step::Abort { .. })
        ) {
            self.phase = Phase::Ended;
        }
        step
    }

    fn client_flags(&mut self, input: &[u8]) -> Result<Step, ProtoError> {
        let Some(bytes) = input.first_chunk::<CLIENT_FLAGS_LEN>() else {
            return Ok(Step::Incomplete {
                missing: CLIENT_FLAGS_LEN - input.len(),
            });
        };
        let flags = decode_client_flags(bytes)?;
        self.no_zeroes = flags.contains(ClientFlags::C_NO_ZEROES);
        self.phase = Phase::Options;
        Ok(Step::Continue {
            consumed: CLIENT_FLAGS_LEN,
        })
    }

    fn count_option(&mut self) -> Result<(), ProtoError> {
        self.options_seen += 1;
        if self.options_seen > self.max_options {
            return Err(ProtoError::TooManyOptions {
                limit: self.max_options,
            });
        }
        Ok(())
    }

    fn discard(&mut self, option: u32, remaining: u32, input: &[u8], out: &mut Vec<u8>) -> Step {
        if input.is_empty() {
            return Step::Incomplete { missing: 1 };
        }
        let consumed = input.len().min(remaining as usize);
        let remaining = remaining - consumed as u32;
        if remaining == 0 {
            let message = "the option is larger than this server accepts";
            OptionReply::Error {
                error: OptionReplyError::TooBig,
                message,
            }
            .encode(option, out);
            self.phase = Phase::Options;
        } else {
            self.phase = Phase::Discarding { option, remaining };
        }
        Step::Continue { consumed }
    }

    fn option<C: ExportCatalogue + ?Sized>(
        &mut self,
        input: &[u8],
        exports: &C,
        out: &mut Vec<u8>,
    ) -> Result<Step, ProtoError> {
        let header = match OptionHeader::parse(input) {
            Ok(Decoded::Complete { item, .. }) => item,
            Ok(Decoded::Incomplete { missing }) => return Ok(Step::Incomplete { missing }),
            Err(too_big @ ProtoError::OptionTooBig { option, length }) => {
                self.count_option()?;
                if too_big.must_close() {
                    return Err(too_big);
                }
                self.phase = Phase::Discarding {
                    option,
                    remaining: length,
                };
                return Ok(Step::Continue {
                    consumed: OPTION_HEADER_LEN,
                });
            }
            Err(error) => return Err(error),
        };
        let consumed = OPTION_HEADER_LEN + header.length as usize;
        let Some(data) = input.get(OPTION_HEADER_LEN..consumed) else {
            return Ok(Step::Incomplete {
                missing: consumed - input.len(),
            });
        };
        self.count_option()?;
        match ClientOption::decode(header.option, data) {
            Ok(option) => self.answer(option, consumed, exports, out),
            Err(error) => {
                let Some(reply) = error.reply_code() else {
                    return Err(error);
                };
                let message = error.to_string();
                OptionReply::Error {
                    error: reply,
                    message: &message,
                }
                .encode(header.option, out);
                Ok(Step::Continue { consumed })
            }
        }
    }

    fn answer<C: ExportCatalogue + ?Sized>(
        &mut self,
        option: ClientOption,
        consumed: usize,
        exports: &C,
        out: &mut Vec<u8>,
    ) -> Result<Step, ProtoError> {
        let code = option.code();
        let refuse = |error, message: &str, out: &mut Vec<u8>| {
            OptionReply::Error { error, message }.encode(code, out);
        };
        match option {
            ClientOption::ExportName(name) => {
                let Some(export) = exports.lookup(&name) else {
                    return Err(ProtoError::UnknownExport { name });
                };
                let negotiated = self.negotiated(export);
                let export = &negotiated.export;
                encode_export_name_reply(export.size, export.flags, self.no_zeroes, out);
                return Ok(Step::Transmission {
                    consumed,
                    negotiated,
                });
            }
            ClientOption::Abort => {
                OptionReply::Ack.encode(code, out);
                return Ok(Step::Abort { consumed });
            }
            ClientOption::List => {
                for export in exports.list() {
                    let (name, description) = (&export.name, &export.description);
                    OptionReply::Server { name, description }.encode(code, out);
                }
                OptionReply::Ack.encode(code, out);
            }
            ClientOption::StartTls => refuse(OptionReplyError::Unsup, "TLS is not supported", out),
            ClientOption::Info(request) | ClientOption::Go(request) => {
                if let Some(export) = self.describe(code, &request, exports, out) {
                    if code == NBD_OPT_GO {
                        let negotiated = self.negotiated(export);
                        return Ok(Step::Transmission {
                            consumed,
                            negotiated,
                        });
                    }
                }
            }
            ClientOption::StructuredReply if self.structured_replies => {
                refuse(
                    OptionReplyError::Invalid,
                    "structured replies are already negotiated",
                    out,
                );
            }
            ClientOption::StructuredReply => {
                self.structured_replies = true;
                OptionReply::Ack.encode(code, out);
            }
            ClientOption::ListMetaContext(request) => {
                self.meta_context(code, &request, false, exports, out);
            }
            ClientOption::SetMetaContext(request) => {
                self.meta_context(code, &request, true, exports, out);
            }
            ClientOption::ExtendedHeaders | ClientOption::Unknown(_) => {
                refuse(OptionReplyError::Unsup, "this option is not supported", out);
            }
        }
        Ok(Step::Continue { consumed })
    }

    /// Answers `NBD_OPT_INFO` or `NBD_OPT_GO`: the information replies and the final `ACK`, or
    /// `NBD_REP_ERR_UNKNOWN`. Returns the export on success.
    fn describe<C: ExportCatalogue + ?Sized>(
        &self,
        code: u32,
        request: &ExportRequest,
        exports: &C,
        out: &mut Vec<u8>,
    ) -> Option<ExportInfo> {
        debug_assert!(code == NBD_OPT_INFO || code == NBD_OPT_GO);
        let Some(export) = exports.lookup(&request.name) else {
            let message = format!("no export named {:?}", request.name);
            OptionReply::Error {
                error: OptionReplyError::Unknown,
                message: &message,
            }
            .encode(code, out);
            return None;
        };
        let asked = |info| request.info_requests.contains(&info);
        let flags = export.advertised_flags(self.structured_replies);
        OptionReply::Info(Info::Export {
            size: export.size,
            flags,
        })
        .encode(code, out);
        if asked(NBD_INFO_NAME) {
            OptionReply::Info(Info::Name(&export.name)).encode(code, out);
        }
        if asked(NBD_INFO_DESCRIPTION) && !export.description.is_empty() {
            OptionReply::Info(Info::Description(&export.description)).encode(code, out);
        }
        // Constraints other than the defaults are worth telling a client that did not ask.
        if asked(NBD_INFO_BLOCK_SIZE) || export.block_sizes != BlockSizes::DEFAULT {
            OptionReply::Info(Info::BlockSize(export.block_sizes)).encode(code, out);
        }
        OptionReply::Ack.encode(code, out);
        Some(export)
    }

    /// Answers `NBD_OPT_LIST_META_CONTEXT` (`set` false) or `NBD_OPT_SET_META_CONTEXT`. Only
    /// `base:allocation` exists; queries in other namespaces, or for other `base:` leaves, match
    /// nothing. A set replaces the selection even when it fails, as the spec says.
    fn meta_context<C: ExportCatalogue + ?Sized>(
        &mut self,
        code: u32,
        request: &MetaContextRequest,
        set: bool,
        exports: &C,
        out: &mut Vec<u8>,
    ) {
        if set {
            self.meta_context_export = None;
        }
        let refuse = |error, message: &str, out: &mut Vec<u8>| {
            OptionReply::Error { error, message }.encode(code, out);
        };
        if !self.structured_replies {
            return refuse(
                OptionReplyError::Invalid,
                "negotiate structured replies first",
                out,
            );
        }
        let Some(export) = exports.lookup(&request.export) else {
            return refuse(OptionReplyError::Unknown, "no such export", out);
        };
        let queried = |name: &str| request.queries.iter().any(|query| query == name);
        let matches = if set {
            queried(BASE_ALLOCATION)
        } else {
            request.queries.is_empty() || queried(BASE_ALLOCATION) || queried(BASE_NAMESPACE)
        };
        if matches {
            let id = if set { BASE_ALLOCATION_ID } else { 0 };
            OptionReply::MetaContext {
                id,
                name: BASE_ALLOCATION,
            }
            .encode(code, out);
            if set {
                self.meta_context_export = Some(export.name);
            }
        }
        OptionReply::Ack.encode(code, out);
    }

    /// What transmission on `export` runs with, given what was negotiated so far.
    fn negotiated(&self, export: ExportInfo) -> Negotiated {
        let flags = export.advertised_flags(self.structured_replies);
        let selected = self.meta_context_export.as_deref() == Some(export.name.as_str());
        Negotiated {
            base_allocation: (selected && self.structured_replies).then_some(BASE_ALLOCATION_ID),
            structured_replies: self.structured_replies,
            export: ExportInfo { flags, ..export },
        }
    }
}
