//! [`Server`]: exports, listeners, and a graceful shutdown.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regio_pool::MessagePool;

use super::buffers::Buffers;
use super::connection;
use super::export::Export;
use super::handshakes::Handshakes;
use super::negotiate::Catalogue;
use super::stats::{Stats, StatsLine};
use super::stream::Connection;
use super::sync::{Signal, Tracker};
use super::ServeError;
use crate::proto::{BlockSizes, Errno};

/// Requests one connection may have in flight before the server stops reading from it.
pub const MAX_IN_FLIGHT: usize = 128;

/// How long, by default, a reply may wait for a client that does not read before its connection
/// is cut ([`Server::set_stall_timeout`]).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The smallest READ reply data sent with `SEND_ZC`, by default, to a client that is not on
/// the loopback interface ([`Server::set_zero_copy_min`]).
pub const ZERO_COPY_MIN: usize = 16 * 1024;

/// How long [`Server::finish`] waits for connections to finish their requests before it cuts
/// those still open.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the server's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) catalogue: Catalogue,
    pub(crate) buffers: Buffers,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutdown: Signal,
    /// Raised when a shutdown's grace period is over: connections still open (a client that
    /// stopped reading its replies, or stopped in the middle of a WRITE's payload) are cut.
    pub(crate) abandon: Signal,
    pub(crate) connections: Arc<Tracker>,
    /// The connections in their handshake, for eviction when control pairs run out.
    pub(crate) handshakes: Handshakes,
    pub(crate) max_in_flight: usize,
    /// [`Server::set_stall_timeout`], in milliseconds.
    stall_timeout_ms: AtomicU64,
    /// [`Server::set_zero_copy_min`].
    zero_copy_min: AtomicUsize,
    /// The threshold for clients on the loopback interface: copies (`usize::MAX`) until
    /// [`Server::set_zero_copy_min`] sets it with the other.
    loopback_zero_copy_min: AtomicUsize,
}

impl Shared {
    /// How long a send may wait for a client that does not read.
    pub(crate) fn stall_timeout(&self) -> Duration {
        // Relaxed: a setting read on its own; no other memory depends on it.
        Duration::from_millis(self.stall_timeout_ms.load(Ordering::Relaxed))
    }

    /// The smallest READ reply data sent with `SEND_ZC`.
    pub(crate) fn zero_copy_min(&self) -> usize {
        // Relaxed: as in `stall_timeout`.
        self.zero_copy_min.load(Ordering::Relaxed)
    }

    /// The threshold for a client, on the loopback interface or not: by default, loopback
    /// clients get copies (see [`Server::set_zero_copy_min`]).
    pub(crate) fn zero_copy_min_for(&self, loopback: bool) -> usize {
        if loopback {
            // Relaxed: as in `stall_timeout`; each threshold is a whole value of its own.
            self.loopback_zero_copy_min.load(Ordering::Relaxed)
        } else {
            self.zero_copy_min()
        }
    }
}

