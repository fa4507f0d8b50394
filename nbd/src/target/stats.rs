//! [`Stats`]: what a server has done, counted as it goes, and the [`StatsLine`] that
//! `regio serve --stats` prints.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters. Each is a Relaxed statistic: nothing is ordered by them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    in_flight: AtomicU64,
    errors: AtomicU64,
    zero_copy_sends: AtomicU64,
    zero_copy_bytes: AtomicU64,
    export_zero_copy_sends: AtomicU64,
}

impl Stats {
    /// A request was read and is now in flight.
    pub(crate) fn started(&self) {
        // Relaxed: statistics (module docs).
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's reply was sent (or dropped with its connection).
    pub(crate) fn finished(&self) {
        // Relaxed: statistics.
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, bytes: u64) {
        // Relaxed: statistics.
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, bytes: u64) {
        // Relaxed: statistics.
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// READ data went out with `SEND_ZC` from the registered buffers a read filled.
    pub(crate) fn sent_zero_copy(&self, bytes: u64) {
        // Relaxed: statistics.
        self.zero_copy_sends.fetch_add(1, Ordering::Relaxed);
        self.zero_copy_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// READ data went out with `SEND_ZC` from a registered memory export itself.
    pub(crate) fn sent_zero_copy_from_export(&self, bytes: u64) {
        self.sent_zero_copy(bytes);
        // Relaxed: statistics.
        self.export_zero_copy_sends.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        // Relaxed: statistics.
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, with the connection count and the pool's use.
    pub(crate) fn line(&self, connections: usize, pool: (usize, usize)) -> StatsLine {
        // Relaxed: statistics; the fields need not be a consistent snapshot.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsLine {
            requests: get(&self.requests),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            in_flight: get(&self.in_flight),
            errors: get(&self.errors),
            zero_copy_sends: get(&self.zero_copy_sends),
            zero_copy_bytes: get(&self.zero_copy_bytes),
            export_zero_copy_sends: get(&self.export_zero_copy_sends),
            connections,
            pool_in_use: pool.0,
            pool_capacity: pool.1,
        }
    }
}

/// A server's statistics at one moment ([`Server::stats`](super::Server::stats)); its
/// `Display` is the line `regio serve --stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsLine {
    /// Requests read since the start.
    pub requests: u64,
    /// Bytes sent in READ replies.
    pub bytes_read: u64,
    /// Bytes of WRITE payloads written.
    pub bytes_written: u64,
    /// Requests read whose reply is not sent yet.
    pub in_flight: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Sends of READ data with no copy (`SEND_ZC`), from a registered memory export itself or
    /// from the registered pool buffers a read filled (one per buffer): the replies at or above
    /// the [zero-copy threshold](super::Server::set_zero_copy_min), on sockets that take
    /// zero-copy sends.
    pub zero_copy_sends: u64,
    /// The bytes of those sends.
    pub zero_copy_bytes: u64,
    /// The part of [`zero_copy_sends`](Self::zero_copy_sends) sent from a registered memory
    /// export itself.
    pub export_zero_copy_sends: u64,
    /// Open connections.
    pub connections: usize,
    /// Pool buffers in use (control and data).
    pub pool_in_use: usize,
    /// Pool buffers in all.
    pub pool_capacity: usize,
}

impl fmt::Display for StatsLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} read_bytes={} written_bytes={} zero_copy_bytes={} in_flight={} errors={} \
             connections={} pool={}/{}",
            self.requests,
            self.bytes_read,
            self.bytes_written,
            self.zero_copy_bytes,
            self.in_flight,
            self.errors,
            self.connections,
            self.pool_in_use,
            self.pool_capacity
        )
    }
}
