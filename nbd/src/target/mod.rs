//! The NBD server on the regio runtime: [`Server`] serves [`Export`]s over any connection that
//! splits into a [`RecvHalf`] and a [`SendHalf`] (the runtime's TCP and Unix sockets).
//!
//! Each connection is one task that runs the handshake ([`proto::Handshake`](crate::proto::Handshake))
//! and then reads requests; each request runs on a task of its own, so many are in flight and
//! replies go out in the order they finish; one writer task per connection sends them. Every
//! byte lives in registered memory: request headers and reply headers in two control buffers
//! of the runtime's pool per connection, a WRITE's payload received straight into the pool
//! buffers it is written from (a file export's `WRITE_FIXED`, or one copy into a memory
//! export; small payloads that arrive back to back are read ahead, many in one receive, and
//! copied out of the read-ahead buffer), and a READ's data either in the pool buffers the read filled (a file export) or in
//! a memory export itself, which the server registers with the rings as a
//! [`Region`](regio_runtime::region::Region) when it starts serving ([`Export::memory`] says
//! what that pins). READ data of 16 KiB ([`ZERO_COPY_MIN`]) or more goes out with `SEND_ZC`
//! from where it lies; smaller replies are copied once: those below 16 KiB gathered with their
//! headers into a registered staging buffer, one send per batch, larger ones of a file export sent (the kernel
//! copying them) from the buffers the read filled. Clients on the loopback interface get
//! copies until [`Server::set_zero_copy_min`] is called (the kernel copies a loopback
//! zero-copy send anyway); that call moves the threshold for every client (0: every READ reply
//! with data goes out zero-copy) and its docs say when the copy is the cheaper one. [`StatsLine::zero_copy_sends`] counts what went out without a copy. An
//! exhausted pool makes requests wait for buffers (see the `buffers` module for why this never
//! deadlocks); a client that goes away gives every buffer back, and its zero-copy sends hold
//! the export's region until the kernel lets go of its pages.
//!
//! Each connection takes its control buffers when it starts. When they run out (clients that
//! connect and then say nothing hold theirs until the handshake timeout), a new connection
//! closes the oldest connection still waiting for its client in the handshake, once that one
//! has been negotiating for 2 s, rather than wait for that timeout (so a flood of silent
//! connections cannot close a client in the middle of its few round trips); connections in
//! transmission are never closed that way.
//!
//! Bad input: a request out of range, too long, with an unknown command or flag, or a write to
//! a read-only export gets an NBD error and the connection goes on; a wrong magic, a truncated
//! header or a write too large to read through closes that connection only.
//!
//! Not done yet: extended headers and TLS (both refused with `NBD_REP_ERR_UNSUP`, as clients
//! expect); `OFFSET_HOLE` chunks within a READ that is not all hole (its holes are sent as
//! zeroes). A client that stops reading its
//! replies holds its share of the data buffers (a quarter of them, or one request of the
//! maximum payload), and the socket keeps the buffers of the zero-copy sends it queued for it,
//! until a send has waited for it longer than the [`STALL_TIMEOUT`], or it acknowledged
//! none of the bytes sent to it for that long while no reply was left to send (on a connection
//! that sends zero-copy; a client that keeps acknowledging, however slowly, is left alone); then its
//! connection is cut (and reset, which frees what the socket held). A client that stops in
//! the middle of a WRITE's payload holds the buffers it goes into until it sends nothing for
//! the stall timeout; then its connection is closed. A graceful shutdown cuts the connections still open after its grace
//! ([`Server::finish_within`]).
//!
//! ```no_run
//! use regio_nbd::target::{runtime_builder, Export, Server};
//!
//! let rt = runtime_builder().build()?;
//! let server = Server::new(vec![Export::memory("", 1 << 30, false)?], rt.pool().clone())?;
//! // Serve it: `server.serve(|| listener.accept_connection())` on a runtime task, with a
//! // listener of `regio_runtime::net`; `server.shutdown()` and `server.finish()` end it.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buffers;
mod commands;
mod connection;
mod error;
mod export;
mod handshakes;
mod input;
mod negotiate;
mod reader;
mod server;
mod stats;
mod stream;
mod sync;
mod writer;

pub use error::ServeError;
pub use export::Export;
pub use server::{Server, MAX_IN_FLIGHT, SHUTDOWN_GRACE, STALL_TIMEOUT, ZERO_COPY_MIN};
pub use stats::StatsLine;
pub use stream::{Connection, RecvHalf, SendHalf};

/// Pool classes (buffer size, count) that suit a server and fit in the 8 MiB of locked memory
/// most systems give a user: 2048 control buffers of 512 bytes (two per connection), 512 data
/// buffers of 4 KiB (the common request) and 48 of 64 KiB (large requests, which reach 1.5 MiB).
pub fn pool_classes() -> [(u32, u32); 3] {
    [(512, 2048), (4096, 512), (65536, 48)]
}

/// A runtime builder for a server: the [`pool_classes`], and no per-thread pool caches. A
/// buffer released into an idle worker's cache would be out of reach of a request waiting on
/// another worker, and a request that needs the last free buffers of a class would wait for it
/// forever; without caches every free buffer is in the shared store, where waiters get it.
pub fn runtime_builder() -> regio_runtime::Builder {
    pool_classes()
        .iter()
        .fold(regio_runtime::Builder::new(), |b, &(size, count)| {
            b.pool_class(size, count)
        })
        .pool_cache(0)
}
