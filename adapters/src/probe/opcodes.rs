//! The io_uring opcodes regio uses, and what it does where one is missing.

use io_uring::opcode;
use serde::Serialize;

/// One opcode regio submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegioOpcode {
    /// The `IORING_OP_*` number.
    pub code: u8,
    /// The name without the `IORING_OP_` prefix.
    pub name: &'static str,
    /// The Linux version that brought it.
    pub since: &'static str,
    /// What regio uses it for.
    pub used_for: &'static str,
    /// What regio does without it; `None` when regio cannot work without it.
    pub instead: Option<&'static str>,
}

const fn op(
    code: u8,
    name: &'static str,
    since: &'static str,
    used_for: &'static str,
    instead: Option<&'static str>,
) -> RegioOpcode {
    RegioOpcode {
        code,
        name,
        since,
        used_for,
        instead,
    }
}

/// Every opcode regio submits, in `IORING_OP_*` order.
pub const REGIO_OPCODES: &[RegioOpcode] = &[
    op(
        opcode::Nop::CODE,
        "NOP",
        "5.1",
        "ring round trips and wake-ups",
        None,
    ),
    op(
        opcode::Fsync::CODE,
        "FSYNC",
        "5.1",
        "NBD FLUSH and FUA",
        None,
    ),
    op(
        opcode::ReadFixed::CODE,
        "READ_FIXED",
        "5.1",
        "disk reads into registered buffers",
        None,
    ),
    op(
        opcode::WriteFixed::CODE,
        "WRITE_FIXED",
        "5.1",
        "disk writes from registered buffers",
        None,
    ),
    op(
        opcode::PollAdd::CODE,
        "POLL_ADD",
        "5.1",
        "readiness of foreign fds (eventfds)",
        None,
    ),
    op(
        opcode::SendMsg::CODE,
        "SENDMSG",
        "5.3",
        "datagram sends to an address (UdpSocket::send_to)",
        None,
    ),
    op(
        opcode::RecvMsg::CODE,
        "RECVMSG",
        "5.3",
        "datagram receives with the sender's address (UdpSocket::recv_from)",
        None,
    ),
    op(
        opcode::Timeout::CODE,
        "TIMEOUT",
        "5.4",
        "timers and bounded waits",
        None,
    ),
    op(
        opcode::Accept::CODE,
        "ACCEPT",
        "5.5",
        "accepting connections into fixed-file slots",
        None,
    ),
    op(
        opcode::AsyncCancel::CODE,
        "ASYNC_CANCEL",
        "5.5",
        "cancelling dropped operations",
        None,
    ),
    op(
        opcode::Connect::CODE,
        "CONNECT",
        "5.5",
        "outgoing connections",
        None,
    ),
    op(
        opcode::Fallocate::CODE,
        "FALLOCATE",
        "5.6",
        "NBD TRIM and WRITE_ZEROES",
        Some("the NBD target does not advertise TRIM and WRITE_ZEROES"),
    ),
    op(
        opcode::Close::CODE,
        "CLOSE",
        "5.6",
        "closing fixed files",
        None,
    ),
    op(
        opcode::FilesUpdate::CODE,
        "FILES_UPDATE",
        "5.6",
        "filling fixed-file slots",
        None,
    ),
    op(
        opcode::Read::CODE,
        "READ",
        "5.6",
        "reads into unregistered buffers",
        None,
    ),
    op(
        opcode::Write::CODE,
        "WRITE",
        "5.6",
        "writes from unregistered buffers",
        None,
    ),
    op(
        opcode::Fadvise::CODE,
        "FADVISE",
        "5.6",
        "NBD CACHE (readahead)",
        Some("the NBD target answers CACHE without reading ahead"),
    ),
    op(opcode::Send::CODE, "SEND", "5.6", "socket sends", None),
    op(
        opcode::Recv::CODE,
        "RECV",
        "5.6",
        "socket receives, multishot with buffer rings",
        None,
    ),
    op(
        opcode::Splice::CODE,
        "SPLICE",
        "5.7",
        "send_file without a copy",
        Some("send_file reads into a registered buffer and sends it (one copy)"),
    ),
    op(
        opcode::MsgRingData::CODE,
        "MSG_RING",
        "5.18",
        "waking a ring's owner after a cross-thread post",
        Some("an eventfd write wakes the ring's owner"),
    ),
    op(
        opcode::SendZc::CODE,
        "SEND_ZC",
        "6.0",
        "zero-copy sends from registered buffers (NBD READ replies)",
        Some("SEND, which copies the reply into the socket buffer"),
    ),
    op(
        opcode::SendMsgZc::CODE,
        "SENDMSG_ZC",
        "6.1",
        "zero-copy vectored sends (reply header plus data)",
        Some("one SEND_ZC (or SEND) per buffer"),
    ),
];

/// Whether one of [`REGIO_OPCODES`] is supported here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OpcodeSupport {
    /// The opcode.
    #[serde(flatten)]
    pub opcode: RegioOpcode,
    /// Whether `IORING_REGISTER_PROBE` marked it supported.
    pub supported: bool,
}

/// Each of [`REGIO_OPCODES`], supported when its code is in `supported` (sorted).
pub(super) fn support(supported: &[u8]) -> Vec<OpcodeSupport> {
    REGIO_OPCODES
        .iter()
        .map(|&opcode| OpcodeSupport {
            opcode,
            supported: supported.binary_search(&opcode.code).is_ok(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_opcode_order_without_duplicates() {
        for pair in REGIO_OPCODES.windows(2) {
            assert!(pair[0].code < pair[1].code, "{pair:?}");
        }
    }

    #[test]
    fn names_match_the_kernel_numbers() {
        let code = |name| REGIO_OPCODES.iter().find(|o| o.name == name).unwrap().code;
        // Numbers from include/uapi/linux/io_uring.h.
        assert_eq!(code("NOP"), 0);
        assert_eq!(code("READ_FIXED"), 4);
        assert_eq!(code("SEND"), 26);
        assert_eq!(code("MSG_RING"), 40);
        assert_eq!(code("SEND_ZC"), 47);
        assert_eq!(code("SENDMSG_ZC"), 48);
    }

    #[test]
    fn every_opcode_an_operation_builds_is_in_the_table() {
        use io_uring::opcode::*;
        for code in [
            Nop::CODE,
            ReadFixed::CODE,
            WriteFixed::CODE,
            Fsync::CODE,
            Timeout::CODE,
            Accept::CODE,
            AcceptMulti::CODE,
            AsyncCancel::CODE,
            Connect::CODE,
            Fallocate::CODE,
            Close::CODE,
            Send::CODE,
            Recv::CODE,
            RecvMulti::CODE,
            Splice::CODE,
            MsgRingData::CODE,
            MsgRingSendFd::CODE,
            SendZc::CODE,
        ] {
            let (name, since) = crate::adapter::since(code);
            assert_ne!(
                since, "a later",
                "opcode {code} ({name}) is missing from REGIO_OPCODES"
            );
        }
    }
}
