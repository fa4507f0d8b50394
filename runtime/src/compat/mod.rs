//! The compatibility layer (cargo feature `compat`): tokio's and the `futures` crate's
//! `AsyncRead`, `AsyncBufRead` and `AsyncWrite` for regio's stream sockets, so that ecosystem
//! crates written against those traits (hyper, tonic, codecs, TLS) run on regio.
//!
//! [`Compat`] owns a [`Stream`] (a [`TcpStream`](crate::net::TcpStream) or a Unix stream) and
//! two pool messages: one that receives, one that sends.
//!
//! ```
//! use regio_runtime::compat::Compat;
//! use regio_runtime::net::{TcpListener, TcpStream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let rt = regio_runtime::Runtime::builder().worker_threads(1).pool_class(4096, 16).build()?;
//! let echoed = rt.block_on(rt.spawn(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = regio_runtime::spawn(async move {
//!         let (stream, _) = listener.accept().await?;
//!         let mut io = Compat::new(stream).await;
//!         let mut line = [0u8; 5];
//!         io.read_exact(&mut line).await?;
//!         io.write_all(&line).await?;
//!         io.shutdown().await
//!     });
//!     let mut client = Compat::new(TcpStream::connect(addr).await?).await;
//!     client.write_all(b"hello").await?;
//!     client.flush().await?;
//!     let mut back = Vec::new();
//!     client.read_to_end(&mut back).await?;
//!     server.await.unwrap()?;
//!     Ok::<_, std::io::Error>(back)
//! }))??;
//! assert_eq!(echoed, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The copy it costs, and why
//!
//! These traits lend the caller's buffer for the length of one `poll_read` or `poll_write`
//! call, and a pending call may never be polled again. io_uring needs the opposite: memory that
//! stays put, owned by the operation, until the kernel's final completion. So `Compat` never
//! hands the caller's bytes to the kernel:
//!
//! - a read receives into the read message (a registered buffer), and `poll_read` copies out
//!   of it; what the caller did not take stays there for the next read
//!   ([`AsyncBufRead`](tokio::io::AsyncBufRead) reads it in place, without that copy);
//! - `poll_write` copies the caller's bytes into the write message (up to its size; a
//!   vectored write gathers several slices into it) and starts one send of them, and returns
//!   the count at once. The next write, a flush or a shutdown waits for that send to finish,
//!   and reports its error if it failed.
//!
//! That is one more `memcpy` of every byte in each direction, on top of the kernel's own copy
//! between the socket's buffers and the registered one, and one operation in flight per
//! direction. The owned-buffer API ([`Stream::recv`],
//! [`Stream::send`], [`Stream::send_zc`]) avoids both: use it where the protocol is regio's
//! own.
//!
//! # The end of the stream after a write
//!
//! A send finishes with a completion, so a flush can be pending for a moment after the bytes
//! have left (a tokio `TcpStream`'s never is: its `write(2)` is done inside `poll_write`). A
//! peer that got them may close at once, and the end of the stream may come before the flush
//! does. HTTP servers such as hyper's take the end of the stream during an unflushed response
//! for a client that went away mid-message. So a read that finds the end of the stream while
//! bytes written are not flushed yet reports it one poll later (it wakes its task at once): the
//! caller's flush, which its next step usually is, completes first.
//!
//! # Cancellation
//!
//! A read or write future of the ecosystem's extension traits may be dropped at any point: the
//! operation in flight stays in the `Compat` and the next call picks it up, so no byte is lost.
//! Dropping the `Compat` cancels what is in flight; its messages go back to the pool with their
//! final completions.

mod futures_traits;
mod read;
mod tokio_traits;
mod write;

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use regio_pool::Message;

use self::read::ReadSide;
use self::write::WriteSide;
use crate::net::{Stream, StreamSocket};

/// A stream socket with tokio's and the `futures` crate's I/O traits: see the [module
/// docs](self), which also say what it costs.
pub struct Compat<S> {
    stream: Stream<S>,
    read: ReadSide,
    write: WriteSide,
    /// A read found the end of the stream with bytes written and not flushed, and put it off
    /// once (see the module docs).
    end_put_off: bool,
}

