//! Options, the client's messages during option haggling: the header and each option's data.

use super::consts::{
    IHAVEOPT, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_EXTENDED_HEADERS, NBD_OPT_GO,
    NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT,
    NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY,
};
use super::error::{Malformation, ProtoError};
use super::wire::{self, array, put_u16, put_u32, put_u64, Reader};
use super::Decoded;

/// The size of an option header: `IHAVEOPT`, option code, data length.
pub const OPTION_HEADER_LEN: usize = 16;

/// The most option data the codec accepts (64 KiB). The largest well-formed options (an
/// `NBD_OPT_GO` with a 4096-byte name, a meta context request with a few queries) are far
/// smaller; a longer one earns [`ProtoError::OptionTooBig`].
pub const MAX_OPTION_LEN: u32 = 64 * 1024;

/// An option header: which option, and how many bytes of data follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code (`NBD_OPT_*`).
    pub option: u32,
    /// The length of the option data that follows the header.
    pub length: u32,
}

impl OptionHeader {
    /// Decodes a header. A wrong magic is [`ProtoError::BadOptionMagic`]; a length over
    /// [`MAX_OPTION_LEN`] is [`ProtoError::OptionTooBig`], after which the caller discards
    /// `length` bytes (or closes) before reading the next header.
    pub fn decode(bytes: &[u8; OPTION_HEADER_LEN]) -> Result<Self, ProtoError> {
        let magic = u64::from_be_bytes(array(&bytes[0..]));
        if magic != IHAVEOPT {
            return Err(ProtoError::BadOptionMagic { magic });
        }
        let option = u32::from_be_bytes(array(&bytes[8..]));
        let length = u32::from_be_bytes(array(&bytes[12..]));
        if length > MAX_OPTION_LEN {
            return Err(ProtoError::OptionTooBig { option, length });
        }
        Ok(Self { option, length })
    }

    /// Decodes a header from the front of `input`, or says how many more bytes it needs.
    pub fn parse(input: &[u8]) -> Result<Decoded<Self>, ProtoError> {
        match input.first_chunk::<OPTION_HEADER_LEN>() {
            Some(bytes) => Ok(Decoded::Complete {
                item: Self::decode(bytes)?,
                consumed: OPTION_HEADER_LEN,
            }),
            None => Ok(Decoded::Incomplete {
                missing: OPTION_HEADER_LEN - input.len(),
            }),
        }
    }

