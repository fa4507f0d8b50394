//! [`ServeError`]: why a server or an export could not be set up.

use std::io;
use std::path::PathBuf;

/// Why an export or a server could not be set up. Each says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The export's file or block device could not be opened or sized.
    #[error("cannot open {path:?} as an export: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The memory of a memory export could not be reserved.
    #[error(
        "cannot reserve {size} bytes for a memory export: {source} (it is mapped lazily with \
         MAP_NORESERVE; check `ulimit -v` and vm.overcommit_memory)"
    )]
    Map {
        /// The size asked for.
        size: u64,
        /// The operating system's reason.
        source: io::Error,
    },
    /// An export of zero bytes.
    #[error("the export {name:?} has no bytes: give it a size (memory) or a non-empty file")]
    Empty {
        /// The export's name.
        name: String,
    },
    /// Two exports share a name.
    #[error("two exports are named {0:?}: give each its own --name")]
    DuplicateName(String),
    /// A server with no export.
    #[error("a server needs at least one export")]
    NoExports,
    /// The runtime's pool cannot serve NBD requests.
    #[error("{0}")]
    Pool(&'static str),
}
