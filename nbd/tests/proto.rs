//! The codec from the outside: a whole session as bytes, round trips of every message, and
//! property tests that arbitrary bytes never make a decoder panic.

use proptest::collection::vec;
use proptest::prelude::*;
use regio_nbd::proto::consts::{
    NBD_INFO_BLOCK_SIZE, NBD_INFO_EXPORT, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_SET_META_CONTEXT,
    NBD_OPT_STRUCTURED_REPLY, NBD_REPLY_TYPE_BLOCK_STATUS,
};
use regio_nbd::proto::{
    encode_block_status, encode_offset_data_prefix, BlockSizes, BlockStatusFlags, Chunk,
    ChunkHeader, ClientOption, Command, CommandFlags, Cookie, Decoded, Descriptor, Errno,
    ExportInfo, ExportRequest, Extent, Handshake, Info, MetaContextRequest, Negotiated,
    OptionHeader, OptionReply, OptionReplyError, OptionReplyHeader, ProtoError, RefusedPayload,
    ReplyFlags, Request, SimpleReply, Step, TransmissionFlags, CHUNK_HEADER_LEN,
    OFFSET_DATA_PREFIX_LEN, OPTION_HEADER_LEN, OPTION_REPLY_HEADER_LEN, REQUEST_HEADER_LEN,
    SIMPLE_REPLY_LEN,
};

fn catalogue() -> Vec<ExportInfo> {
    vec![ExportInfo {
        name: "disk".into(),
        description: "a test disk".into(),
        size: 64 << 20,
        flags: TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_FUA
            | TransmissionFlags::SEND_TRIM
            | TransmissionFlags::SEND_WRITE_ZEROES
            | TransmissionFlags::SEND_DF
            | TransmissionFlags::CAN_MULTI_CONN
            | TransmissionFlags::SEND_CACHE
            | TransmissionFlags::SEND_FAST_ZERO,
        block_sizes: BlockSizes::DEFAULT,
    }]
}

