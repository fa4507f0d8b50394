//! [`OwnedReadHalf`] and [`OwnedWriteHalf`]: a stream split in two, for a reading task and a
//! writing task.

use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use regio_pool::Message;

use super::op::{Kind, SendZcAll, Transfer, TransferAll};
use super::stream::{Stream, StreamSocket};
use crate::buf::{IoBuf, Lent};
use crate::fs::File;
use crate::queues::{AnyFd, FdQueues};

/// The receiving half of a [`Stream`] ([`Stream::into_split`]): `recv` and `recv_exact`.
pub struct OwnedReadHalf<S = std::net::TcpStream> {
    queues: Arc<FdQueues<S>>,
}

/// The sending half of a [`Stream`] ([`Stream::into_split`]): `send`, `send_all`, `send_zc`,
/// `send_zc_all`.
/// Dropping it shuts down the writing side (the peer sees the end of the stream), as tokio's
/// does.
pub struct OwnedWriteHalf<S: StreamSocket = std::net::TcpStream> {
    queues: Arc<FdQueues<S>>,
}

impl<S: StreamSocket> Stream<S> {
    /// Splits the stream into a receiving half and a sending half, which two tasks (on any
    /// workers) can use at once. The socket closes when both halves are gone and their
    /// operations have completed.
    pub fn into_split(self) -> (OwnedReadHalf<S>, OwnedWriteHalf<S>) {
        let read = OwnedReadHalf {
            queues: Arc::clone(&self.queues),
        };
        (
            read,
            OwnedWriteHalf {
                queues: self.queues,
            },
        )
    }
}

/// The half's queues, as operations hold them.
fn erased<S: StreamSocket>(queues: &Arc<FdQueues<S>>) -> Arc<FdQueues> {
    let queues: Arc<FdQueues<AnyFd>> = queues.clone();
    queues
}

impl<S: StreamSocket> OwnedReadHalf<S> {
    /// As [`Stream::recv`].
    pub fn recv<B: IoBuf>(&self, buf: B) -> Lent<B, Transfer, usize> {
        let queues = erased(&self.queues);
        Lent::one(buf, true, move |msg| Transfer::new(queues, Kind::Recv, msg))
    }

    /// As [`Stream::recv_exact`].
    pub fn recv_exact<B: IoBuf>(&self, buf: B) -> Lent<B, TransferAll, ()> {
        Lent::all(buf, true, erased(&self.queues), |queues, msg| {
            TransferAll::new(queues, Kind::Recv, msg)
        })
    }

    /// The standard socket, for addresses and options.
    pub fn as_std(&self) -> &S {
        self.queues.handle()
    }
}

impl<S: StreamSocket> OwnedWriteHalf<S> {
    /// As [`Stream::send`].
    pub fn send<B: IoBuf>(&self, buf: B) -> Lent<B, Transfer, usize> {
        let queues = erased(&self.queues);
        Lent::one(buf, false, move |msg| {
            Transfer::new(queues, Kind::Send, msg)
        })
    }

    /// As [`Stream::send_all`].
    pub fn send_all<B: IoBuf>(&self, buf: B) -> Lent<B, TransferAll, ()> {
        Lent::all(buf, false, erased(&self.queues), |queues, msg| {
            TransferAll::new(queues, Kind::Send, msg)
        })
    }

    /// As [`Stream::send_zc`].
    pub fn send_zc(&self, buf: Message) -> Transfer {
        Transfer::new(erased(&self.queues), Kind::SendZc, buf)
    }

    /// As [`Stream::send_zc_all`].
    pub fn send_zc_all(&self, buf: Message) -> SendZcAll {
        SendZcAll::new(erased(&self.queues), buf)
    }

    /// As [`Stream::send_file`].
    ///
    /// # Errors
    ///
    /// As for [`Stream::send_file`].
    pub fn send_file(
        &self,
        file: &File,
        offset: u64,
        len: u64,
    ) -> impl std::future::Future<Output = std::io::Result<u64>> + Send + 'static {
        let socket: Arc<dyn AsRawFd + Send + Sync> = self.queues.clone();
        super::sendfile::send_file(file.erased(), socket, offset, len)
    }

    /// As [`Stream::shutdown`]: `Shutdown::Write` ends the stream for the peer before the half
    /// is dropped.
    ///
    /// # Errors
    ///
    /// As for `shutdown(2)`.
    pub async fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        self.queues.handle().shutdown(how)
    }

    /// The standard socket, for addresses and options.
    pub fn as_std(&self) -> &S {
        self.queues.handle()
    }
}

impl<S: StreamSocket> Drop for OwnedWriteHalf<S> {
    fn drop(&mut self) {
        // A socket already shut down or reset refuses with ENOTCONN: nothing left to end.
        let _ = self.queues.handle().shutdown(Shutdown::Write);
    }
}

impl<S: StreamSocket> AsRawFd for OwnedReadHalf<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.queues.handle().as_raw_fd()
    }
}

impl<S: StreamSocket> AsRawFd for OwnedWriteHalf<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.queues.handle().as_raw_fd()
    }
}

impl<S: StreamSocket> std::fmt::Debug for OwnedReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedReadHalf")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl<S: StreamSocket> std::fmt::Debug for OwnedWriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedWriteHalf")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}