/// A TCP connection with the ecosystem's I/O traits.
pub type TcpCompat = Compat<std::net::TcpStream>;

/// A Unix stream connection with the ecosystem's I/O traits.
pub type UnixCompat = Compat<std::os::unix::net::UnixStream>;

impl<S: StreamSocket> std::fmt::Debug for Compat<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compat")
            .field("stream", &self.stream)
            .field("buffered", &self.read.buffered())
            .finish_non_exhaustive()
    }
}

impl<S: StreamSocket> Compat<S> {
    /// Wraps `stream` with two messages of the current runtime's first pool class (4 KiB in the
    /// default pool), waiting for them if the pool has none free.
    ///
    /// # Panics
    ///
    /// Outside a regio runtime (a task, or [`Runtime::block_on`](crate::Runtime::block_on));
    /// use [`with_buffers`](Self::with_buffers) there.
    pub async fn new(stream: Stream<S>) -> Self {
        let pool = crate::pool();
        let read = pool.acquire().await;
        let write = pool.acquire().await;
        Self::with_buffers(stream, read, write)
    }

    /// Wraps `stream` with the messages it receives into and sends from: their first buffers,
    /// whole (the descriptors are reset). Bigger buffers mean fewer operations for large
    /// transfers.
    pub fn with_buffers(stream: Stream<S>, read: Message, write: Message) -> Self {
        Self {
            stream,
            read: ReadSide::new(read),
            write: WriteSide::new(write),
            end_put_off: false,
        }
    }

    /// The stream, for its own methods (its address, its options). Receiving or sending on it
    /// directly while the `Compat` has bytes buffered or a send in flight mixes the two
    /// orders.
    pub fn get_ref(&self) -> &Stream<S> {
        &self.stream
    }

    /// The received bytes not read yet, after receiving more if there are none; an empty slice
    /// at the end of the stream, put off by one poll after an unflushed write (see the module
    /// docs).
    fn poll_received(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let data = ready!(self.read.poll_fill_buf(&self.stream, cx))?;
        if data.is_empty() && self.write.unflushed() && !self.end_put_off {
            self.end_put_off = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(data))
    }

    /// Reads at most `room` bytes, handing them to `put`; `Ok(0)` at the end of the stream (or
    /// for no room).
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        if room == 0 {
            return Poll::Ready(Ok(0));
        }
        let data = ready!(self.poll_received(cx))?;
        let n = data.len().min(room);
        put(&data[..n]);
        self.read.consume(n);
        Poll::Ready(Ok(n))
    }

    /// Marks `amt` received bytes as read.
    fn consume_received(&mut self, amt: usize) {
        self.read.consume(amt);
    }

    /// Copies as much of `bufs` as the send message takes and starts sending it, once the
    /// previous send has finished; returns the count copied.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.write.poll_write(&self.stream, cx, bufs)
    }

    /// Waits until every written byte has been sent.
    fn poll_flush_sends(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write.poll_flush(cx)
    }

    /// Finishes the send in flight, then shuts the writing side down: the peer reads the end
    /// of the stream.
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.write.poll_flush(cx))?;
        Poll::Ready(StreamSocket::shutdown(
            self.stream.as_std(),
            Shutdown::Write,
        ))
    }

    /// Bytes received and not read yet.
    pub fn buffered(&self) -> usize {
        self.read.buffered()
    }
}

/// Makes `msg`'s descriptor cover its first buffer whole, then `len` bytes of it: a message
/// may come back from an operation with its descriptor shortened.
fn cover(msg: &mut Message, len: usize) {
    let whole = msg.key();
    let desc = msg.descriptor_mut();
    desc.set_slices(&[whole])
        .expect("one slice is always within the descriptor's limit");
    desc.truncate(len);
}

/// The error of a call on a side whose message was lost to a panic in an earlier call.
fn broken() -> io::Error {
    io::Error::other("an earlier call on this Compat panicked while it held its buffer")
}