/// Feeds `input` to the handshake until it is used up or the handshake ends.
fn drive(
    handshake: &mut Handshake,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Result<Step, ProtoError> {
    let exports = catalogue();
    loop {
        let step = handshake.advance(input, exports.as_slice(), out)?;
        match step {
            Step::Continue { consumed } if consumed < input.len() => input = &input[consumed..],
            other => return Ok(other),
        }
    }
}

/// A client as libnbd-based tools (nbdinfo, nbdcopy) and qemu open a connection: fixed newstyle
/// without zeroes, structured replies, `base:allocation`, then `NBD_OPT_GO` asking for block
/// sizes. Every byte either way is checked against the spec's layouts.
#[test]
fn a_whole_session_in_bytes() {
    let mut out = Vec::new();
    let mut handshake = Handshake::start(&mut out);
    assert_eq!(out, b"NBDMAGICIHAVEOPT\x00\x03");
    out.clear();

    let mut client = Vec::new();
    client.extend_from_slice(b"\x00\x00\x00\x03"); // C_FIXED_NEWSTYLE | C_NO_ZEROES
    client.extend_from_slice(b"IHAVEOPT\x00\x00\x00\x08\x00\x00\x00\x00"); // STRUCTURED_REPLY
    client.extend_from_slice(b"IHAVEOPT\x00\x00\x00\x0a\x00\x00\x00\x1f"); // SET_META_CONTEXT
    client
        .extend_from_slice(b"\x00\x00\x00\x04disk\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation");
    client.extend_from_slice(b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0c"); // GO
    client.extend_from_slice(b"\x00\x00\x00\x04disk\x00\x01\x00\x03"); // asks NBD_INFO_BLOCK_SIZE
    let step = drive(&mut handshake, &client, &mut out).unwrap();
    let Step::Transmission {
        consumed,
        negotiated,
    } = step
    else {
        panic!("{step:?}")
    };
    assert_eq!(consumed, 12 + 16); // the GO, the last message

    let magic = b"\x00\x03\xe8\x89\x04\x55\x65\xa9";
    let mut expected = Vec::new();
    // STRUCTURED_REPLY: ACK.
    expected.extend_from_slice(magic);
    expected.extend_from_slice(b"\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00");
    // SET_META_CONTEXT: META_CONTEXT id 1 "base:allocation", then ACK.
    expected.extend_from_slice(magic);
    expected.extend_from_slice(b"\x00\x00\x00\x0a\x00\x00\x00\x04\x00\x00\x00\x13");
    expected.extend_from_slice(b"\x00\x00\x00\x01base:allocation");
    expected.extend_from_slice(magic);
    expected.extend_from_slice(b"\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x00\x00");
    // GO: INFO_EXPORT (size 64 MiB, flags 0x0ded), INFO_BLOCK_SIZE (1, 4096, 32 MiB), ACK.
    expected.extend_from_slice(magic);
    expected.extend_from_slice(b"\x00\x00\x00\x07\x00\x00\x00\x03\x00\x00\x00\x0c");
    expected.extend_from_slice(b"\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x0d\xed");
    expected.extend_from_slice(magic);
    expected.extend_from_slice(b"\x00\x00\x00\x07\x00\x00\x00\x03\x00\x00\x00\x0e");
    expected.extend_from_slice(b"\x00\x03\x00\x00\x00\x01\x00\x00\x10\x00\x02\x00\x00\x00");
    expected.extend_from_slice(magic);
    expected.extend_from_slice(b"\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00");
    assert_eq!(out, expected);

    assert!(negotiated.structured_replies);
    assert_eq!(negotiated.base_allocation, Some(1));
    assert_eq!(negotiated.export.flags.bits(), 0x0ded);

    // Transmission: a 4 KiB read answered by one data chunk, sent as prefix + the data buffer.
    let read = b"\x25\x60\x95\x13\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\
        \x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x10\x00";
    let request = Request::decode(read).unwrap();
    assert_eq!(
        (request.command, request.flags),
        (Command::Read, CommandFlags::DF)
    );
    assert_eq!(request.validate(&negotiated), Ok(()));
    let mut prefix = [0; OFFSET_DATA_PREFIX_LEN];
    encode_offset_data_prefix(
        request.cookie,
        true,
        request.offset,
        request.length,
        &mut prefix,
    )
    .unwrap();
    assert_eq!(
        prefix,
        *b"\x66\x8e\x33\xef\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x10\x08\
           \x00\x00\x00\x00\x00\x00\x10\x00"
    );

    // Block status: two extents over the 8 KiB asked for.
    let status = Request {
        flags: CommandFlags::empty(),
        command: Command::BlockStatus,
        cookie: Cookie(8),
        offset: 0,
        length: 8192,
    };
    assert_eq!(status.validate(&negotiated), Ok(()));
    let extents = [
        Extent {
            length: 4096,
            flags: BlockStatusFlags::empty(),
        },
        Extent {
            length: 1 << 20,
            flags: BlockStatusFlags::HOLE | BlockStatusFlags::ZERO,
        },
        Extent {
            length: 4096,
            flags: BlockStatusFlags::empty(),
        },
    ];
    let mut chunk = Vec::new();
    let id = negotiated.base_allocation.unwrap();
    assert_eq!(
        encode_block_status(&status, id, true, extents, &mut chunk),
        Ok(2)
    );
    let header = ChunkHeader::decode(chunk.first_chunk().unwrap()).unwrap();
    assert_eq!(header.chunk_type, NBD_REPLY_TYPE_BLOCK_STATUS);
    assert_eq!(
        Chunk::decode(&header, &chunk[CHUNK_HEADER_LEN..]),
        Ok(Chunk::BlockStatus {
            context_id: 1,
            descriptors: vec![
                Descriptor {
                    length: 4096,
                    flags: BlockStatusFlags::empty()
                },
                Descriptor {
                    length: 1 << 20,
                    flags: BlockStatusFlags::from_bits_retain(3)
                },
            ],
        })
    );
}

/// The nbd kernel client and older tools: `NBD_OPT_EXPORT_NAME`, with and without zeroes.
#[test]
fn an_export_name_session_in_bytes() {
    for (client_flags, zeroes) in [(b"\x00\x00\x00\x01", 124), (b"\x00\x00\x00\x03", 0)] {
        let mut out = Vec::new();
        let mut handshake = Handshake::start(&mut out);
        out.clear();
        let mut client = client_flags.to_vec();
        client.extend_from_slice(b"IHAVEOPT\x00\x00\x00\x01\x00\x00\x00\x04disk");
        let step = drive(&mut handshake, &client, &mut out).unwrap();
        assert!(
            matches!(step, Step::Transmission { consumed: 20, .. }),
            "{step:?}"
        );
        let mut expected = b"\x00\x00\x00\x00\x04\x00\x00\x00\x0d\x6d".to_vec();
        expected.resize(10 + zeroes, 0);
        assert_eq!(out, expected);
    }
}

#[test]
fn go_with_info_requests_golden_bytes() {
    let go = ClientOption::Go(ExportRequest {
        name: "disk".into(),
        info_requests: vec![NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE],
    });
    let mut bytes = Vec::new();
    go.encode(&mut bytes);
    assert_eq!(
        bytes,
        b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0e\x00\x00\x00\x04disk\x00\x02\x00\x00\x00\x03"
    );
    let header = OptionHeader::decode(bytes.first_chunk().unwrap()).unwrap();
    assert_eq!(
        ClientOption::decode(header.option, &bytes[OPTION_HEADER_LEN..]),
        Ok(go)
    );
}

#[test]
fn a_structured_reply_with_data_is_refused_and_the_session_goes_on() {
    let mut out = Vec::new();
    let mut handshake = Handshake::start(&mut out);
    out.clear();
    let mut client = b"\x00\x00\x00\x03IHAVEOPT\x00\x00\x00\x08\x00\x00\x00\x01x".to_vec();
    client.extend_from_slice(b"IHAVEOPT\x00\x00\x00\x08\x00\x00\x00\x00");
    drive(&mut handshake, &client, &mut out).unwrap();
    let first = OptionReplyHeader::decode(out.first_chunk().unwrap()).unwrap();
    assert_eq!(first.option, NBD_OPT_STRUCTURED_REPLY);
    let payload = &out[OPTION_REPLY_HEADER_LEN..OPTION_REPLY_HEADER_LEN + first.length as usize];
    assert!(matches!(
        OptionReply::decode(first.reply_type, payload),
        Ok(OptionReply::Error {
            error: OptionReplyError::Invalid,
            ..
        })
    ));
    let rest = &out[OPTION_REPLY_HEADER_LEN + first.length as usize..];
    let second = OptionReplyHeader::decode(rest.first_chunk().unwrap()).unwrap();
    assert_eq!(
        (second.option, second.length),
        (NBD_OPT_STRUCTURED_REPLY, 0)
    );
    assert_eq!(
        OptionReply::decode(second.reply_type, &[]),
        Ok(OptionReply::Ack)
    );
}

fn spec_string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:_/é-]{0,24}"
}

