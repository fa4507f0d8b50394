//! [`FdQueues`]: a descriptor (a file or a socket) and its work queues, one per worker that
//! used it, made on first use.
//!
//! An operation on a file or a socket goes to the work queue of the current worker's ring for
//! that descriptor ([`for_worker`](FdQueues::for_worker)); a descriptor used from tasks on two
//! workers has a queue on each ring. Each queue holds its own duplicate of the descriptor (the
//! adapter's rule for [`Target::Fd`]), closed once the queue is removed and drained.
//!
//! # Synchronization
//!
//! The runtime that owns the queues and the queues by worker sit behind two mutexes, taken once
//! per operation to find the current worker's queue. Operations hold the `FdQueues` (not the
//! file or socket handle): a handle dropped while an operation is in flight keeps its
//! descriptor open, and its queues registered, until that operation's final completion.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};

use regio_adapters::{Adapter, Target, WorkQueue};
use regio_pool::Message;

use crate::shared::Shared;
use crate::worker::Local;

/// The handle of a descriptor, as operations see it (its type erased).
pub(crate) type AnyFd = dyn AsRawFd + Send + Sync;

/// A descriptor's handle (`H`: a `std::fs::File`, a `std::net::TcpStream`, ...) and its work
/// queues. Operations hold it as `Arc<FdQueues>` (the handle's type erased).
pub(crate) struct FdQueues<H: ?Sized = AnyFd> {
    /// The runtime whose workers may use the descriptor, set by the first one that does.
    runtime: Mutex<Option<(Weak<Shared>, Adapter<Message>)>>,
    /// The work queues, by worker index.
    by_worker: Mutex<Vec<Option<WorkQueue<Message>>>>,
    /// The handle, closed after the queues are removed.
    handle: H,
}

impl<H: ?Sized + AsRawFd> std::fmt::Debug for FdQueues<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdQueues")
            .field("fd", &self.handle.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl<H> FdQueues<H> {
    /// Queues for `handle`, bound to the runtime whose worker first uses them.
    pub(crate) fn new(handle: H) -> Self {
        Self {
            runtime: Mutex::new(None),
            by_worker: Mutex::new(Vec::new()),
            handle,
        }
    }
}

impl<H: ?Sized> FdQueues<H> {
    /// The descriptor's handle.
    pub(crate) fn handle(&self) -> &H {
        &self.handle
    }
}

impl<H: ?Sized + AsRawFd> FdQueues<H> {
    /// The descriptor's work queue on `local`'s ring, made on first use.
    ///
    /// # Errors
    ///
    /// An errno for the operation's completion: `EXDEV` if another runtime's workers used the
    /// descriptor first, `EIO` if the adapter cannot make the queue (logged with the reason).
    pub(crate) fn for_worker(&self, local: &Local) -> Result<WorkQueue<Message>, i32> {
        {
            let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
            match &*runtime {
                Some((owner, _)) if !std::ptr::eq(owner.as_ptr(), Arc::as_ptr(&local.shared)) => {
                    return Err(libc::EXDEV);
                }
                Some(_) => {}
                None => {
                    *runtime = Some((Arc::downgrade(&local.shared), local.shared.adapter.clone()))
                }
            }
        }
        let index = local.remote.index;
        let mut queues = self.by_worker.lock().unwrap_or_else(|p| p.into_inner());
        if queues.len() <= index {
            queues.resize(index + 1, None);
        }
        if let Some(wq) = &queues[index] {
            return Ok(wq.clone());
        }
        let depth = local.shared.config.file_queue_depth;
        let wq = local
            .shared
            .adapter
            .work_queue(index, Target::Fd(self.handle.as_raw_fd()), depth, depth)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot make a work queue for a descriptor");
                libc::EIO
            })?;
        queues[index] = Some(wq.clone());
        Ok(wq)
    }
}

impl<H: ?Sized> Drop for FdQueues<H> {
    fn drop(&mut self) {
        let runtime = self.runtime.get_mut().unwrap_or_else(|p| p.into_inner());
        let queues = self.by_worker.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some((_, adapter)) = runtime {
            for wq in queues.iter().flatten() {
                adapter.remove_work_queue(wq);
            }
        }
    }
}