    /// Encodes the header, as a client sends it.
    pub fn encode(&self, out: &mut [u8; OPTION_HEADER_LEN]) {
        out[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[8..12].copy_from_slice(&self.option.to_be_bytes());
        out[12..16].copy_from_slice(&self.length.to_be_bytes());
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The export name; empty means the default export.
    pub name: String,
    /// The information types asked for (`NBD_INFO_*`), in the client's order.
    pub info_requests: Vec<u16>,
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// The export the contexts are for.
    pub export: String,
    /// The queries, each `namespace:leaf`.
    pub queries: Vec<String>,
}

/// A decoded option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`: the whole data is the export name.
    ExportName(String),
    /// `NBD_OPT_ABORT`; any data is ignored, as the spec asks.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`.
    Info(ExportRequest),
    /// `NBD_OPT_GO`.
    Go(ExportRequest),
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT`.
    ListMetaContext(MetaContextRequest),
    /// `NBD_OPT_SET_META_CONTEXT`.
    SetMetaContext(MetaContextRequest),
    /// `NBD_OPT_EXTENDED_HEADERS`, decoded only to be refused; its data is ignored.
    ExtendedHeaders,
    /// Any other option, kept by code so that it can be answered `NBD_REP_ERR_UNSUP`; its data
    /// is ignored.
    Unknown(u32),
}

impl ClientOption {
    /// Decodes the data of option `option`. A malformed payload is
    /// [`ProtoError::MalformedOption`], answered `NBD_REP_ERR_INVALID`.
    pub fn decode(option: u32, data: &[u8]) -> Result<Self, ProtoError> {
        Self::decode_data(option, data)
            .map_err(|problem| ProtoError::MalformedOption { option, problem })
    }

    fn decode_data(option: u32, data: &[u8]) -> Result<Self, Malformation> {
        let no_data = |option: Self| match data.len() {
            0 => Ok(option),
            length => Err(Malformation::UnexpectedData { length }),
        };
        match option {
            NBD_OPT_EXPORT_NAME => Ok(Self::ExportName(wire::string(data)?.to_owned())),
            NBD_OPT_ABORT => Ok(Self::Abort),
            NBD_OPT_LIST => no_data(Self::List),
            NBD_OPT_STARTTLS => no_data(Self::StartTls),
            NBD_OPT_INFO => Ok(Self::Info(decode_export_request(data)?)),
            NBD_OPT_GO => Ok(Self::Go(decode_export_request(data)?)),
            NBD_OPT_STRUCTURED_REPLY => no_data(Self::StructuredReply),
            NBD_OPT_LIST_META_CONTEXT => Ok(Self::ListMetaContext(decode_meta_request(data)?)),
            NBD_OPT_SET_META_CONTEXT => Ok(Self::SetMetaContext(decode_meta_request(data)?)),
            NBD_OPT_EXTENDED_HEADERS => Ok(Self::ExtendedHeaders),
            other => Ok(Self::Unknown(other)),
        }
    }

    /// The option code.
    pub fn code(&self) -> u32 {
        match self {
            Self::ExportName(_) => NBD_OPT_EXPORT_NAME,
            Self::Abort => NBD_OPT_ABORT,
            Self::List => NBD_OPT_LIST,
            Self::StartTls => NBD_OPT_STARTTLS,
            Self::Info(_) => NBD_OPT_INFO,
            Self::Go(_) => NBD_OPT_GO,
            Self::StructuredReply => NBD_OPT_STRUCTURED_REPLY,
            Self::ListMetaContext(_) => NBD_OPT_LIST_META_CONTEXT,
            Self::SetMetaContext(_) => NBD_OPT_SET_META_CONTEXT,
            Self::ExtendedHeaders => NBD_OPT_EXTENDED_HEADERS,
            Self::Unknown(code) => *code,
        }
    }

    /// Appends the option, header and data, as a client sends it. An `Unknown` code that is
    /// in fact known is sent with no data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        put_u64(out, IHAVEOPT);
        put_u32(out, self.code());
        put_u32(out, 0);
        match self {
            Self::ExportName(name) => out.extend_from_slice(name.as_bytes()),
            Self::Info(request) | Self::Go(request) => {
                put_string_u32(out, &request.name);
                put_u16(
                    out,
                    u16::try_from(request.info_requests.len()).unwrap_or(u16::MAX),
                );
                for info in request.info_requests.iter().take(usize::from(u16::MAX)) {
                    put_u16(out, *info);
                }
            }
            Self::ListMetaContext(request) | Self::SetMetaContext(request) => {
                put_string_u32(out, &request.export);
                put_u32(
                    out,
                    u32::try_from(request.queries.len()).unwrap_or(u32::MAX),
                );
                for query in &request.queries {
                    put_string_u32(out, query);
                }
            }
            Self::Abort
            | Self::List
            | Self::StartTls
            | Self::StructuredReply
            | Self::ExtendedHeaders
            | Self::Unknown(_) => {}
        }
        let length = wire::len_u32(&out[start + OPTION_HEADER_LEN..]);
        out[start + 12..start + OPTION_HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    }
}

fn put_string_u32(out: &mut Vec<u8>, text: &str) {
    put_u32(out, wire::len_u32(text.as_bytes()));
    out.extend_from_slice(text.as_bytes());
}

/// `NBD_OPT_INFO`/`NBD_OPT_GO`: u32 name length, name, u16 count, count × u16.
fn decode_export_request(data: &[u8]) -> Result<ExportRequest, Malformation> {
    let mut reader = Reader::new(data);
    let name_len = reader.u32()?;
    // The spec: the name length MUST be no larger than the option data length - 6.
    let room = data.len().saturating_sub(6);
    if u64::from(name_len) > room as u64 {
        return Err(Malformation::LengthOverrun {
            declared: name_len,
            available: room,
        });
    }
    let name = wire::string(reader.take(name_len as usize)?)?.to_owned();
    let count = reader.u16()?;
    if usize::from(count) * 2 > reader.remaining() {
        return Err(Malformation::CountOverrun {
            count: count.into(),
            available: reader.remaining(),
        });
    }
    let info_requests = (0..count).map(|_| reader.u16()).collect::<Result<_, _>>()?;
    reader.finish()?;
    Ok(ExportRequest {
        name,
        info_requests,
    })
}

/// Meta context options: u32 name length, name, u32 count, count × (u32 length, query).
fn decode_meta_request(data: &[u8]) -> Result<MetaContextRequest, Malformation> {
    let mut reader = Reader::new(data);
    let export = reader.string_u32()?.to_owned();
    let count = reader.u32()?;
    // Each query takes at least its 4-byte length: check before allocating for `count`.
    if u64::from(count) > (reader.remaining() / 4) as u64 {
        return Err(Malformation::CountOverrun {
            count,
            available: reader.remaining(),
        });
    }
    let queries = (0..count)
        .map(|_| reader.string_u32().map(str::to_owned))
        .collect::<Result<_, _>>()?;
    reader.finish()?;
    Ok(MetaContextRequest { export, queries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(option: u32, length: u32) -> [u8; OPTION_HEADER_LEN] {
        let mut bytes = [0; OPTION_HEADER_LEN];
        OptionHeader { option, length }.encode(&mut bytes);
        bytes
    }

    fn malformed(option: u32, problem: Malformation) -> Result<ClientOption, ProtoError> {
        Err(ProtoError::MalformedOption { option, problem })
    }

    #[test]
    fn header_golden_bytes() {
        assert_eq!(
            header(NBD_OPT_GO, 0x0102),
            *b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x01\x02"
        );
        assert_eq!(
            OptionHeader::decode(&header(NBD_OPT_GO, 0x0102)),
            Ok(OptionHeader {
                option: NBD_OPT_GO,
                length: 0x0102
            })
        );
    }

    #[test]
    fn header_with_wrong_magic_is_fatal() {
        let mut bytes = header(NBD_OPT_GO, 0);
        bytes[0] = b'X';
        let error = OptionHeader::decode(&bytes).unwrap_err();
        assert_eq!(
            error,
            ProtoError::BadOptionMagic {
                magic: 0x5848_4156_454f_5054
            }
        );
        assert!(error.must_close());
    }

    #[test]
    fn header_over_the_cap_is_too_big() {
        assert!(OptionHeader::decode(&header(NBD_OPT_GO, MAX_OPTION_LEN)).is_ok());
        assert_eq!(
            OptionHeader::decode(&header(NBD_OPT_GO, MAX_OPTION_LEN + 1)),
            Err(ProtoError::OptionTooBig {
                option: NBD_OPT_GO,
                length: MAX_OPTION_LEN + 1
            })
        );
    }

    #[test]
    fn parse_asks_for_the_rest_of_the_header() {
        let bytes = header(NBD_OPT_LIST, 0);
        assert_eq!(
            OptionHeader::parse(&bytes[..5]),
            Ok(Decoded::Incomplete { missing: 11 })
        );
        assert_eq!(
            OptionHeader::parse(&bytes),
            Ok(Decoded::Complete {
                item: OptionHeader {
                    option: NBD_OPT_LIST,
                    length: 0
                },
                consumed: 16
            })
        );
    }

    #[test]
    fn go_golden_bytes() {
        let go = ClientOption::Go(ExportRequest {
            name: "disk".into(),
            info_requests: vec![3, 1],
        });
        let mut bytes = Vec::new();
        go.encode(&mut bytes);
        let expected: &[u8] = b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0e\
            \x00\x00\x00\x04disk\x00\x02\x00\x03\x00\x01";
        assert_eq!(bytes, expected);
        assert_eq!(ClientOption::decode(NBD_OPT_GO, &bytes[16..]), Ok(go));
    }

    #[test]
    fn export_name_is_the_whole_data() {
        assert_eq!(
            ClientOption::decode(NBD_OPT_EXPORT_NAME, b"disk"),
            Ok(ClientOption::ExportName("disk".into()))
        );
        assert_eq!(
            ClientOption::decode(NBD_OPT_EXPORT_NAME, b""),
            Ok(ClientOption::ExportName(String::new()))
        );
    }

    #[test]
    fn export_name_must_be_a_spec_string() {
        assert_eq!(
            ClientOption::decode(NBD_OPT_EXPORT_NAME, &[0xc3, 0x28]),
            malformed(NBD_OPT_EXPORT_NAME, Malformation::NotUtf8)
        );
        assert_eq!(
            ClientOption::decode(NBD_OPT_EXPORT_NAME, &[b'a'; 4097]),
            malformed(
                NBD_OPT_EXPORT_NAME,
                Malformation::StringTooLong { length: 4097 }
            )
        );
    }

    #[test]
    fn go_name_longer_than_the_data_is_invalid() {
        // A name length of 5 with only 4 + 6 bytes after it: the spec's "data length - 6" rule.
        let data = b"\x00\x00\x00\x05disk\x00\x00";
        assert_eq!(
            ClientOption::decode(NBD_OPT_GO, data),
            malformed(
                NBD_OPT_GO,
                Malformation::LengthOverrun {
                    declared: 5,
                    available: 4
                }
            )
        );
        assert_eq!(
            ClientOption::decode(NBD_OPT_INFO, b"\xff\xff\xff\xff\x00\x00"),
            malformed(
                NBD_OPT_INFO,
                Malformation::LengthOverrun {
                    declared: u32::MAX,
                    available: 0
                }
            )
        );
    }

    #[test]
    fn go_shorter_than_its_fixed_fields_is_invalid() {
        assert_eq!(
            ClientOption::decode(NBD_OPT_GO, b"\x00\x00"),
            malformed(
                NBD_OPT_GO,
                Malformation::Truncated {
                    needed: 4,
                    available: 2
                }
            )
        );
    }

    #[test]
    fn go_count_that_overruns_is_invalid() {
        let data = b"\x00\x00\x00\x00\x00\x02\x00\x03";
        assert_eq!(
            ClientOption::decode(NBD_OPT_GO, data),
            malformed(
                NBD_OPT_GO,
                Malformation::CountOverrun {
                    count: 2,
                    available: 2
                }
            )
        );
    }

    #[test]
    fn go_with_trailing_bytes_is_invalid() {
        let data = b"\x00\x00\x00\x00\x00\x01\x00\x03\x00";
        assert_eq!(
            ClientOption::decode(NBD_OPT_GO, data),
            malformed(NBD_OPT_GO, Malformation::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn go_name_must_be_a_spec_string() {
        let mut data = vec![0, 0, 0, 2, 0xff, 0xfe, 0, 0];
        assert_eq!(
            ClientOption::decode(NBD_OPT_GO, &data),
            malformed(NBD_OPT_GO, Malformation::NotUtf8)
        );
        data = vec![0, 0, 0x10, 0x01];
        data.extend_from_slice(&[b'a'; 4097]);
        data.extend_from_slice(&[0, 0]);
        assert_eq!(
            ClientOption::decode(NBD_OPT_GO, &data),
            malformed(NBD_OPT_GO, Malformation::StringTooLong { length: 4097 })
        );
    }

    #[test]
    fn options_without_data_refuse_data() {
        for (code, option) in [
            (NBD_OPT_LIST, ClientOption::List),
            (NBD_OPT_STARTTLS, ClientOption::StartTls),
            (NBD_OPT_STRUCTURED_REPLY, ClientOption::StructuredReply),
        ] {
            assert_eq!(ClientOption::decode(code, b""), Ok(option));
            assert_eq!(
                ClientOption::decode(code, b"x"),
                malformed(code, Malformation::UnexpectedData { length: 1 })
            );
        }
    }

    #[test]
    fn abort_extended_headers_and_unknown_ignore_data() {
        assert_eq!(
            ClientOption::decode(NBD_OPT_ABORT, b"junk"),
            Ok(ClientOption::Abort)
        );
        assert_eq!(
            ClientOption::decode(NBD_OPT_EXTENDED_HEADERS, b"junk"),
            Ok(ClientOption::ExtendedHeaders)
        );
        assert_eq!(
            ClientOption::decode(4, b"junk"),
            Ok(ClientOption::Unknown(4))
        );
        assert_eq!(
            ClientOption::decode(0xdead, b""),
            Ok(ClientOption::Unknown(0xdead))
        );
    }

    #[test]
    fn meta_context_round_trip() {
        let option = ClientOption::SetMetaContext(MetaContextRequest {
            export: "disk".into(),
            queries: vec!["base:allocation".into(), "qemu:dirty-bitmap:b".into()],
        });
        let mut bytes = Vec::new();
        option.encode(&mut bytes);
        let header = OptionHeader::decode(&array(&bytes)).unwrap();
        assert_eq!(header.length as usize, bytes.len() - OPTION_HEADER_LEN);
        assert_eq!(
            ClientOption::decode(header.option, &bytes[OPTION_HEADER_LEN..]),
            Ok(option)
        );
    }

    #[test]
    fn meta_context_count_that_overruns_is_invalid() {
        let data = b"\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00";
        assert_eq!(
            ClientOption::decode(NBD_OPT_SET_META_CONTEXT, data),
            malformed(
                NBD_OPT_SET_META_CONTEXT,
                Malformation::CountOverrun {
                    count: 2,
                    available: 4
                }
            )
        );
        // A huge count is refused before anything is allocated for it.
        let data = b"\x00\x00\x00\x00\xff\xff\xff\xff";
        assert_eq!(
            ClientOption::decode(NBD_OPT_LIST_META_CONTEXT, data),
            malformed(
                NBD_OPT_LIST_META_CONTEXT,
                Malformation::CountOverrun {
                    count: u32::MAX,
                    available: 0
                }
            )
        );
    }

    #[test]
    fn meta_context_query_past_the_end_is_invalid() {
        let data = b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09base:";
        assert_eq!(
            ClientOption::decode(NBD_OPT_SET_META_CONTEXT, data),
            malformed(
                NBD_OPT_SET_META_CONTEXT,
                Malformation::LengthOverrun {
                    declared: 9,
                    available: 5
                }
            )
        );
    }

    #[test]
    fn meta_context_strings_must_be_spec_strings() {
        let data = b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\xc3\x28";
        assert_eq!(
            ClientOption::decode(NBD_OPT_SET_META_CONTEXT, data),
            malformed(NBD_OPT_SET_META_CONTEXT, Malformation::NotUtf8)
        );
        let data = b"\x00\x00\x00\x01\x00\x00\x00\x00\x00";
        assert_eq!(
            ClientOption::decode(NBD_OPT_LIST_META_CONTEXT, data),
            malformed(NBD_OPT_LIST_META_CONTEXT, Malformation::ContainsNul)
        );
    }
}