fn errno() -> impl Strategy<Value = Errno> {
    prop_oneof![
        Just(Errno::EPERM),
        Just(Errno::EIO),
        Just(Errno::ENOMEM),
        Just(Errno::EINVAL),
        Just(Errno::ENOSPC),
        Just(Errno::EOVERFLOW),
        Just(Errno::ENOTSUP),
        Just(Errno::ESHUTDOWN),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(flags, command, cookie, offset, length)| Request {
            flags: CommandFlags::from_bits_retain(flags),
            command: Command::from_code(command),
            cookie: Cookie(cookie),
            offset,
            length,
        })
}

fn block_sizes() -> impl Strategy<Value = BlockSizes> {
    (0_u32..=16, 9_u32..=20, any::<u32>()).prop_map(|(min, preferred, maximum)| {
        let preferred = 1 << preferred.max(min);
        BlockSizes::new(1 << min, preferred, maximum.max(preferred)).unwrap()
    })
}

fn negotiated() -> impl Strategy<Value = Negotiated> {
    (
        any::<u64>(),
        any::<u16>(),
        block_sizes(),
        any::<bool>(),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(size, flags, block_sizes, structured_replies, base_allocation)| Negotiated {
                export: ExportInfo {
                    name: "disk".into(),
                    description: String::new(),
                    size,
                    flags: TransmissionFlags::from_bits_retain(flags),
                    block_sizes,
                },
                structured_replies,
                base_allocation,
            },
        )
}

fn export_request() -> impl Strategy<Value = ExportRequest> {
    (spec_string(), vec(any::<u16>(), 0..8)).prop_map(|(name, info_requests)| ExportRequest {
        name,
        info_requests,
    })
}

