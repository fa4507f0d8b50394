//! The checks a request must pass before the server acts on it, and the errors the spec assigns
//! to each failure.

use super::errno::Errno;
use super::export::Negotiated;
use super::flags::{CommandFlags, TransmissionFlags};
use super::request::{Command, Request};

/// The largest write payload the server discards to refuse a write and keep the connection. The
/// spec says a payload up to 2^25 bytes should never be taken for a denial of service; past
/// that, the server may hard-disconnect instead of reading gigabytes it will throw away.
pub const DISCARD_LIMIT: u32 = 1 << 25;

/// Why a request is refused, and what becomes of the data that follows its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The error to reply with.
    pub errno: Errno,
    /// What to do with the request's payload before replying.
    pub payload: RefusedPayload,
}

/// What the server does with the payload of a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedPayload {
    /// The request has no payload: reply at once.
    None,
    /// Read and throw away this many bytes, then reply; the connection goes on.
    Discard(u32),
    /// The payload is over [`DISCARD_LIMIT`]: hard-disconnect without replying.
    Disconnect,
}

impl Request {
    /// Checks the request against what the handshake negotiated.
    ///
    /// The errors are the spec's, checked in this order:
    /// - an unknown command: `NBD_EINVAL`;
    /// - a flag unknown, not valid for the command, or for a feature not advertised (`FUA`
    ///   without `SEND_FUA`, `DF` without `SEND_DF`, `FAST_ZERO` without `SEND_FAST_ZERO`):
    ///   `NBD_EINVAL`;
    /// - a write, trim or write-zeroes to a read-only export: `NBD_EPERM`;
    /// - a command not advertised (flush, trim, write-zeroes without their flag, block status
    ///   without structured replies and a selected `base:allocation`): `NBD_EINVAL`. A cache
    ///   request is accepted without `SEND_CACHE`, since clients send it anyway;
    /// - a read over the maximum payload: `NBD_EOVERFLOW` with structured replies (the spec's
    ///   up-front refusal of large reads), `NBD_EINVAL` without; a write over it: `NBD_EINVAL`.
    ///   Block status, trim, write-zeroes and cache lengths are not bounded by it (any 32-bit
    ///   length is valid), but a block status of length zero is `NBD_EINVAL`: with `REQ_ONE` no
    ///   extent could answer it;
    /// - a range past the end of the export: `NBD_ENOSPC` for write and write-zeroes,
    ///   `NBD_EINVAL` for the others;
    /// - an offset or length not a multiple of the minimum block size: `NBD_EINVAL` (a length
    ///   that ends exactly at the end of an export of unaligned size is accepted).
    ///
    /// `NBD_CMD_DISC` always passes, and flush ignores its offset and length, which the spec
    /// reserves. `NBD_ENOTSUP` is never returned here: only the server can tell that a
    /// fast-zero request would not be fast.
    pub fn validate(&self, negotiated: &Negotiated) -> Result<(), Refusal> {
        self.check(negotiated).map_err(|errno| Refusal {
            errno,
            payload: self.refused_payload(),
        })
    }

    fn refused_payload(&self) -> RefusedPayload {
        match self.payload_len() {
            0 => RefusedPayload::None,
            length if length <= DISCARD_LIMIT => RefusedPayload::Discard(length),
            _ => RefusedPayload::Disconnect,
        }
    }

