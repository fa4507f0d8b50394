//! [`BuildError`]: why a runtime could not be built.

/// Why [`Builder::build`](crate::Builder::build) failed. Each variant says what to change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A builder setting is out of range; the message names it.
    #[error("invalid runtime configuration: {0}")]
    Invalid(&'static str),
    /// The builder was given an empty list of adapters
    /// ([`Builder::adapters`](crate::Builder::adapters)): a runtime needs at least one.
    #[error("invalid runtime configuration: no adapter (a runtime needs at least one)")]
    NoAdapters,
    /// An adapter's settings are out of range ([`AdapterSpec`](crate::AdapterSpec)); the
    /// message names the setting.
    #[error("invalid settings for adapter {adapter}: {reason}")]
    InvalidAdapter {
        /// The adapter's index, in the order the builder was given them.
        adapter: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An adapter (its rings) could not be set up: io_uring disabled on this host, a memlock
    /// limit too low, a kernel without a feature asked for. The adapter's error says which and
    /// what to do.
    #[error("adapter {adapter}: {source}")]
    Adapter {
        /// The adapter's index.
        adapter: usize,
        /// The adapter's error.
        source: regio_adapters::Error,
    },
    /// The message pool could not be built or registered with the rings (often the memlock
    /// limit: see [`Builder::pool_class`](crate::Builder::pool_class) to make it smaller).
    #[error("the runtime's message pool: {0}")]
    Pool(#[from] regio_pool::Error),
    /// A worker thread could not be started.
    #[error("cannot start worker thread {worker}: {source}")]
    Thread {
        /// The worker's index.
        worker: usize,
        /// The error from the thread's creation.
        source: std::io::Error,
    },
    /// A worker could not take its ring of an adapter (single-issuer mode binds each ring to
    /// its worker).
    #[error("worker {worker} cannot take its ring of adapter {adapter}: {source}")]
    Worker {
        /// The worker's index.
        worker: usize,
        /// The adapter's index.
        adapter: usize,
        /// The adapter's error.
        source: regio_adapters::Error,
    },
    /// Pinning was asked for, but the process's CPU set could not be read.
    #[error("cannot read the process's CPU affinity for pinning: {0}")]
    Affinity(std::io::Error),
}

impl BuildError {
    /// Whether io_uring is disabled on this host (by sysctl, or a seccomp filter), so that no
    /// runtime can run here at all.
    pub fn is_io_uring_disabled(&self) -> bool {
        matches!(
            self,
            BuildError::Adapter {
                source: regio_adapters::Error::IoUringDisabled { .. },
                ..
            }
        )
    }
}