fn meta_request() -> impl Strategy<Value = MetaContextRequest> {
    (spec_string(), vec(spec_string(), 0..6))
        .prop_map(|(export, queries)| MetaContextRequest { export, queries })
}

fn client_option() -> impl Strategy<Value = ClientOption> {
    prop_oneof![
        spec_string().prop_map(ClientOption::ExportName),
        Just(ClientOption::Abort),
        Just(ClientOption::List),
        Just(ClientOption::StartTls),
        export_request().prop_map(ClientOption::Info),
        export_request().prop_map(ClientOption::Go),
        Just(ClientOption::StructuredReply),
        meta_request().prop_map(ClientOption::ListMetaContext),
        meta_request().prop_map(ClientOption::SetMetaContext),
        Just(ClientOption::ExtendedHeaders),
        (12_u32..).prop_map(ClientOption::Unknown),
    ]
}

fn option_reply_error() -> impl Strategy<Value = OptionReplyError> {
    (1_u32..=9).prop_map(|code| OptionReplyError::from_code((1 << 31) | code).unwrap())
}

/// Option replies borrow their strings, so the strategy yields the owned parts.
#[derive(Debug, Clone)]
enum OwnedReply {
    Ack,
    Server(String, String),
    Export(u64, u16),
    Name(String),
    Description(String),
    BlockSize(BlockSizes),
    MetaContext(u32, String),
    Error(OptionReplyError, String),
}

impl OwnedReply {
    fn borrow(&self) -> OptionReply<'_> {
        match self {
            Self::Ack => OptionReply::Ack,
            Self::Server(name, description) => OptionReply::Server { name, description },
            Self::Export(size, flags) => OptionReply::Info(Info::Export {
                size: *size,
                flags: TransmissionFlags::from_bits_retain(*flags),
            }),
            Self::Name(name) => OptionReply::Info(Info::Name(name)),
            Self::Description(text) => OptionReply::Info(Info::Description(text)),
            Self::BlockSize(sizes) => OptionReply::Info(Info::BlockSize(*sizes)),
            Self::MetaContext(id, name) => OptionReply::MetaContext { id: *id, name },
            Self::Error(error, message) => OptionReply::Error {
                error: *error,
                message,
            },
        }
    }
}

fn option_reply() -> impl Strategy<Value = OwnedReply> {
    prop_oneof![
        Just(OwnedReply::Ack),
        (spec_string(), spec_string()).prop_map(|(n, d)| OwnedReply::Server(n, d)),
        (any::<u64>(), any::<u16>()).prop_map(|(size, flags)| OwnedReply::Export(size, flags)),
        spec_string().prop_map(OwnedReply::Name),
        spec_string().prop_map(OwnedReply::Description),
        block_sizes().prop_map(OwnedReply::BlockSize),
        (any::<u32>(), spec_string()).prop_map(|(id, name)| OwnedReply::MetaContext(id, name)),
        (option_reply_error(), spec_string()).prop_map(|(e, m)| OwnedReply::Error(e, m)),
    ]
}

/// Chunks borrow their data, so the strategy yields a chunk built on owned parts.
#[derive(Debug, Clone)]
enum OwnedChunk {
    None,
    Data(u64, Vec<u8>),
    Hole(u64, u32),
    Status(u32, Vec<(u32, u32)>),
    Error(Errno, String),
    ErrorOffset(Errno, String, u64),
}

impl OwnedChunk {
    fn borrow(&self) -> Chunk<'_> {
        match self {
            Self::None => Chunk::None,
            Self::Data(offset, data) => Chunk::OffsetData {
                offset: *offset,
                data,
            },
            Self::Hole(offset, length) => Chunk::OffsetHole {
                offset: *offset,
                length: *length,
            },
            Self::Status(context_id, pairs) => Chunk::BlockStatus {
                context_id: *context_id,
                descriptors: pairs
                    .iter()
                    .map(|&(length, flags)| Descriptor {
                        length,
                        flags: BlockStatusFlags::from_bits_retain(flags),
                    })
                    .collect(),
            },
            Self::Error(error, message) => Chunk::Error {
                error: *error,
                message,
            },
            Self::ErrorOffset(error, message, offset) => Chunk::ErrorOffset {
                error: *error,
                message,
                offset: *offset,
            },
        }
    }
}

