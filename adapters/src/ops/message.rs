//! Operations described by a pool message's [`Descriptor`](regio_pool::Descriptor).

use regio_pool::{DescFlags, Message, Opcode};

use super::{BufUse, Op};
use crate::error::DescriptorError;

/// `RWF_DSYNC` (include/uapi/linux/fs.h): the write is durable before it completes.
const RWF_DSYNC: u32 = 0x2;

impl Op<Message> {
    /// The operation a message's descriptor describes, carrying the message as its buffer, with
    /// the descriptor's cookie: `Nop` (the message comes back with the completion), `ReadFixed`
    /// and `WriteFixed` at the descriptor's `offset`, `Send`, `Recv` and `SendZc`. The file is the
    /// work queue's (see [`WorkQueue::post_message`](crate::WorkQueue::post_message)).
    ///
    /// Every field of the descriptor reaches the SQE or is refused: the flags become SQE flags
    /// ([`DescFlags::DRAIN`], [`DescFlags::ASYNC`]) or the write's `RWF_DSYNC`
    /// ([`DescFlags::FUA`]). The slice is checked when the operation is posted (see
    /// [`IoBuf`](crate::IoBuf)).
    ///
    /// # Errors
    ///
    /// Hands the message back with [`DescriptorError::Invalid`] for flags the adapter does not
    /// know, FUA on anything but `WriteFixed`, or an offset on an operation that has none.
    pub fn from_message(msg: Message) -> Result<Self, (Message, DescriptorError)> {
        let d = msg.descriptor();
        let (opcode, flags, offset, cookie) = (d.opcode, d.flags, d.offset, d.cookie);
        let refuse = |msg, why| Err((msg, DescriptorError::Invalid(why)));
        if !DescFlags::ALL.contains(flags) {
            return refuse(msg, "the descriptor has flags no adapter knows");
        }
        if flags.contains(DescFlags::FUA) && opcode != Opcode::WriteFixed {
            return refuse(msg, "FUA applies to WriteFixed only");
        }
        if offset != 0 && !opcode.has_offset() {
            return refuse(msg, "only ReadFixed and WriteFixed have a file offset");
        }
        let mut op = match opcode {
            Opcode::ReadFixed => Self::read_fixed(msg, offset, cookie),
            Opcode::WriteFixed => Self::write_fixed(msg, offset, cookie),
            Opcode::Send => Self::send(msg, 0, cookie),
            Opcode::Recv => Self::recv(msg, 0, cookie),
            Opcode::SendZc => Self::send_zc(msg, 0, cookie),
            _ => Self::nop(cookie).with_buf(msg, BufUse::None),
        };
        if flags.contains(DescFlags::FUA) {
            op.sqe.op_flags |= RWF_DSYNC;
        }
        if flags.contains(DescFlags::DRAIN) {
            op = op.drain();
        }
        if flags.contains(DescFlags::ASYNC) {
            op = op.force_async();
        }
        Ok(op)
    }
}
