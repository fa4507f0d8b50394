//! Sockets on the workers' rings: [`TcpListener`], [`TcpStream`], [`UnixListener`],
//! [`UnixStream`] and [`UdpSocket`], with receives and sends on the runtime's registered pool
//! messages.
//!
//! TCP and Unix streams are one type, [`Stream`] (and [`Listener`]), over the standard
//! library's socket: the operations are written once, and only connecting, binding and
//! addresses differ.
//!
//! A socket is created with the standard library or `socket(2)` on the calling thread, then
//! used through io_uring: each worker that touches it gets a work queue for it on its own ring
//! (made on first use, as for [`fs::File`](crate::fs::File)), so a stream made on one worker
//! can be used from a task on another. Receives and sends act on the registered buffer of a
//! pool [`Message`](regio_pool::Message); accepts and connects are `IORING_OP_ACCEPT` and
//! `IORING_OP_CONNECT`.
//!
//! ```
//! use regio_runtime::net::{TcpListener, TcpStream};
//! use regio_runtime::Runtime;
//!
//! let rt = Runtime::builder().worker_threads(2).pool_class(4096, 64).build()?;
//! let echoed = rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = regio_runtime::spawn(async move {
//!         let (stream, _peer) = listener.accept().await?;
//!         let (n, mut msg) = stream.recv(regio_runtime::pool().try_acquire().unwrap()).await;
//!         msg.descriptor_mut().truncate(n?);
//!         stream.send_all(msg).await.0
//!     });
//!     let client = TcpStream::connect(addr).await?;
//!     let mut msg = regio_runtime::pool().try_acquire().unwrap();
//!     msg.as_mut_slice()[..5].copy_from_slice(b"hello");
//!     msg.descriptor_mut().truncate(5);
//!     let (sent, msg) = client.send_all(msg).await;
//!     sent?;
//!     let (got, msg) = client.recv_exact(msg).await;
//!     got?;
//!     server.await.unwrap()?;
//!     Ok::<_, std::io::Error>(msg.as_slice()[..5].to_vec())
//! })?;
//! assert_eq!(echoed, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Buffers
//!
//! Every receive and send takes a pool `Message` and gives it back with the result, as
//! monoio's do: the kernel owns the buffer while the operation runs. The operation acts on the
//! bytes the message's descriptor names: a fresh message's whole capacity, or what
//! `descriptor_mut().truncate(n)` left. The buffers are registered with the ring, so the
//! kernel reaches them without mapping their pages per operation; plain receives and sends
//! still copy between them and the socket buffers (only [`send_zc`](Stream::send_zc) does
//! not). On kernels before Linux 7.2 a send with flags 0 becomes a fixed-buffer `write(2)` on
//! the socket, which raises `SIGPIPE` on a broken connection (see the adapters' `ops::net`
//! docs). The workers block `SIGPIPE`, so the signal never reaches a program that keeps its
//! default action: such a send fails with `EPIPE`, and the process lives.
//!
//! Stream receives and sends (`recv`, `recv_exact`, `send`, `send_all`) also take a plain
//! `Vec<u8>`, `Box<[u8]>` or `bytes::BytesMut`, copied through a pool message: one `memcpy`
//! each way, see the [`buf`](crate::buf) module.
//!
//! An empty descriptor (`truncate(0)`) is never handed to the kernel: `recv` and `send`
//! complete at once with 0, `recv_exact` and `send_all` with `Ok(())`.
//!
//! # Ownership and cancellation
//!
//! - Dropping an operation's future cancels the operation in the kernel (`ASYNC_CANCEL` on the
//!   same work queue); its buffer goes back to the pool only with the operation's final
//!   completion, never before: the kernel never writes into a buffer the pool has handed out
//!   again. A receive cancelled after it took data has consumed that data.
//! - A `recv_exact` or `send_all` is a sequence of operations; dropping it cancels the one in
//!   flight, and what was moved before is lost with the future.
//! - A dropped accept whose connection arrives anyway closes that connection (the runtime
//!   owns the new descriptor from the completion on; an accept awaited in `block_on` runs as
//!   a task on a worker, for the same reason).
//! - Dropping an [`Incoming`] cancels its multishot accept; the connections it accepted and
//!   did not hand out, and those that come until its final completion, are closed.
//! - Dropping a socket while operations are in flight keeps its descriptor open, and its
//!   fixed-file slot taken, until their final completions; then the slot is emptied on every
//!   ring and freed, and the descriptor closes.
//!
//! # Zero-copy sends
//!
//! A zero-copy send is `IORING_OP_SEND_ZC` on the registered buffer: the NIC (or, on
//! loopback, the receiving socket) reads the pages directly, so no copy is made, and the
//! buffer stays with the kernel until its `F_NOTIF` notification, which comes when every
//! packet that carries its bytes has been acknowledged or dropped: one more completion per
//! send, and a buffer held for a round trip rather than a copy. It pays off for large sends
//! (tens of KiB); for small ones the copy is cheaper than the notification. On loopback the
//! kernel copies the bytes when the receiving socket queues them: there a zero-copy send
//! proves correctness, not speed. A send completes twice, and the two calls differ in which
//! completion their future waits for:
//!
//! - [`Stream::send_zc_all`] resolves at the send's own completion, which says the socket took
//!   every byte (`MSG_WAITALL`: the kernel sends the rest of a short send itself). The buffer
//!   is the send's: the kernel keeps reading it until the notification, and the runtime then
//!   gives it back to the pool, whether or not the caller is still there. A send posted on the
//!   same socket after the future resolved goes out after these bytes, so a stream writer
//!   goes on at once: on TCP the notification waits for the peer's acknowledgement, which a
//!   peer that delays its ACKs sends tens of milliseconds later, and a writer that waited for
//!   it before each send would stall that long per send.
//! - [`Stream::send_zc`] resolves only after the notification, with the count and the buffer,
//!   for a caller that wants the buffer back (to send the rest of a short send, or to reuse
//!   it).
//!
//! Dropping either future before the send completed cancels it; the buffer is parked until
//! the notification, then goes back to the pool. The memory may be reused only once it is back
//! in the pool (or, for `send_zc`, given back by the future).
//!
//! [`Stream::send_region`] sends from the program's own memory the same way, once it is
//! registered as a [`Region`](crate::region::Region) (see the [`region`](crate::region)
//! module).
//!
//! # Sending a file
//!
//! [`Stream::send_file`] (and [`OwnedWriteHalf::send_file`]) sends a range of a
//! [`fs::File`](crate::fs::File) with no copy through user space: io_uring `SPLICE`s from the
//! file into a pipe of the call's own, and from the pipe into the socket, resumed after short
//! ones until the range is sent. A file that ends before the range does is an
//! [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) error (the bytes up to its end were
//! sent). Dropping the future cancels the splice in flight; the pipe and every descriptor
//! close with its final completion. Why a pipe per call rather than one per worker: see the
//! `sendfile` module.
//!
//! # Descriptors and fixed-file slots
//!
//! Every stream, listener and UDP socket keeps its plain descriptor, for what io_uring does not
//! do ([`Stream::as_std`], `set_nodelay`, `peer_addr`, `shutdown`, the splice of
//! [`send_file`](Stream::send_file)). When a worker first uses it, it is bound to the adapter
//! current then ([`current_adapter`](crate::current_adapter)) and takes a slot of that
//! adapter's fixed-file table (each adapter has its own, of
//! [`AdapterSpec::max_files`](crate::AdapterSpec::max_files) or else
//! [`Builder::max_files`](crate::Builder::max_files) slots, 256 by default): the descriptor is
//! installed in that slot on every worker's ring of that adapter, and from then on its receives,
//! sends, zero-copy sends, accepts and connects name the slot (`IOSQE_FIXED_FILE`), which
//! spares the kernel an atomic reference count on the file per operation, and every worker's
//! work queue targets the slot without a duplicate of the descriptor. So a stream accepted on
//! one worker is used from a task on any other. [`Stream::fixed_slot`] tells which slot, and
//! [`Runtime::fixed_files_in_use`](crate::Runtime::fixed_files_in_use) how many are taken
//! ([`fixed_files_in_use_by_adapter`](crate::Runtime::fixed_files_in_use_by_adapter): in each
//! adapter's table). A listener's multishot accept ([`Listener::incoming`]) runs on the
//! listener's adapter, like its single accepts.
//!
//! - The slot is emptied on every ring and given back when the socket is dropped and its last
//!   operation has had its final completion (operations hold the socket's queues until then),
//!   so no operation in flight can ever name a slot that another file took since.
//! - A full table is no error: the socket keeps naming its plain descriptor (each worker's
//!   queue then holds a duplicate of it: `k + 1` descriptors for a socket used from `k`
//!   workers), as every socket does on an adapter in
//!   [`RingMode::SingleIssuer`](crate::RingMode), whose rings take `io_uring_register` only
//!   from their owner, and on one with `max_files(0)`; the other adapters of the runtime keep
//!   their slots.
//! - Installing and emptying a slot are one `io_uring_register` each per ring (worker): a cost
//!   paid once per socket, against one reference count saved per operation. A program of
//!   short-lived connections with a few operations each on many workers may prefer
//!   `max_files(0)`.
//!
//! Accepts do not put connections straight into slots (`accept_direct`, or a multishot accept
//! with `IORING_FILE_INDEX_ALLOC`): such a direct descriptor exists in the accepting ring's
//! table only, with no number for `setsockopt` or `getpeername`, and a slot the kernel picks
//! could be one the runtime hands to another file meanwhile. Connections are accepted into
//! plain descriptors and installed in a slot as above.
//!
//! # Multishot accept
//!
//! [`Listener::incoming`] arms one multishot accept (`IORING_ACCEPT_MULTISHOT`) on the current
//! worker's ring and hands out its connections in order with [`Incoming::accept`]: one
//! submission for any number of connections, armed again when the kernel ends it. Dropping the
//! [`Incoming`] cancels it; connections accepted and not handed out, and those that come until
//! its final completion, are closed.

mod incoming;
mod listener;
mod op;
mod sendfile;
mod split;
mod stream;
mod udp;
mod unix;

pub use incoming::Incoming;
pub use listener::{ListenSocket, Listener, TcpListener};
pub use op::{RecvFrom, SendZcAll, Transfer, TransferAll};
pub use split::{OwnedReadHalf, OwnedWriteHalf};
pub use stream::{Stream, StreamSocket, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};