fn chunk() -> impl Strategy<Value = OwnedChunk> {
    prop_oneof![
        Just(OwnedChunk::None),
        (any::<u64>(), vec(any::<u8>(), 1..64)).prop_map(|(o, d)| OwnedChunk::Data(o, d)),
        (any::<u64>(), 1_u32..).prop_map(|(o, l)| OwnedChunk::Hole(o, l)),
        (any::<u32>(), vec((1_u32.., any::<u32>()), 1..16))
            .prop_map(|(id, pairs)| OwnedChunk::Status(id, pairs)),
        (errno(), spec_string()).prop_map(|(e, m)| OwnedChunk::Error(e, m)),
        (errno(), spec_string(), any::<u64>())
            .prop_map(|(e, m, o)| OwnedChunk::ErrorOffset(e, m, o)),
    ]
}

proptest! {
    #[test]
    fn request_encode_decode_is_identity(request in request()) {
        let mut bytes = [0; REQUEST_HEADER_LEN];
        request.encode(&mut bytes);
        prop_assert_eq!(Request::decode(&bytes), Ok(request));
        // The cookie's bytes are the ones sent, in place.
        prop_assert_eq!(&bytes[8..16], &request.cookie.0.to_be_bytes()[..]);
    }

    #[test]
    fn request_headers_from_arbitrary_bytes(
        bytes in any::<[u8; REQUEST_HEADER_LEN]>(),
        negotiated in negotiated(),
    ) {
        if let Ok(request) = Request::decode(&bytes) {
            let mut again = [0; REQUEST_HEADER_LEN];
            request.encode(&mut again);
            prop_assert_eq!(again, bytes);
            // Never panics, and a refused write always says what to do with its payload.
            if let Err(refusal) = request.validate(&negotiated) {
                let no_payload = refusal.payload == RefusedPayload::None;
                prop_assert_eq!(no_payload, request.payload_len() == 0);
            }
        }
    }

    #[test]
    fn request_parse_never_panics(input in vec(any::<u8>(), 0..64)) {
        match Request::parse(&input) {
            Ok(Decoded::Complete { consumed, .. }) => {
                prop_assert_eq!(consumed, REQUEST_HEADER_LEN);
            }
            Ok(Decoded::Incomplete { missing }) => {
                prop_assert_eq!(missing + input.len(), REQUEST_HEADER_LEN);
            }
            Err(error) => prop_assert!(error.must_close()),
        }
    }

    #[test]
    fn simple_reply_encode_decode_is_identity(
        cookie in any::<u64>(),
        error in proptest::option::of(errno()),
    ) {
        let reply = SimpleReply { cookie: Cookie(cookie), error };
        let mut bytes = [0; SIMPLE_REPLY_LEN];
        reply.encode(&mut bytes);
        prop_assert_eq!(SimpleReply::decode(&bytes), Ok(reply));
    }

    #[test]
    fn chunk_encode_decode_is_identity(
        owned in chunk(),
        cookie in any::<u64>(),
        done in any::<bool>(),
    ) {
        let chunk = owned.borrow();
        let mut bytes = Vec::new();
        chunk.encode(Cookie(cookie), done, &mut bytes).unwrap();
        let header = ChunkHeader::decode(bytes.first_chunk().unwrap()).unwrap();
        prop_assert_eq!(header.cookie, Cookie(cookie));
        prop_assert_eq!(header.length as usize, bytes.len() - CHUNK_HEADER_LEN);
        prop_assert_eq!(Chunk::decode(&header, &bytes[CHUNK_HEADER_LEN..]), Ok(chunk));
    }

    #[test]
    fn client_option_encode_decode_is_identity(option in client_option()) {
        let mut bytes = Vec::new();
        option.encode(&mut bytes);
        let header = OptionHeader::decode(bytes.first_chunk().unwrap()).unwrap();
        prop_assert_eq!(header.length as usize, bytes.len() - OPTION_HEADER_LEN);
        let data = &bytes[OPTION_HEADER_LEN..];
        prop_assert_eq!(ClientOption::decode(header.option, data), Ok(option));
    }

    #[test]
    fn option_reply_encode_decode_is_identity(owned in option_reply(), option in any::<u32>()) {
        let reply = owned.borrow();
        let mut bytes = Vec::new();
        reply.encode(option, &mut bytes);
        let header = OptionReplyHeader::decode(bytes.first_chunk().unwrap()).unwrap();
        prop_assert_eq!(header.option, option);
        prop_assert_eq!(header.length as usize, bytes.len() - OPTION_REPLY_HEADER_LEN);
        let payload = &bytes[OPTION_REPLY_HEADER_LEN..];
        prop_assert_eq!(OptionReply::decode(header.reply_type, payload), Ok(reply));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        code in any::<u32>(),
        chunk_type in any::<u16>(),
        data in vec(any::<u8>(), 0..256),
    ) {
        for option in [code, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_SET_META_CONTEXT, code % 16] {
            if let Err(error) = ClientOption::decode(option, &data) {
                prop_assert!(error.must_close() || error.reply_code().is_some());
            }
        }
        let _ = OptionHeader::parse(&data);
        let _ = OptionReply::decode(code, &data);
        let _ = OptionReply::decode(3, &data);
        if let Some(bytes) = data.first_chunk() {
            let _ = SimpleReply::decode(bytes);
        }
        if let Some(bytes) = data.first_chunk() {
            let _ = OptionReplyHeader::decode(bytes);
        }
        // Mostly known types, with and without the error bit.
        let chunk_type = (chunk_type % 8) | (chunk_type & 0x8000);
        let header =
            ChunkHeader { flags: ReplyFlags::DONE, chunk_type, cookie: Cookie(0), length: 0 };
        let _ = Chunk::decode(&header, &data);
    }

    #[test]
    fn handshake_survives_arbitrary_bytes(
        prefix in vec(any::<u8>(), 0..4),
        body in vec(any::<u8>(), 0..512),
        cut in 1_usize..64,
    ) {
        // Start from valid client flags half the time, so that options get parsed.
        let mut input = if prefix.len() % 2 == 0 { vec![0, 0, 0, 3] } else { prefix };
        input.extend_from_slice(&body);
        let exports = catalogue();
        let mut out = Vec::new();
        let mut handshake = Handshake::start(&mut out);
        let mut buffer: Vec<u8> = Vec::new();
        for piece in input.chunks(cut) {
            buffer.extend_from_slice(piece);
            loop {
                match handshake.advance(&buffer, exports.as_slice(), &mut out) {
                    Ok(Step::Continue { consumed }) => {
                        prop_assert!(consumed > 0 && consumed <= buffer.len());
                        buffer.drain(..consumed);
                    }
                    Ok(Step::Incomplete { missing }) => {
                        prop_assert!(missing > 0);
                        break;
                    }
                    Ok(Step::Transmission { .. } | Step::Abort { .. }) | Err(_) => return Ok(()),
                }
            }
        }
    }

    #[test]
    fn block_status_follows_the_spec(
        length in any::<u32>(),
        req_one in any::<bool>(),
        extents in vec(0_u64..(1 << 34), 0..12),
    ) {
        let request = Request {
            flags: if req_one { CommandFlags::REQ_ONE } else { CommandFlags::empty() },
            command: Command::BlockStatus,
            cookie: Cookie(1),
            offset: 0,
            length,
        };
        let extents: Vec<Extent> = extents
            .iter()
            .map(|&length| Extent { length, flags: BlockStatusFlags::HOLE })
            .collect();
        let mut out = Vec::new();
        let built = encode_block_status(&request, 1, true, extents.iter().copied(), &mut out);
        let Ok(count) = built else {
            prop_assert!(out.is_empty());
            return Ok(());
        };
        let header = ChunkHeader::decode(out.first_chunk().unwrap()).unwrap();
        let decoded = Chunk::decode(&header, &out[CHUNK_HEADER_LEN..]);
        let Ok(Chunk::BlockStatus { descriptors, .. }) = decoded else {
            panic!("not a block status chunk");
        };
        prop_assert_eq!(descriptors.len(), count);
        prop_assert!(count >= 1);
        if req_one {
            prop_assert_eq!(count, 1);
            prop_assert!(descriptors[0].length <= length);
        }
        let all_but_last: u64 =
            descriptors[..count - 1].iter().map(|descriptor| u64::from(descriptor.length)).sum();
        prop_assert!(count == 1 || all_but_last < u64::from(length));
        for (descriptor, extent) in descriptors.iter().zip(&extents) {
            prop_assert!(descriptor.length > 0 && u64::from(descriptor.length) <= extent.length);
        }
    }
}
