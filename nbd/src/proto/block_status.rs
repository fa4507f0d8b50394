//! Building the `NBD_REPLY_TYPE_BLOCK_STATUS` chunk that answers a block status request.

use super::consts::{MAX_BLOCK_STATUS_EXTENTS, NBD_REPLY_TYPE_BLOCK_STATUS};
use super::error::ProtoError;
use super::flags::{BlockStatusFlags, CommandFlags, ReplyFlags};
use super::request::Request;
use super::structured::{ChunkHeader, CHUNK_HEADER_LEN};
use super::wire::put_u32;

/// One extent as the storage reports it, consecutive with the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Its length in bytes; may exceed 32 bits (it is clamped).
    pub length: u64,
    /// Its status.
    pub flags: BlockStatusFlags,
}

/// Appends the `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for context `context_id` that answers
/// `request`, from the extents that start at the request's offset, and returns how many
/// descriptors it holds.
///
/// The rules of the spec are applied here, so the server can hand over its extents as they come:
/// - with `NBD_CMD_FLAG_REQ_ONE`, one descriptor, no longer than the request;
/// - otherwise extents until they cover the request's length: only the last may run past it,
///   each is clamped to 32 bits, and at most 2^20 descriptors are sent (the client asks again
///   for the rest);
/// - at least one extent ([`ProtoError::NoExtents`]), none of length zero
///   ([`ProtoError::ZeroLengthExtent`]); a request of length zero with `REQ_ONE` has no valid
///   answer ([`ProtoError::ZeroLengthRequest`]). On error nothing is appended.
///
/// Extents past those needed are not pulled from the iterator.
pub fn encode_block_status(
    request: &Request,
    context_id: u32,
    done: bool,
    extents: impl IntoIterator<Item = Extent>,
    out: &mut Vec<u8>,
) -> Result<usize, ProtoError> {
    let req_one = request.flags.contains(CommandFlags::REQ_ONE);
    if req_one && request.length == 0 {
        return Err(ProtoError::ZeroLengthRequest);
    }
    let start = out.len();
    out.resize(start + CHUNK_HEADER_LEN, 0);
    put_u32(out, context_id);

    let wanted = u64::from(request.length);
    let longest = if req_one { wanted } else { u64::from(u32::MAX) };
    let mut covered = 0_u64;
    let mut count = 0_usize;
    for (index, extent) in extents.into_iter().enumerate() {
        if extent.length == 0 {
            out.truncate(start);
            return Err(ProtoError::ZeroLengthExtent { index });
        }
        let length = extent.length.min(longest);
        put_u32(out, length as u32);
        put_u32(out, extent.flags.bits());
        covered += length;
        count += 1;
        if req_one || covered >= wanted || count == MAX_BLOCK_STATUS_EXTENTS {
            break;
        }
    }
    if count == 0 {
        out.truncate(start);
        return Err(ProtoError::NoExtents);
    }

    let header = ChunkHeader {
        flags: if done {
            ReplyFlags::DONE
        } else {
            ReplyFlags::empty()
        },
        chunk_type: NBD_REPLY_TYPE_BLOCK_STATUS,
        cookie: request.cookie,
        // At most 4 + 8 * 2^20 bytes.
        length: (4 + 8 * count) as u32,
    };
    let mut head = [0; CHUNK_HEADER_LEN];
    header.encode(&mut head);
    out[start..start + CHUNK_HEADER_LEN].copy_from_slice(&head);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::request::{Command, Cookie};
    use crate::proto::structured::Chunk;

    fn status(length: u32, flags: CommandFlags) -> Request {
        Request {
            flags,
            command: Command::BlockStatus,
            cookie: Cookie(5),
            offset: 0,
            length,
        }
    }

    fn extent(length: u64) -> Extent {
        Extent {
            length,
            flags: BlockStatusFlags::empty(),
        }
    }

    /// Builds the chunk and decodes it back into its descriptors' lengths.
    fn build(request: &Request, extents: &[u64]) -> Result<Vec<u32>, ProtoError> {
        let mut out = Vec::new();
        let count = encode_block_status(
            request,
            1,
            true,
            extents.iter().map(|&len| extent(len)),
            &mut out,
        )?;
        let header = ChunkHeader::decode(out.first_chunk().unwrap()).unwrap();
        assert_eq!(header.length as usize, out.len() - CHUNK_HEADER_LEN);
        assert_eq!(header.cookie, request.cookie);
        let Chunk::BlockStatus {
            context_id: 1,
            descriptors,
        } = Chunk::decode(&header, &out[CHUNK_HEADER_LEN..]).unwrap()
        else {
            panic!("not a block status chunk for context 1");
        };
        assert_eq!(descriptors.len(), count);
        Ok(descriptors
            .iter()
            .map(|descriptor| descriptor.length)
            .collect())
    }

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        let holes = Extent {
            length: 0x1000,
            flags: BlockStatusFlags::HOLE | BlockStatusFlags::ZERO,
        };
        encode_block_status(
            &status(0x1000, CommandFlags::empty()),
            1,
            true,
            [holes],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            b"\x66\x8e\x33\xef\x00\x01\x00\x05\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x0c\
              \x00\x00\x00\x01\x00\x00\x10\x00\x00\x00\x00\x03"
        );
    }

    #[test]
    fn only_the_last_extent_may_run_past_the_request() {
        let request = status(3000, CommandFlags::empty());
        assert_eq!(
            build(&request, &[1000, 1000, 5000, 7000]).unwrap(),
            [1000, 1000, 5000]
        );
        assert_eq!(build(&request, &[3000, 1]).unwrap(), [3000]);
        assert_eq!(build(&request, &[500]).unwrap(), [500]);
    }

    #[test]
    fn req_one_sends_one_extent_within_the_request() {
        let request = status(3000, CommandFlags::REQ_ONE);
        assert_eq!(build(&request, &[5000, 1]).unwrap(), [3000]);
        assert_eq!(build(&request, &[1000, 1000]).unwrap(), [1000]);
        assert_eq!(
            build(&status(0, CommandFlags::REQ_ONE), &[1]),
            Err(ProtoError::ZeroLengthRequest)
        );
    }

    #[test]
    fn lengths_are_clamped_to_32_bits() {
        let request = status(u32::MAX, CommandFlags::empty());
        assert_eq!(build(&request, &[1 << 40, 1]).unwrap(), [u32::MAX]);
    }

    #[test]
    fn at_most_2_pow_20_descriptors() {
        let request = status(u32::MAX, CommandFlags::empty());
        let mut out = Vec::new();
        let many = std::iter::repeat_n(extent(1), MAX_BLOCK_STATUS_EXTENTS + 5);
        assert_eq!(
            encode_block_status(&request, 1, true, many, &mut out),
            Ok(MAX_BLOCK_STATUS_EXTENTS)
        );
        assert_eq!(
            out.len(),
            CHUNK_HEADER_LEN + 4 + 8 * MAX_BLOCK_STATUS_EXTENTS
        );
    }

    #[test]
    fn no_or_empty_extents_are_refused_and_write_nothing() {
        let request = status(4096, CommandFlags::empty());
        let mut out = vec![1, 2];
        assert_eq!(
            encode_block_status(&request, 1, true, [], &mut out),
            Err(ProtoError::NoExtents)
        );
        assert_eq!(
            encode_block_status(&request, 1, true, [extent(512), extent(0)], &mut out),
            Err(ProtoError::ZeroLengthExtent { index: 1 })
        );
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn a_zero_length_request_gets_one_extent() {
        assert_eq!(
            build(&status(0, CommandFlags::empty()), &[512, 512]).unwrap(),
            [512]
        );
    }
}
