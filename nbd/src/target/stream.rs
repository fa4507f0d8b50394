//! The two halves of a client connection, as the server uses them: [`RecvHalf`] and
//! [`SendHalf`], implemented by the runtime's TCP and Unix-socket halves, so one connection
//! code serves both.

use std::future::Future;
use std::io;

use regio_pool::Message;

/// The receiving half of a connection.
pub trait RecvHalf: Send + Sync + 'static {
    /// Receives until the descriptor's bytes are all filled; `UnexpectedEof` if the peer
    /// closes first.
    fn recv_exact(&self, buf: Message)
        -> impl Future<Output = (io::Result<()>, Message)> + Send;
}

/// The sending half of a connection.
pub trait SendHalf: Send + Sync + 'static {
    /// Sends all the descriptor's bytes.
    fn send_all(&self, buf: Message) -> impl Future<Output = (io::Result<()>, Message)> + Send;
    /// Sends the descriptor's bytes without copying them (`SEND_ZC`); resolves once the kernel
    /// is done with the buffer, with the count sent.
    fn send_zc(&self, buf: Message) -> impl Future<Output = (io::Result<usize>, Message)> + Send;
    /// Shuts the connection down both ways.
    fn close(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A connection that splits into halves the server can use on two tasks.
pub trait Connection: Send + 'static {
    /// The receiving half.
    type Recv: RecvHalf;
    /// The sending half.
    type Send: SendHalf;
    /// Splits the connection.
    fn split(self) -> (Self::Recv, Self::Send);
}
