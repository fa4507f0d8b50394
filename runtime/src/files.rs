//! Fixed-file slots: [`FixedFile`], a descriptor installed in one slot of an adapter's
//! fixed-file table on every worker's ring of that adapter, taken from that adapter's
//! [`FileSlots`] (each adapter of a runtime has its own table and its own free slots).
//!
//! A socket or a file that a worker uses gets a slot when it is bound to the runtime and an
//! adapter (its first operation, see the `queues` module): its descriptor is installed in that
//! slot of every ring of that adapter ([`Adapter::set_file`]), and its operations name the slot
//! with `IOSQE_FIXED_FILE`, which spares the kernel a reference count on the file per
//! operation. The slot goes back to the free list only after [`Adapter::clear_file`] emptied it
//! on every ring, and that happens when the descriptor's queues are dropped, which operations
//! hold until their final completion: no operation naming the slot can be staged or in flight
//! then, on any ring, so a slot is never given to a second file while the kernel may still look
//! the first one up through it.
//!
//! # Exhaustion, and when there are no slots
//!
//! A full table is not an error: the descriptor keeps its plain number (every socket and file
//! type here keeps one anyway, for `as_std`, `set_nodelay`, `peer_addr`, `metadata`, splices),
//! and its operations name that number, as they did before fixed files. Refusing a connection
//! or a file because a table of a few hundred slots is full would turn a saving of one atomic
//! reference count per operation into an outage. [`Runtime::fixed_files_in_use`] tells how
//! many slots are taken.
//!
//! An adapter in the single-issuer ring mode ([`RingMode::SingleIssuer`]) has no slots: there
//! the kernel takes `io_uring_register` on a ring only from the worker that owns it, so no one
//! thread can install a file on every ring. The runtime's other adapters keep theirs.
//!
//! If the kernel refuses to empty a slot (it should not: the slot is in range and the ring
//! alive), the slot stays out of the free list for good, logged: the kernel may still hold the
//! file there, and giving the slot to another file would replace it under the first one.
//!
//! # Synchronization
//!
//! The free slots are a [`regio_pool::FileSlots`] (a lock-free stack; see its docs): a slot is
//! an [`OwnedFileSlot`], which goes back when it drops, once. [`FixedFile`] drops it only after
//! the slot was emptied on every ring.
//!
//! [`Adapter::set_file`]: regio_adapters::Adapter::set_file
//! [`Adapter::clear_file`]: regio_adapters::Adapter::clear_file
//! [`Runtime::fixed_files_in_use`]: crate::Runtime::fixed_files_in_use
//! [`RingMode::SingleIssuer`]: crate::RingMode::SingleIssuer

use std::os::fd::RawFd;

use regio_adapters::{Adapter, FileSlot};
use regio_pool::{FileSlots, Message, OwnedFileSlot};

/// A descriptor installed in a fixed-file slot on every ring of an adapter; dropping it empties
/// the slot on every ring and frees it. Drop it only once no operation naming the slot can be
/// staged or in flight (the `queues` module holds it for as long as operations hold the queues).
pub(crate) struct FixedFile {
    /// Taken out (and forgotten, never given back) only when the kernel refuses to empty it.
    slot: Option<OwnedFileSlot>,
    number: FileSlot,
    adapter: Adapter<Message>,
}

impl std::fmt::Debug for FixedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedFile")
            .field("slot", &self.number.0)
            .finish_non_exhaustive()
    }
}

impl FixedFile {
    /// Installs `fd` in a free slot of `slots` on every ring of `adapter` (the kernel takes its
    /// own reference to the file). `None` when no slot is free, or when the adapter refuses
    /// (logged): the caller then uses the plain descriptor.
    pub(crate) fn install(
        adapter: &Adapter<Message>,
        slots: &FileSlots,
        fd: RawFd,
    ) -> Option<Self> {
        let Ok(slot) = slots.alloc() else {
            tracing::debug!(fd, "no free fixed-file slot; the descriptor stays plain");
            return None;
        };
        let file = Self {
            number: slot.slot(),
            slot: Some(slot),
            adapter: adapter.clone(),
        };
        if let Err(e) = adapter.set_file(file.number, fd) {
            tracing::warn!(
                fd,
                slot = file.number.0,
                error = %e,
                "cannot install a fixed file; the descriptor stays plain"
            );
            // A failed update may have reached some rings: dropping `file` empties the slot
            // everywhere before it goes back.
            drop(file);
            return None;
        }
        Some(file)
    }

    /// The slot.
    pub(crate) fn slot(&self) -> FileSlot {
        self.number
    }
}

impl Drop for FixedFile {
    /// Empties the slot on every ring, then gives it back; keeps it out of the free list if
    /// the kernel refuses (module docs).
    fn drop(&mut self) {
        if let Err(e) = self.adapter.clear_file(self.number) {
            tracing::error!(
                slot = self.number.0,
                error = %e,
                "cannot empty a fixed-file slot; it stays out of use"
            );
            std::mem::forget(self.slot.take());
        }
    }
}
