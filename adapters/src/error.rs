//! The crate's error types.
//!
//! [`Error`] is the one error type of the crate. Failed posts hand the operation back inside a
//! [`PostError`], so a post is never lost. A descriptor that fails validation is not an `Error`:
//! it becomes an error completion on its own work queue, carrying a [`DescriptorError`].

use std::io;

/// Errors from setting up and running an adapter. Each one says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `io_uring_setup` is refused: io_uring is disabled on this host.
    #[error(
        "io_uring is disabled on this host ({source}); check the sysctl kernel.io_uring_disabled \
         (it must be 0, or 1 with this user in kernel.io_uring_group) and any seccomp filter \
         or container profile that blocks io_uring_setup"
    )]
    IoUringDisabled {
        /// The error from `io_uring_setup`.
        source: io::Error,
    },
    /// The kernel refused memory with `ENOMEM` where RLIMIT_MEMLOCK applies: pinning
    /// registered buffers, or setting up a ring (which counts against it before Linux 5.12).
    #[error(
        "{what} failed with ENOMEM{}: RLIMIT_MEMLOCK is {limit} bytes (soft limit; u64::MAX \
         means unlimited) and pinned memory counts against it unless the process has \
         CAP_IPC_LOCK; raise it (ulimit -l, LimitMEMLOCK= in a systemd unit, memlock in \
         limits.conf) to at least the pool size, or use smaller rings and pools",
        bytes_note(.bytes)
    )]
    MemlockTooLow {
        /// What was being done.
        what: &'static str,
        /// The size of the registration that failed, when there was one.
        bytes: Option<u64>,
        /// The soft RLIMIT_MEMLOCK in bytes (`u64::MAX` for unlimited).
        limit: u64,
    },
    /// The kernel lacks an operation or a feature this adapter was asked to use.
    #[error(
        "the kernel lacks {what}, which Linux {since} brings; upgrade the kernel or do without it"
    )]
    Unsupported {
        /// The operation or feature.
        what: &'static str,
        /// The first kernel version that has it.
        since: &'static str,
    },
    /// A system call at setup or registration failed for another reason.
    #[error("{what} failed: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error from the kernel.
        source: io::Error,
    },
    /// The kernel reports that it dropped completions: the CQ overflowed without NODROP space.
    #[error(
        "the kernel dropped {lost} completions after a CQ overflow; make the CQ larger \
         (Config::cq_entries) or reap more often"
    )]
    CompletionsLost {
        /// How many completions the kernel dropped since the last check.
        lost: u32,
    },
    /// A completion queue cannot be resized to fewer entries than it has operations in flight.
    #[error(
        "cannot resize the completion queue to {entries} entries: {in_flight} operations are in \
         flight; reap until fewer are, or ask for more entries"
    )]
    CqTooSmall {
        /// The CQ size asked for, as the kernel rounded it.
        entries: u32,
        /// Operations in flight on the completion queue.
        in_flight: usize,
    },
    /// The ring an earlier resize replaced still has operations in flight.
    #[error(
        "the completion queue's previous ring still has {in_flight} operations in flight, or \
         completions not yet reaped, after an earlier resize; reap them (or cancel the \
         operations), then resize again"
    )]
    ResizeDraining {
        /// Operations still in flight on the replaced ring.
        in_flight: usize,
    },
    /// In single-issuer mode ([`Config::single_issuer`](crate::Config::single_issuer)), another
    /// thread owns this ring: only its owner may reap it, wait on it, bind it or register on it
    /// (the kernel refuses the others with `EEXIST`). Call from the owner thread, or register
    /// before [`Ring::bind_owner`](crate::Ring::bind_owner).
    #[error(
        "another thread owns this single-issuer ring; reap, wait and register from its owner          thread, or register before binding it"
    )]
    NotOwner,
    /// An argument is out of range; the message names it.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// [`Error::MemlockTooLow`] for `what`, with the current limit.
    pub(crate) fn memlock(what: &'static str, bytes: Option<u64>) -> Self {
        Self::MemlockTooLow {
            what,
            bytes,
            limit: regio_pool::MemlockLimit::current().soft.unwrap_or(u64::MAX),
        }
    }
}

