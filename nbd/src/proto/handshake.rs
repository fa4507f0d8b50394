//! The server side of a fixed newstyle handshake as a pure state machine: bytes in, reply bytes
//! out, until transmission begins or the client leaves.

use super::consts::{
    BASE_ALLOCATION, BASE_NAMESPACE, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_NAME,
    NBD_OPT_GO, NBD_OPT_INFO,
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
        self.options_seen = self.options_seen.saturating_add(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::{
        NBD_INFO_EXPORT, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_LIST,
        NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STRUCTURED_REPLY,
    };
    use crate::proto::flags::TransmissionFlags;
    use crate::proto::option::MAX_OPTION_LEN;
    use crate::proto::option_reply::{OptionReplyHeader, OPTION_REPLY_HEADER_LEN};
    use crate::proto::wire::array;

    const FLAGS: TransmissionFlags = TransmissionFlags::SEND_FLUSH
        .union(TransmissionFlags::SEND_FUA)
        .union(TransmissionFlags::SEND_DF);

    fn exports() -> Vec<ExportInfo> {
        let export = |name: &str, description: &str, block_sizes| ExportInfo {
            name: name.into(),
            description: description.into(),
            size: 1 << 30,
            flags: FLAGS,
            block_sizes,
        };
        vec![
            export("disk", "the first disk", BlockSizes::DEFAULT),
            export("aligned", "", BlockSizes::new(4096, 4096, 1 << 25).unwrap()),
        ]
    }

    /// A handshake past its client flags (`C_FIXED_NEWSTYLE | C_NO_ZEROES` unless told).
    fn started(client_flags: u32) -> Handshake {
        let mut greeting = Vec::new();
        let mut handshake = Handshake::start(&mut greeting);
        assert_eq!(greeting, *b"NBDMAGICIHAVEOPT\x00\x03");
        let step = handshake.advance(
            &client_flags.to_be_bytes(),
            exports().as_slice(),
            &mut Vec::new(),
        );
        assert_eq!(step, Ok(Step::Continue { consumed: 4 }));
        handshake
    }

    fn option_bytes(option: &ClientOption) -> Vec<u8> {
        let mut bytes = Vec::new();
        option.encode(&mut bytes);
        bytes
    }

    /// Sends one option whole; returns the step and the reply bytes.
    fn send(
        handshake: &mut Handshake,
        option: &ClientOption,
    ) -> (Result<Step, ProtoError>, Vec<u8>) {
        let bytes = option_bytes(option);
        let mut out = Vec::new();
        let step = handshake.advance(&bytes, exports().as_slice(), &mut out);
        if let Ok(
            Step::Continue { consumed }
            | Step::Transmission { consumed, .. }
            | Step::Abort { consumed },
        ) = step
        {
            assert_eq!(consumed, bytes.len());
        }
        (step, out)
    }

    /// Sends an option the handshake answers and goes on from; returns the reply bytes.
    fn accept(handshake: &mut Handshake, option: &ClientOption) -> Vec<u8> {
        let (step, out) = send(handshake, option);
        assert!(matches!(step, Ok(Step::Continue { .. })), "{step:?}");
        out
    }

    /// Splits reply bytes into option replies.
    fn replies(mut bytes: &[u8]) -> Vec<(u32, OptionReply<'_>)> {
        let mut replies = Vec::new();
        while !bytes.is_empty() {
            let header = OptionReplyHeader::decode(&array(bytes)).unwrap();
            let end = OPTION_REPLY_HEADER_LEN + header.length as usize;
            let reply =
                OptionReply::decode(header.reply_type, &bytes[OPTION_REPLY_HEADER_LEN..end]);
            replies.push((header.option, reply.unwrap()));
            bytes = &bytes[end..];
        }
        replies
    }

    fn error_of(bytes: &[u8]) -> OptionReplyError {
        match replies(bytes).as_slice() {
            [(_, OptionReply::Error { error, .. })] => *error,
            other => panic!("expected one error reply, got {other:?}"),
        }
    }

    fn go(name: &str, info_requests: Vec<u16>) -> ClientOption {
        ClientOption::Go(ExportRequest {
            name: name.into(),
            info_requests,
        })
    }

    fn set_meta(export: &str, queries: &[&str]) -> ClientOption {
        ClientOption::SetMetaContext(MetaContextRequest {
            export: export.into(),
            queries: queries.iter().map(|query| query.to_string()).collect(),
        })
    }

    fn list_meta(queries: &[&str]) -> ClientOption {
        ClientOption::ListMetaContext(MetaContextRequest {
            export: String::new(),
            queries: queries.iter().map(|query| query.to_string()).collect(),
        })
    }

    #[test]
    fn client_flags_arrive_whole_or_not_at_all() {
        let mut handshake = Handshake::start(&mut Vec::new());
        let exports = exports();
        assert_eq!(
            handshake.advance(&[0, 0], exports.as_slice(), &mut Vec::new()),
            Ok(Step::Incomplete { missing: 2 })
        );
    }

    #[test]
    fn unknown_client_flags_end_the_handshake() {
        let mut handshake = Handshake::start(&mut Vec::new());
        let exports = exports();
        let error = handshake.advance(&[0, 0, 0, 4], exports.as_slice(), &mut Vec::new());
        assert!(matches!(error, Err(ProtoError::UnknownClientFlags { .. })));
        assert_eq!(
            handshake.advance(&[0, 0, 0, 1], exports.as_slice(), &mut Vec::new()),
            Err(ProtoError::HandshakeOver)
        );
    }

    #[test]
    fn export_name_replies_with_or_without_zeroes() {
        for (client_flags, reply_len) in [(1, 134), (3, 10)] {
            let mut handshake = started(client_flags);
            let (step, out) = send(&mut handshake, &ClientOption::ExportName("disk".into()));
            let Ok(Step::Transmission { negotiated, .. }) = step else {
                panic!("{step:?}")
            };
            assert_eq!(out.len(), reply_len);
            assert_eq!(out[..8], (1_u64 << 30).to_be_bytes());
            // SEND_DF is dropped: structured replies were not negotiated.
            let flags = TransmissionFlags::HAS_FLAGS
                | TransmissionFlags::SEND_FLUSH
                | TransmissionFlags::SEND_FUA;
            assert_eq!(out[8..10], flags.bits().to_be_bytes());
            assert!(out[10..].iter().all(|&byte| byte == 0));
            assert_eq!(negotiated.export.flags, flags);
            assert!(!negotiated.structured_replies);
        }
    }

    #[test]
    fn export_name_of_the_empty_name_is_the_default_export() {
        let (step, _) = send(&mut started(3), &ClientOption::ExportName(String::new()));
        let Ok(Step::Transmission { negotiated, .. }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(negotiated.export.name, "disk");
    }

    #[test]
    fn export_name_that_cannot_be_served_closes() {
        let (step, out) = send(&mut started(3), &ClientOption::ExportName("nope".into()));
        assert_eq!(
            step,
            Err(ProtoError::UnknownExport {
                name: "nope".into()
            })
        );
        assert!(out.is_empty());

        let mut bytes = option_bytes(&ClientOption::ExportName("ab".into()));
        bytes[16] = 0xff;
        let error = started(3)
            .advance(&bytes, exports().as_slice(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            error,
            ProtoError::MalformedOption {
                option: NBD_OPT_EXPORT_NAME,
                problem: crate::proto::Malformation::NotUtf8
            }
        );
    }

    #[test]
    fn abort_is_acknowledged() {
        let (step, out) = send(&mut started(3), &ClientOption::Abort);
        assert!(matches!(step, Ok(Step::Abort { .. })));
        assert_eq!(replies(&out), [(NBD_OPT_ABORT, OptionReply::Ack)]);
    }

    #[test]
    fn list_names_every_export() {
        let (_, out) = send(&mut started(3), &ClientOption::List);
        assert_eq!(
            replies(&out),
            [
                (
                    NBD_OPT_LIST,
                    OptionReply::Server {
                        name: "disk",
                        description: "the first disk"
                    }
                ),
                (
                    NBD_OPT_LIST,
                    OptionReply::Server {
                        name: "aligned",
                        description: ""
                    }
                ),
                (NBD_OPT_LIST, OptionReply::Ack),
            ]
        );
    }

    #[test]
    fn starttls_extended_headers_and_unknown_options_are_unsupported() {
        let mut handshake = started(3);
        for option in [
            ClientOption::StartTls,
            ClientOption::ExtendedHeaders,
            ClientOption::Unknown(4242),
        ] {
            let (step, out) = send(&mut handshake, &option);
            assert!(matches!(step, Ok(Step::Continue { .. })));
            assert_eq!(error_of(&out), OptionReplyError::Unsup);
            assert_eq!(replies(&out)[0].0, option.code());
        }
    }

    #[test]
    fn info_describes_and_go_enters_transmission() {
        let mut handshake = started(3);
        let info = ClientOption::Info(ExportRequest {
            name: "disk".into(),
            info_requests: vec![NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE],
        });
        let (step, out) = send(&mut handshake, &info);
        assert!(matches!(step, Ok(Step::Continue { .. })));
        let flags = TransmissionFlags::HAS_FLAGS
            | TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_FUA;
        assert_eq!(
            replies(&out),
            [
                (
                    NBD_OPT_INFO,
                    OptionReply::Info(Info::Export {
                        size: 1 << 30,
                        flags
                    })
                ),
                (NBD_OPT_INFO, OptionReply::Info(Info::Name("disk"))),
                (
                    NBD_OPT_INFO,
                    OptionReply::Info(Info::Description("the first disk"))
                ),
                (
                    NBD_OPT_INFO,
                    OptionReply::Info(Info::BlockSize(BlockSizes::DEFAULT))
                ),
                (NBD_OPT_INFO, OptionReply::Ack),
            ]
        );

        let (step, out) = send(&mut handshake, &go("", vec![]));
        let Ok(Step::Transmission { negotiated, .. }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            replies(&out),
            [
                (
                    NBD_OPT_GO,
                    OptionReply::Info(Info::Export {
                        size: 1 << 30,
                        flags
                    })
                ),
                (NBD_OPT_GO, OptionReply::Ack),
            ]
        );
        assert_eq!(negotiated.export.name, "disk");
        assert_eq!(
            handshake.advance(
                &option_bytes(&ClientOption::List),
                exports().as_slice(),
                &mut Vec::new()
            ),
            Err(ProtoError::HandshakeOver)
        );
    }

    #[test]
    fn non_default_block_sizes_are_sent_unasked() {
        let (_, out) = send(&mut started(3), &go("aligned", vec![NBD_INFO_EXPORT]));
        let sizes = BlockSizes::new(4096, 4096, 1 << 25).unwrap();
        assert!(replies(&out).contains(&(NBD_OPT_GO, OptionReply::Info(Info::BlockSize(sizes)))));
    }

    #[test]
    fn info_or_go_for_an_unknown_export_is_err_unknown() {
        let mut handshake = started(3);
        let (step, out) = send(&mut handshake, &go("nope", vec![]));
        assert!(matches!(step, Ok(Step::Continue { .. })));
        assert_eq!(error_of(&out), OptionReplyError::Unknown);
        let (step, _) = send(&mut handshake, &go("disk", vec![]));
        assert!(matches!(step, Ok(Step::Transmission { .. })));
    }

    #[test]
    fn malformed_options_are_err_invalid_and_the_handshake_goes_on() {
        let mut handshake = started(3);
        let mut bytes = option_bytes(&go("disk", vec![1]));
        bytes[19] = 9; // the name length now runs past the data
        let mut out = Vec::new();
        let step = handshake.advance(&bytes, exports().as_slice(), &mut out);
        assert_eq!(
            step,
            Ok(Step::Continue {
                consumed: bytes.len()
            })
        );
        assert_eq!(error_of(&out), OptionReplyError::Invalid);
        let (step, _) = send(&mut handshake, &go("disk", vec![]));
        assert!(matches!(step, Ok(Step::Transmission { .. })));
    }

    #[test]
    fn structured_replies_once_and_without_data() {
        let mut handshake = started(3);
        let (_, out) = send(&mut handshake, &ClientOption::StructuredReply);
        assert_eq!(
            replies(&out),
            [(NBD_OPT_STRUCTURED_REPLY, OptionReply::Ack)]
        );
        let (_, out) = send(&mut handshake, &ClientOption::StructuredReply);
        assert_eq!(error_of(&out), OptionReplyError::Invalid);

        let mut bytes = option_bytes(&ClientOption::StructuredReply);
        bytes[15] = 1;
        bytes.push(0);
        let mut out = Vec::new();
        started(3)
            .advance(&bytes, exports().as_slice(), &mut out)
            .unwrap();
        assert_eq!(error_of(&out), OptionReplyError::Invalid);
    }

    #[test]
    fn structured_replies_let_go_advertise_df() {
        let mut handshake = started(3);
        accept(&mut handshake, &ClientOption::StructuredReply);
        let (step, _) = send(&mut handshake, &go("disk", vec![]));
        let Ok(Step::Transmission { negotiated, .. }) = step else {
            panic!("{step:?}")
        };
        assert!(negotiated.structured_replies);
        assert!(negotiated.export.flags.contains(TransmissionFlags::SEND_DF));
        assert_eq!(negotiated.base_allocation, None);
    }

    #[test]
    fn meta_contexts_need_structured_replies() {
        let mut handshake = started(3);
        let (_, out) = send(&mut handshake, &set_meta("disk", &[BASE_ALLOCATION]));
        assert_eq!(error_of(&out), OptionReplyError::Invalid);
        let (_, out) = send(&mut handshake, &list_meta(&[]));
        assert_eq!(error_of(&out), OptionReplyError::Invalid);
    }

    #[test]
    fn set_meta_context_selects_base_allocation_for_go() {
        let mut handshake = started(3);
        accept(&mut handshake, &ClientOption::StructuredReply);
        let (_, out) = send(
            &mut handshake,
            &set_meta("disk", &["qemu:dirty-bitmap:x", BASE_ALLOCATION]),
        );
        assert_eq!(
            replies(&out),
            [
                (
                    NBD_OPT_SET_META_CONTEXT,
                    OptionReply::MetaContext {
                        id: BASE_ALLOCATION_ID,
                        name: BASE_ALLOCATION
                    }
                ),
                (NBD_OPT_SET_META_CONTEXT, OptionReply::Ack),
            ]
        );
        let (step, _) = send(&mut handshake, &go("", vec![]));
        let Ok(Step::Transmission { negotiated, .. }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(negotiated.base_allocation, Some(BASE_ALLOCATION_ID));
    }

    #[test]
    fn set_meta_context_selects_nothing_else() {
        let mut handshake = started(3);
        accept(&mut handshake, &ClientOption::StructuredReply);
        for queries in [&[][..], &["base:"], &["qemu:"], &["base:other"]] {
            let (_, out) = send(&mut handshake, &set_meta("disk", queries));
            assert_eq!(
                replies(&out),
                [(NBD_OPT_SET_META_CONTEXT, OptionReply::Ack)],
                "{queries:?}"
            );
        }
        let (_, out) = send(&mut handshake, &set_meta("nope", &[BASE_ALLOCATION]));
        assert_eq!(error_of(&out), OptionReplyError::Unknown);
    }

    #[test]
    fn a_later_set_replaces_the_selection() {
        let mut handshake = started(3);
        accept(&mut handshake, &ClientOption::StructuredReply);
        accept(&mut handshake, &set_meta("disk", &[BASE_ALLOCATION]));
        accept(&mut handshake, &set_meta("disk", &["qemu:"]));
        let (step, _) = send(&mut handshake, &go("disk", vec![]));
        let Ok(Step::Transmission { negotiated, .. }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(negotiated.base_allocation, None);
    }

    #[test]
    fn a_selection_for_another_export_does_not_carry_over() {
        let mut handshake = started(3);
        accept(&mut handshake, &ClientOption::StructuredReply);
        accept(&mut handshake, &set_meta("aligned", &[BASE_ALLOCATION]));
        let (step, _) = send(&mut handshake, &go("disk", vec![]));
        let Ok(Step::Transmission { negotiated, .. }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(negotiated.base_allocation, None);
    }

    #[test]
    fn list_meta_context_lists_base_allocation() {
        let mut handshake = started(3);
        accept(&mut handshake, &ClientOption::StructuredReply);
        let listed = [
            (
                NBD_OPT_LIST_META_CONTEXT,
                OptionReply::MetaContext {
                    id: 0,
                    name: BASE_ALLOCATION,
                },
            ),
            (NBD_OPT_LIST_META_CONTEXT, OptionReply::Ack),
        ];
        for queries in [
            &[][..],
            &["base:"],
            &[BASE_ALLOCATION],
            &["x-foo:", "base:"],
        ] {
            let (_, out) = send(&mut handshake, &list_meta(queries));
            assert_eq!(replies(&out), listed, "{queries:?}");
        }
        let (_, out) = send(&mut handshake, &list_meta(&["qemu:"]));
        assert_eq!(
            replies(&out),
            [(NBD_OPT_LIST_META_CONTEXT, OptionReply::Ack)]
        );
    }

    #[test]
    fn an_oversized_option_is_discarded_then_err_too_big() {
        let mut handshake = started(3);
        let exports = exports();
        let length = MAX_OPTION_LEN + 10;
        let mut header = [0; OPTION_HEADER_LEN];
        OptionHeader {
            option: NBD_OPT_GO,
            length,
        }
        .encode(&mut header);
        let mut out = Vec::new();
        assert_eq!(
            handshake.advance(&header, exports.as_slice(), &mut out),
            Ok(Step::Continue {
                consumed: OPTION_HEADER_LEN
            })
        );
        assert_eq!(
            handshake.advance(&[], exports.as_slice(), &mut out),
            Ok(Step::Incomplete { missing: 1 })
        );
        let chunk = vec![0; 40_000];
        assert_eq!(
            handshake.advance(&chunk, exports.as_slice(), &mut out),
            Ok(Step::Continue { consumed: 40_000 })
        );
        assert!(out.is_empty());
        // The rest of the data, then the next option, in one buffer: only the data is taken.
        let mut input = vec![0; (length - 40_000) as usize];
        input.extend_from_slice(&option_bytes(&ClientOption::List));
        let step = handshake.advance(&input, exports.as_slice(), &mut out);
        assert_eq!(
            step,
            Ok(Step::Continue {
                consumed: (length - 40_000) as usize
            })
        );
        assert_eq!(error_of(&out), OptionReplyError::TooBig);
    }

    #[test]
    fn an_oversized_export_name_closes() {
        let mut header = [0; OPTION_HEADER_LEN];
        OptionHeader {
            option: NBD_OPT_EXPORT_NAME,
            length: MAX_OPTION_LEN + 1,
        }
        .encode(&mut header);
        let error = started(3)
            .advance(&header, exports().as_slice(), &mut Vec::new())
            .unwrap_err();
        assert!(error.must_close());
    }

    #[test]
    fn options_arrive_whole() {
        let mut handshake = started(3);
        let bytes = option_bytes(&go("disk", vec![]));
        let exports = exports();
        assert_eq!(
            handshake.advance(&bytes[..10], exports.as_slice(), &mut Vec::new()),
            Ok(Step::Incomplete { missing: 6 })
        );
        assert_eq!(
            handshake.advance(&bytes[..20], exports.as_slice(), &mut Vec::new()),
            Ok(Step::Incomplete {
                missing: bytes.len() - 20
            })
        );
    }

    #[test]
    fn too_many_options_close() {
        let mut out = Vec::new();
        let mut handshake = Handshake::start_with_limit(2, &mut out);
        let exports = exports();
        handshake
            .advance(&[0, 0, 0, 3], exports.as_slice(), &mut out)
            .unwrap();
        let list = option_bytes(&ClientOption::List);
        assert!(handshake
            .advance(&list, exports.as_slice(), &mut out)
            .is_ok());
        assert!(handshake
            .advance(&list, exports.as_slice(), &mut out)
            .is_ok());
        assert_eq!(
            handshake.advance(&list, exports.as_slice(), &mut out),
            Err(ProtoError::TooManyOptions { limit: 2 })
        );
    }

    #[test]
    fn a_wrong_option_magic_closes() {
        let mut bytes = option_bytes(&ClientOption::List);
        bytes[0] = 0;
        let error = started(3)
            .advance(&bytes, exports().as_slice(), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(error, ProtoError::BadOptionMagic { .. }));
    }
}
