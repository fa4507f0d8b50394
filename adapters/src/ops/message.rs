//! Operations described by a pool message's [`Descriptor`](regio_pool::Descriptor).

use regio_pool::{Message, Opcode};

use super::Op;
use crate::error::DescriptorError;

impl Op<Message> {
    /// The operation a message's descriptor describes, carrying the message as its buffer:
    /// `ReadFixed` and `WriteFixed` at the descriptor's `offset`, `Send`, `Recv` and `SendZc`,
    /// with the descriptor's cookie. The file is the work queue's (see
    /// [`WorkQueue::post_message`](crate::WorkQueue::post_message)).
    ///
    /// # Errors
    ///
    /// Hands the message back with [`DescriptorError::WrongQueue`] for the opcodes that carry
    /// no buffer; build those with the other constructors.
    pub fn from_message(msg: Message) -> Result<Self, (Message, DescriptorError)> {
        let d = msg.descriptor();
        let (offset, cookie) = (d.offset, d.cookie);
        Ok(match d.opcode {
            Opcode::ReadFixed => Self::read_fixed(msg, offset, cookie),
            Opcode::WriteFixed => Self::write_fixed(msg, offset, cookie),
            Opcode::Send => Self::send(msg, 0, cookie),
            Opcode::Recv => Self::recv(msg, 0, cookie),
            Opcode::SendZc => Self::send_zc(msg, 0, cookie),
            _ => {
                return Err((
                    msg,
                    DescriptorError::WrongQueue("this opcode carries no message buffer"),
                ))
            }
        })
    }
}