fn bytes_note(bytes: &Option<u64>) -> String {
    bytes.map(|b| format!(" for {b} bytes")).unwrap_or_default()
}

/// A post that could not be accepted. The operation is handed back unchanged.
#[derive(Debug, thiserror::Error)]
pub enum PostError<T> {
    /// The submission ring is full. Commit or reap, then post again.
    #[error("the submission queue is full")]
    Full(T),
    /// The work queue has no credit left on this side. Reap completions, then post again.
    #[error("the work queue has no credit left")]
    NoCredit(T),
    /// The work queue was removed from its adapter.
    #[error("the work queue was removed")]
    Closed(T),
}

impl<T> PostError<T> {
    /// Takes the operation back.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t) | Self::NoCredit(t) | Self::Closed(t) => t,
        }
    }

    /// Takes the operation back, leaving which error it was.
    pub fn split(self) -> (T, PostError<()>) {
        match self {
            Self::Full(t) => (t, PostError::Full(())),
            Self::NoCredit(t) => (t, PostError::NoCredit(())),
            Self::Closed(t) => (t, PostError::Closed(())),
        }
    }
}

/// A chain that [`Batch::post_chain`](crate::Batch::post_chain) refused whole: no operation of
/// it was posted, and every one comes back, in the order given.
#[derive(Debug, thiserror::Error)]
#[error("the chain was refused: {reason}")]
pub struct ChainError<T> {
    /// The chain's operations, handed back unchanged.
    pub ops: Vec<T>,
    /// Why the chain was refused.
    pub reason: ChainRefusal,
}

/// Why a chain was refused (see [`ChainError`]). Each one says what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainRefusal {
    /// The submission queue has no room for the whole chain now. Commit, then post it again.
    #[error("the submission queue has no room for the whole chain")]
    Full,
    /// The ring's SQPOLL kernel thread serves the adapter's other rings too, and such a thread
    /// submits at most 8 SQEs of a ring per pass, ending a link chain where a pass ends: the
    /// chain could run cut in two. Chains work on interrupt-driven and single-issuer rings, and
    /// on an SQPOLL adapter of one ring.
    #[error("linked chains are refused on an SQPOLL ring whose kernel thread serves other rings")]
    SharedSqThread,
    /// The chain is longer than the submission queue: it can never be posted whole. Split it,
    /// or make the rings larger ([`Config::sq_entries`](crate::Config::sq_entries)).
    #[error("a chain of {len} operations is longer than the submission queue ({sq_entries})")]
    TooLong {
        /// The chain's length.
        len: usize,
        /// The submission queue's size.
        sq_entries: usize,
    },
    /// The work queue has fewer credits left than the chain needs on one side. Reap
    /// completions, then post it again (a chain longer than the queue's depth never fits).
    #[error("the work queue has not enough credit for the whole chain")]
    NoCredit,
    /// The work queue was removed, or belongs to another completion queue.
    #[error("the work queue was removed or belongs to another completion queue")]
    Closed,
    /// An operation's descriptor failed its check.
    #[error("operation {index} of the chain: {error}")]
    Descriptor {
        /// The operation's place in the chain.
        index: usize,
        /// Why its descriptor was rejected.
        error: DescriptorError,
    },
    /// An operation that cannot be linked: a cancel, whose target may be found gone when it
    /// is posted, so that it completes at once and never becomes the SQE the link needs.
    #[error("operation {index} of the chain ({op}) cannot be linked")]
    Unlinkable {
        /// The operation's place in the chain.
        index: usize,
        /// The operation's name.
        op: &'static str,
    },
}