    fn check(&self, negotiated: &Negotiated) -> Result<(), Errno> {
        let export = &negotiated.export;
        let advertised = export.flags;
        let valid_flags = CommandFlags::FUA
            | match self.command {
                Command::Unknown(_) => return Err(Errno::EINVAL),
                Command::Disc => return Ok(()),
                Command::Read => CommandFlags::DF,
                Command::WriteZeroes => CommandFlags::NO_HOLE | CommandFlags::FAST_ZERO,
                Command::BlockStatus => CommandFlags::REQ_ONE,
                Command::Write | Command::Flush | Command::Trim | Command::Cache => {
                    CommandFlags::empty()
                }
            };
        let flag_needs = [
            (CommandFlags::FUA, TransmissionFlags::SEND_FUA),
            (CommandFlags::DF, TransmissionFlags::SEND_DF),
            (CommandFlags::FAST_ZERO, TransmissionFlags::SEND_FAST_ZERO),
        ];
        let flag_not_advertised = flag_needs
            .iter()
            .any(|&(flag, needs)| self.flags.contains(flag) && !advertised.contains(needs));
        if !self.flags.difference(valid_flags).is_empty() || flag_not_advertised {
            return Err(Errno::EINVAL);
        }

        let writes = matches!(
            self.command,
            Command::Write | Command::Trim | Command::WriteZeroes
        );
        if writes && advertised.contains(TransmissionFlags::READ_ONLY) {
            return Err(Errno::EPERM);
        }
        let advertised_command = match self.command {
            Command::Flush => advertised.contains(TransmissionFlags::SEND_FLUSH),
            Command::Trim => advertised.contains(TransmissionFlags::SEND_TRIM),
            Command::WriteZeroes => advertised.contains(TransmissionFlags::SEND_WRITE_ZEROES),
            Command::BlockStatus => {
                negotiated.structured_replies && negotiated.base_allocation.is_some()
            }
            _ => true,
        };
        if !advertised_command {
            return Err(Errno::EINVAL);
        }
        if self.command == Command::Flush {
            return Ok(());
        }

        let max_payload = export.block_sizes.maximum();
        match self.command {
            Command::Read if self.length > max_payload => {
                return Err(if negotiated.structured_replies {
                    Errno::EOVERFLOW
                } else {
                    Errno::EINVAL
                });
            }
            Command::Write if self.length > max_payload => return Err(Errno::EINVAL),
            Command::BlockStatus if self.length == 0 => return Err(Errno::EINVAL),
            _ => {}
        }

        let end = self.offset.checked_add(u64::from(self.length));
        if end.is_none_or(|end| end > export.size) {
            return Err(match self.command {
                Command::Write | Command::WriteZeroes => Errno::ENOSPC,
                _ => Errno::EINVAL,
            });
        }

        let minimum = u64::from(export.block_sizes.minimum());
        let length_aligned = u64::from(self.length) % minimum == 0 || end == Some(export.size);
        if self.offset % minimum != 0 || !length_aligned {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::export::{BlockSizes, ExportInfo};
    use crate::proto::request::Cookie;

    const SIZE: u64 = 1 << 20;

    fn negotiated(flags: TransmissionFlags) -> Negotiated {
        Negotiated {
            export: ExportInfo {
                name: "disk".into(),
                description: String::new(),
                size: SIZE,
                flags: flags | TransmissionFlags::HAS_FLAGS,
                block_sizes: BlockSizes::DEFAULT,
            },
            structured_replies: true,
            base_allocation: Some(1),
        }
    }

    fn full() -> Negotiated {
        negotiated(
            TransmissionFlags::SEND_FLUSH
                | TransmissionFlags::SEND_FUA
                | TransmissionFlags::SEND_TRIM
                | TransmissionFlags::SEND_WRITE_ZEROES
                | TransmissionFlags::SEND_DF
                | TransmissionFlags::SEND_CACHE
                | TransmissionFlags::SEND_FAST_ZERO,
        )
    }

    fn request(command: Command, flags: CommandFlags, offset: u64, length: u32) -> Request {
        Request {
            flags,
            command,
            cookie: Cookie(1),
            offset,
            length,
        }
    }

    fn errno(result: Result<(), Refusal>) -> Option<Errno> {
        result.err().map(|refusal| refusal.errno)
    }

    #[test]
    fn well_formed_requests_pass() {
        let n = full();
        let none = CommandFlags::empty();
        for request in [
            request(Command::Read, CommandFlags::FUA | CommandFlags::DF, 0, 4096),
            request(Command::Write, CommandFlags::FUA, SIZE - 512, 512),
            request(Command::Flush, none, 0, 0),
            request(Command::Trim, none, 0, SIZE as u32),
            request(Command::Cache, none, 4096, 4096),
            request(
                Command::WriteZeroes,
                CommandFlags::NO_HOLE | CommandFlags::FAST_ZERO,
                0,
                SIZE as u32,
            ),
            request(Command::BlockStatus, CommandFlags::REQ_ONE, 0, SIZE as u32),
            request(Command::Disc, none, 0, 0),
            request(Command::Read, none, SIZE, 0),
        ] {
            assert_eq!(request.validate(&n), Ok(()), "{request:?}");
        }
    }

    #[test]
    fn unknown_commands_and_flags_are_einval() {
        let n = full();
        assert_eq!(
            errno(request(Command::Unknown(8), CommandFlags::empty(), 0, 0).validate(&n)),
            Some(Errno::EINVAL)
        );
        let unknown_flag = CommandFlags::from_bits_retain(1 << 9);
        assert_eq!(
            errno(request(Command::Read, unknown_flag, 0, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            errno(request(Command::Read, CommandFlags::PAYLOAD_LEN, 0, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
    }

    #[test]
    fn flags_must_fit_the_command() {
        let n = full();
        for (command, flag) in [
            (Command::Write, CommandFlags::NO_HOLE),
            (Command::Write, CommandFlags::DF),
            (Command::Read, CommandFlags::REQ_ONE),
            (Command::Trim, CommandFlags::FAST_ZERO),
            (Command::Cache, CommandFlags::NO_HOLE),
            (Command::BlockStatus, CommandFlags::DF),
        ] {
            assert_eq!(
                errno(request(command, flag, 0, 512).validate(&n)),
                Some(Errno::EINVAL)
            );
        }
    }

    #[test]
    fn flags_need_their_feature_advertised() {
        let n = negotiated(TransmissionFlags::SEND_WRITE_ZEROES);
        assert_eq!(
            errno(request(Command::Write, CommandFlags::FUA, 0, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            errno(request(Command::Read, CommandFlags::DF, 0, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            errno(request(Command::WriteZeroes, CommandFlags::FAST_ZERO, 0, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            request(Command::WriteZeroes, CommandFlags::NO_HOLE, 0, 512).validate(&n),
            Ok(())
        );
    }

    #[test]
    fn writes_to_a_read_only_export_are_eperm() {
        let n = negotiated(
            TransmissionFlags::READ_ONLY
                | TransmissionFlags::SEND_TRIM
                | TransmissionFlags::SEND_WRITE_ZEROES,
        );
        for command in [Command::Write, Command::Trim, Command::WriteZeroes] {
            assert_eq!(
                errno(request(command, CommandFlags::empty(), 0, 512).validate(&n)),
                Some(Errno::EPERM)
            );
        }
        assert_eq!(
            request(Command::Read, CommandFlags::empty(), 0, 512).validate(&n),
            Ok(())
        );
    }

    #[test]
    fn commands_need_their_feature_advertised() {
        let n = negotiated(TransmissionFlags::empty());
        for command in [Command::Flush, Command::Trim, Command::WriteZeroes] {
            assert_eq!(
                errno(request(command, CommandFlags::empty(), 0, 512).validate(&n)),
                Some(Errno::EINVAL)
            );
        }
        assert_eq!(
            request(Command::Cache, CommandFlags::empty(), 0, 512).validate(&n),
            Ok(())
        );
    }

    #[test]
    fn block_status_needs_a_selected_context() {
        let status = request(Command::BlockStatus, CommandFlags::empty(), 0, 512);
        let mut n = full();
        n.base_allocation = None;
        assert_eq!(errno(status.validate(&n)), Some(Errno::EINVAL));
        let mut n = full();
        n.structured_replies = false;
        assert_eq!(errno(status.validate(&n)), Some(Errno::EINVAL));
    }

    #[test]
    fn past_the_end_is_enospc_for_writes_and_einval_otherwise() {
        let n = full();
        let none = CommandFlags::empty();
        for (command, expected) in [
            (Command::Write, Errno::ENOSPC),
            (Command::WriteZeroes, Errno::ENOSPC),
            (Command::Read, Errno::EINVAL),
            (Command::Trim, Errno::EINVAL),
            (Command::Cache, Errno::EINVAL),
            (Command::BlockStatus, Errno::EINVAL),
        ] {
            assert_eq!(
                errno(request(command, none, SIZE - 512, 1024).validate(&n)),
                Some(expected)
            );
            assert_eq!(
                errno(request(command, none, SIZE + 512, 512).validate(&n)),
                Some(expected)
            );
            assert_eq!(
                errno(request(command, none, u64::MAX, 512).validate(&n)),
                Some(expected)
            );
        }
    }

    #[test]
    fn reads_and_writes_are_bounded_by_the_maximum_payload() {
        let mut n = full();
        n.export.size = u64::MAX;
        let over = DEFAULT_MAX + 1;
        let none = CommandFlags::empty();
        assert_eq!(
            request(Command::Read, none, 0, DEFAULT_MAX).validate(&n),
            Ok(())
        );
        assert_eq!(
            errno(request(Command::Read, none, 0, over).validate(&n)),
            Some(Errno::EOVERFLOW)
        );
        assert_eq!(
            errno(request(Command::Write, none, 0, over).validate(&n)),
            Some(Errno::EINVAL)
        );
        n.structured_replies = false;
        assert_eq!(
            errno(request(Command::Read, none, 0, over).validate(&n)),
            Some(Errno::EINVAL)
        );
    }

    const DEFAULT_MAX: u32 = 1 << 25;

    #[test]
    fn other_lengths_may_use_all_32_bits() {
        let mut n = full();
        n.export.size = u64::MAX;
        for command in [
            Command::BlockStatus,
            Command::Trim,
            Command::WriteZeroes,
            Command::Cache,
        ] {
            assert_eq!(
                request(command, CommandFlags::empty(), 0, u32::MAX).validate(&n),
                Ok(())
            );
        }
    }

    #[test]
    fn block_status_of_length_zero_is_einval() {
        let status = request(Command::BlockStatus, CommandFlags::REQ_ONE, 0, 0);
        assert_eq!(errno(status.validate(&full())), Some(Errno::EINVAL));
    }

    #[test]
    fn unaligned_requests_are_einval() {
        let mut n = full();
        n.export.block_sizes = BlockSizes::new(512, 4096, 1 << 25).unwrap();
        let none = CommandFlags::empty();
        assert_eq!(request(Command::Read, none, 512, 1024).validate(&n), Ok(()));
        assert_eq!(
            errno(request(Command::Read, none, 256, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            errno(request(Command::Write, none, 0, 100).validate(&n)),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            errno(request(Command::Trim, none, 1, 512).validate(&n)),
            Some(Errno::EINVAL)
        );
        n.export.size = SIZE + 100;
        assert_eq!(request(Command::Read, none, SIZE, 100).validate(&n), Ok(()));
    }

    /// Found by the `proto_request` fuzz target (whose check was wrong, not the codec): a
    /// disconnect with unknown flags, a nonzero offset and length passes, as it gets no reply.
    #[test]
    fn disc_passes_whatever_it_carries() {
        let header = *b"\x25\x60\x95\x13\x48\x00\x00\x02\x01\x00\x00\x00\x00\x00\x00\x00\
            \x00\x00\x01\x25\x60\x95\x13\x00\x01\x46\x00\x27";
        let disc = Request::decode(&header).unwrap();
        assert_eq!(disc.command, Command::Disc);
        assert_eq!(
            disc.validate(&negotiated(TransmissionFlags::READ_ONLY)),
            Ok(())
        );
    }

    #[test]
    fn a_refused_write_says_what_to_do_with_its_payload() {
        let mut n = full();
        n.export.flags |= TransmissionFlags::READ_ONLY;
        let write = |length| request(Command::Write, CommandFlags::empty(), 0, length);
        assert_eq!(
            write(4096).validate(&n),
            Err(Refusal {
                errno: Errno::EPERM,
                payload: RefusedPayload::Discard(4096)
            })
        );
        let huge = write(DISCARD_LIMIT + 1).validate(&full());
        assert_eq!(
            huge,
            Err(Refusal {
                errno: Errno::EINVAL,
                payload: RefusedPayload::Disconnect
            })
        );
        let read = request(Command::Read, CommandFlags::empty(), SIZE, 512).validate(&n);
        assert_eq!(
            read,
            Err(Refusal {
                errno: Errno::EINVAL,
                payload: RefusedPayload::None
            })
        );
    }
}
