//! Operations described by a pool message's [`Descriptor`](regio_pool::Descriptor).

use regio_pool::{Message, Opcode};

use super::{Kind, Op};
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
        let kind = match d.opcode {
            Opcode::ReadFixed => Kind::ReadFixed { buf: msg, offset },
            Opcode::WriteFixed => Kind::WriteFixed { buf: msg, offset },
            Opcode::Send => Kind::Send { buf: msg, flags: 0 },
            Opcode::Recv => Kind::Recv { buf: msg, flags: 0 },
            Opcode::SendZc => Kind::SendZc { buf: msg, flags: 0 },
            _ => {
                return Err((
                    msg,
                    DescriptorError::WrongQueue("this opcode carries no message buffer"),
                ))
            }
        };
        Ok(Self::new(kind, cookie))
    }
}