/// An NBD server: its exports, served on any number of listeners, by tasks of the runtime
/// whose pool it was made with. Cloning gives another handle to the same server.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// A server of `exports` (the first is the default export, the one an empty name asks
    /// for), taking its buffers from `pool` (the runtime's: [`regio_runtime::pool`]). The pool
    /// needs a small class for control buffers and larger ones for data, and no per-thread
    /// caches: build the runtime with [`runtime_builder`].
    ///
    /// # Errors
    ///
    /// [`ServeError::NoExports`], [`ServeError::DuplicateName`], or [`ServeError::Pool`] for a
    /// pool the server cannot work with.
    ///
    /// [`runtime_builder`]: super::runtime_builder
    pub fn new(exports: Vec<Export>, pool: MessagePool) -> Result<Self, ServeError> {
        if exports.is_empty() {
            return Err(ServeError::NoExports);
        }
        for (i, export) in exports.iter().enumerate() {
            if exports[..i].iter().any(|e| e.name() == export.name()) {
                return Err(ServeError::DuplicateName(export.name().into()));
            }
        }
        let buffers = Buffers::new(pool)?;
        let maximum = u32::try_from(buffers.max_payload()).unwrap_or(u32::MAX);
        let block_sizes = BlockSizes::new(1, 4096, maximum)
            .ok_or(ServeError::Pool("the pool's data buffers are under 4 KiB"))?;
        Ok(Self {
            shared: Arc::new(Shared {
                catalogue: Catalogue {
                    exports: exports.into_iter().map(Arc::new).collect(),
                    block_sizes,
                },
                buffers,
                stats: Arc::default(),
                shutdown: Signal::default(),
                abandon: Signal::default(),
                connections: Arc::default(),
                handshakes: Handshakes::default(),
                max_in_flight: MAX_IN_FLIGHT,
                stall_timeout_ms: AtomicU64::new(millis(STALL_TIMEOUT)),
                zero_copy_min: AtomicUsize::new(ZERO_COPY_MIN),
                loopback_zero_copy_min: AtomicUsize::new(usize::MAX),
            }),
        })
    }

    /// Cuts a connection when sending it a reply takes longer than `timeout`, or when its
    /// client acknowledges none of the bytes sent to it for that long while no reply waits to
    /// be sent (noticed within twice `timeout`), once the connection has sent zero-copy (the client stopped reading its replies; meanwhile they hold their buffers, which
    /// other connections may be waiting for, and zero-copy sends hold theirs until the client
    /// reads the bytes). A client that sends nothing more of a WRITE's payload it started for
    /// `timeout` is taken for gone too, and its connection closed (meanwhile it holds the
    /// buffers its payload goes into). The default is [`STALL_TIMEOUT`]; a new value applies
    /// to connections that start after it.
    pub fn set_stall_timeout(&self, timeout: Duration) {
        // Relaxed: as in `Shared::stall_timeout`.
        self.shared
            .stall_timeout_ms
            .store(millis(timeout).max(1), Ordering::Relaxed);
    }

    /// Sends the data of READ replies of `bytes` or more with `SEND_ZC`, without a copy: from
    /// a registered memory export itself, or from the registered pool buffers a file export's
    /// read filled. 0 sends every READ reply that has data that way; a value above
    /// [`max_payload`](Self::max_payload) sends none. The default is [`ZERO_COPY_MIN`]; a new
    /// value applies to connections that start after it.
    ///
    /// Below the threshold a reply's data is copied once, into a registered staging buffer
    /// where the replies of a batch are gathered with their headers and go out in one send.
    /// For small replies that can cost less: each `SEND_ZC` posts a second completion (the
    /// notification that the kernel let go of the memory, which on TCP comes once the client
    /// has acknowledged the bytes; the writer does not wait for it, but the buffer stays out
    /// of the pool until then), and on loopback the kernel copies zero-copy sends anyway.
    /// Sockets without zero-copy sends (Unix sockets) copy whatever the threshold.
    ///
    /// Until this is called, the threshold is [`ZERO_COPY_MIN`] except for clients on the
    /// loopback interface, which get copies whatever the size: the kernel copies a loopback
    /// zero-copy send anyway, so there `SEND_ZC` is a copy plus a notification. Once it is
    /// called, `bytes` applies to every client, loopback ones included (as tests of the
    /// zero-copy path need).
    pub fn set_zero_copy_min(&self, bytes: usize) {
        // Relaxed: each is a setting read on its own, whole, when a connection starts.
        self.shared.zero_copy_min.store(bytes, Ordering::Relaxed);
        // Relaxed: as above.
        self.shared
            .loopback_zero_copy_min
            .store(bytes, Ordering::Relaxed);
    }

    /// The threshold [`set_zero_copy_min`](Self::set_zero_copy_min) set, or [`ZERO_COPY_MIN`]
    /// (which loopback clients do not get until it is called).
    pub fn zero_copy_min(&self) -> usize {
        self.shared.zero_copy_min()
    }

    /// The exports, the default first.
    pub fn exports(&self) -> impl Iterator<Item = &Export> {
        self.shared.catalogue.exports.iter().map(|e| &**e)
    }

    /// The largest request payload served (the `maximum` block size advertised).
    pub fn max_payload(&self) -> u32 {
        self.shared.catalogue.block_sizes.maximum()
    }

    /// Accepts connections from `accept` (a listener's `accept`, called again after each
    /// connection) and serves each on a task of its own, until [`shutdown`](Self::shutdown).
    /// A failed accept (out of descriptors, say) is logged and retried.
    ///
    /// The first call registers the memory exports with the runtime's rings for zero-copy
    /// reads, which pins them ([`Export::memory`]).
    pub async fn serve<C, F, Fut>(&self, mut accept: F)
    where
        C: Connection,
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<C>>,
    {
        for export in &self.shared.catalogue.exports {
            export.register();
        }
        let mut failures = 0_u32;
        while let Some(accepted) = self.shared.shutdown.or_raised(accept()).await {
            match accepted {
                Ok(stream) => {
                    failures = 0;
                    // Detached: the connection tracker says when it ends.
                    drop(regio_runtime::spawn(connection::serve(
                        stream,
                        Arc::clone(&self.shared),
                    )));
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "accept failed");
                    // Give connections time to close (EMFILE) without spinning.
                    let pause = std::time::Duration::from_millis(10 * u64::from(failures.min(100)));
                    regio_runtime::time::sleep(pause).await;
                }
            }
        }
    }

    /// Starts a graceful shutdown: listeners stop accepting, connections stop reading new
    /// requests; those in flight complete and their replies go out. [`finish`](Self::finish)
    /// waits for the end.
    pub fn shutdown(&self) {
        self.shared.shutdown.raise();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_raised()
    }

    /// Waits until every connection has closed, then makes every export's writes durable:
    /// [`finish_within`](Self::finish_within) the [`SHUTDOWN_GRACE`].
    ///
    /// # Errors
    ///
    /// The NBD error of the first export whose flush failed.
    pub async fn finish(&self) -> Result<(), Errno> {
        self.finish_within(SHUTDOWN_GRACE).await
    }

    /// Waits up to `grace` for every connection to finish its requests and close; then cuts
    /// the connections still open (clients that stopped reading their replies, or stopped in
    /// the middle of a WRITE's payload: their unsent replies are dropped), waits for them to
    /// close, and makes every export's writes durable.
    ///
    /// # Errors
    ///
    /// The NBD error of the first export whose flush failed.
    pub async fn finish_within(&self, grace: Duration) -> Result<(), Errno> {
        let connections = &self.shared.connections;
        if regio_runtime::time::timeout(grace, connections.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.count(),
                "cutting the connections still open after the shutdown's grace period"
            );
            self.shared.abandon.raise();
            connections.idle().await;
        }
        let mut result = Ok(());
        for export in &self.shared.catalogue.exports {
            if let Err(errno) = export.flush().await {
                tracing::error!(export = export.name(), ?errno, "flushing an export failed");
                result = result.and(Err(errno));
            }
        }
        result
    }

    /// The statistics now.
    pub fn stats(&self) -> StatsLine {
        self.shared.stats.line(
            self.shared.connections.count(),
            self.shared.buffers.use_of_pool(),
        )
    }
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