/// Why a descriptor was rejected before it became an SQE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The buffer names a region that is not registered on this adapter.
    #[error("buffer region {0} is not registered on this adapter")]
    UnknownRegion(u16),
    /// The slice runs past the end of its region, or is empty where data is needed.
    #[error("buffer slice offset {offset} len {len} is out of bounds of a region of {size} bytes")]
    OutOfBounds {
        /// The slice's offset.
        offset: u32,
        /// The slice's length.
        len: u32,
        /// The region's size.
        size: u64,
    },
    /// The buffer's generation does not match the region's: it is stale, or from another adapter.
    #[error("buffer generation {found} does not match region generation {expected}")]
    StaleGeneration {
        /// The region's current generation.
        expected: u32,
        /// The generation the buffer carries.
        found: u32,
    },
    /// The fixed-file slot is outside the adapter's file table.
    #[error("fixed-file slot {0} is outside the file table")]
    BadFileSlot(u32),
    /// The kernel lacks this operation.
    #[error("the kernel lacks {op}, which Linux {since} brings")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The first kernel version that has it.
        since: &'static str,
    },
    /// The operation does not belong on this kind of work queue.
    #[error("operation not allowed on this work queue: {0}")]
    WrongQueue(&'static str),
    /// The descriptor's slice is not memory of the message that carries it (see
    /// [`IoBuf`](crate::IoBuf)): a message can only name its own buffers.
    #[error(
        "the descriptor's slice (region {region}, offset {offset}, len {len}) is not memory of \
         the message that carries it; a message may only name its own buffers"
    )]
    NotOwned {
        /// The slice's region, in its pool.
        region: u16,
        /// The slice's offset.
        offset: u32,
        /// The slice's length.
        len: u32,
    },
    /// The descriptor has several slices: vectored operations are not posted. Post each buffer
    /// on its own, or cut the descriptor to one slice.
    #[error(
        "the descriptor has {slices} slices, and scatter-gather operations are not supported; \
         post one slice per operation"
    )]
    Scatter {
        /// How many slices the descriptor has.
        slices: u8,
    },
    /// The buffer's pool is not attached to this adapter
    /// ([`MessagePool::attach`](regio_pool::MessagePool::attach) with
    /// [`Adapter::registrar`](crate::Adapter::registrar)).
    #[error("the buffer's pool {pool} is not attached to this adapter; attach it first")]
    NotAttached {
        /// The pool's id.
        pool: u32,
    },
    /// The descriptor asks for something the operation cannot do (a flag it has no use for).
    #[error("descriptor not valid for this operation: {0}")]
    Invalid(&'static str),
}

impl DescriptorError {
    /// The errno the error completion carries (negated, as io_uring results are).
    pub fn errno(self) -> i32 {
        match self {
            Self::UnknownRegion(_)
            | Self::StaleGeneration { .. }
            | Self::BadFileSlot(_)
            | Self::NotAttached { .. } => -libc::EBADF,
            Self::OutOfBounds { .. } | Self::NotOwned { .. } => -libc::EFAULT,
            Self::WrongQueue(_) | Self::Scatter { .. } | Self::Invalid(_) => -libc::EINVAL,
            Self::Unsupported { .. } => -libc::EOPNOTSUPP,
        }
    }
}

/// Maps an `io_uring_setup` failure to an [`Error`].
pub(crate) fn setup_error(source: io::Error) -> Error {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::ENOSYS) => Error::IoUringDisabled { source },
        Some(libc::ENOMEM) => Error::memlock("io_uring_setup", None),
        _ => Error::Sys {
            what: "io_uring_setup",
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_setup_says_io_uring_is_disabled() {
        for errno in [libc::EPERM, libc::ENOSYS] {
            let e = setup_error(io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::IoUringDisabled { .. }), "{errno}: {e:?}");
        }
        let e = setup_error(io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(
            matches!(
                e,
                Error::MemlockTooLow {
                    what: "io_uring_setup",
                    bytes: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
        let e = setup_error(io::Error::from_raw_os_error(libc::EINVAL));
        assert!(
            matches!(
                e,
                Error::Sys {
                    what: "io_uring_setup",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
