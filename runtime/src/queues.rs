//! [`FdQueues`]: a descriptor (a file or a socket) and its work queues, one per worker that
//! used it, made on first use.
//!
//! A descriptor belongs to one adapter of its runtime: the one current at its first operation
//! (module `adapter`). An operation on it goes to its work queue on the current worker's ring
//! of that adapter ([`for_worker`](FdQueues::for_worker)); a descriptor used from tasks on two
//! workers has a queue on each of their rings.
//!
//! Queues made with [`FdQueues::fixed`] (sockets and files) take a fixed-file slot of their
//! adapter's table when they are bound to a runtime: the descriptor is installed in that slot
//! on every ring of that adapter, and every queue targets the slot ([`Target::Fixed`]). The
//! slot is emptied and freed when the queues drop, after the work queues were removed:
//! operations hold the queues until their final completion, so no operation can name the slot
//! then (the `files` module). Without a free slot in that adapter's table (or with
//! [`FdQueues::new`], for short-lived descriptors such as a `send_file`'s pipe) each queue
//! holds its own duplicate of the descriptor (the adapter's rule for [`Target::Fd`]), closed
//! once the queue is removed and drained.
//!
//! # Synchronization
//!
//! No lock on the way of an operation. The binding to a runtime (its workers' queue slots) is
//! a `OnceLock`, set by the first worker that uses the descriptor; each slot is a `OnceLock`
//! too, which only its own worker sets (an operation reaches the queues of the worker that
//! polls it), so a slot is never raced for; readers see a set value whole through the
//! `OnceLock`'s acquire load, which pairs with the release store of its initialization.
//! Operations hold the `FdQueues` (not the file or socket handle): a handle dropped while an
//! operation is in flight keeps its descriptor open, and its queues registered, until that
//! operation's final completion.

use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock, Weak};

use regio_adapters::{Adapter, Target, WorkQueue};
use regio_pool::Message;

use crate::files::FixedFile;
use crate::shared::Shared;
use crate::worker::Local;

/// The handle of a descriptor, as operations see it (its type erased).
pub(crate) type AnyFd = dyn AsRawFd + Send + Sync;

/// A descriptor's handle (`H`: a `std::fs::File`, a `std::net::TcpStream`, ...) and its work
/// queues. Operations hold it as `Arc<FdQueues>` (the handle's type erased).
pub(crate) struct FdQueues<H: ?Sized = AnyFd> {
    /// The runtime whose workers may use the descriptor, set by the first one that does.
    /// Declared before `handle`: its fixed-file slot is emptied before the handle closes.
    bound: OnceLock<Binding>,
    /// Whether to install the descriptor in a fixed-file slot when binding.
    wants_slot: bool,
    /// The handle, closed after the queues are removed.
    handle: H,
}

/// The runtime and adapter a descriptor is bound to, and its queues there.
struct Binding {
    owner: Weak<Shared>,
    /// The adapter's index in the runtime, and the adapter.
    index: usize,
    adapter: Adapter<Message>,
    /// The work queues, by worker index, each made by its worker on first use.
    by_worker: Box<[OnceLock<WorkQueue<Message>>]>,
    /// The fixed-file slot the queues target, if the descriptor has one.
    fixed: Option<FixedFile>,
}

impl<H: ?Sized + AsRawFd> std::fmt::Debug for FdQueues<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdQueues")
            .field("fd", &self.handle.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl<H> FdQueues<H> {
    /// Queues for `handle`, bound to the runtime whose worker first uses them; they name its
    /// plain descriptor.
    pub(crate) fn new(handle: H) -> Self {
        Self {
            bound: OnceLock::new(),
            wants_slot: false,
            handle,
        }
    }

    /// Queues for `handle`, as [`new`](Self::new) makes them, that name a fixed-file slot
    /// rather than the descriptor if one is free when they are bound (module docs).
    pub(crate) fn fixed(handle: H) -> Self {
        Self {
            bound: OnceLock::new(),
            wants_slot: true,
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
    /// The descriptor's adapter and its work queue on `local`'s ring of it, made on first use.
    /// The first use binds the descriptor to `local`'s runtime and its current adapter.
    ///
    /// # Errors
    ///
    /// An errno for the operation's completion: `EXDEV` if another runtime's workers used the
    /// descriptor first, `ENODEV` if the current adapter of its first use does not exist,
    /// `EIO` if the adapter cannot make the queue (logged with the reason).
    pub(crate) fn for_worker(&self, local: &Local) -> Result<(usize, WorkQueue<Message>), i32> {
        let shared = &local.shared;
        let bound = match self.bound.get() {
            Some(bound) => bound,
            None => {
                let index = local.current_adapter()?;
                self.bound.get_or_init(|| {
                    let rt = &shared.adapters[index];
                    Binding {
                        owner: Arc::downgrade(shared),
                        index,
                        adapter: rt.adapter.clone(),
                        by_worker: (0..shared.workers.len()).map(|_| OnceLock::new()).collect(),
                        fixed: self
                            .wants_slot
                            .then(|| {
                                FixedFile::install(
                                    &rt.adapter,
                                    &rt.file_slots,
                                    self.handle.as_raw_fd(),
                                )
                            })
                            .flatten(),
                    }
                })
            }
        };
        if !std::ptr::eq(bound.owner.as_ptr(), Arc::as_ptr(shared)) {
            return Err(libc::EXDEV);
        }
        let worker = local.remote.index;
        let slot = bound.by_worker.get(worker).ok_or(libc::EIO)?;
        if let Some(wq) = slot.get() {
            return Ok((bound.index, wq.clone()));
        }
        let depth = shared.adapters[bound.index].queue_depth;
        let target = match &bound.fixed {
            Some(fixed) => Target::Fixed(fixed.slot()),
            None => Target::Fd(self.handle.as_raw_fd()),
        };
        let wq = bound
            .adapter
            .work_queue(worker, target, depth, depth)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot make a work queue for a descriptor");
                libc::EIO
            })?;
        // Only this worker sets its own slot, and it found the slot empty.
        if let Err(made) = slot.set(wq.clone()) {
            bound.adapter.remove_work_queue(&made);
            return Err(libc::EIO);
        }
        Ok((bound.index, wq))
    }
}

impl<H: ?Sized> FdQueues<H> {
    /// The fixed-file slot the descriptor's operations name: `None` before a worker used it,
    /// and when it has none (no slot was free, or it takes none).
    pub(crate) fn fixed_slot(&self) -> Option<u32> {
        self.bound.get()?.fixed.as_ref().map(|f| f.slot().0)
    }
}

impl<H: ?Sized + AsRawFd> AsRawFd for FdQueues<H> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.handle.as_raw_fd()
    }
}

impl<H: ?Sized> Drop for FdQueues<H> {
    fn drop(&mut self) {
        if let Some(bound) = self.bound.get() {
            for wq in bound.by_worker.iter().filter_map(OnceLock::get) {
                bound.adapter.remove_work_queue(wq);
            }
        }
    }
}
