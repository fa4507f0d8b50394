//! How adapters register the pool's memory with the kernel, without the pool knowing io_uring.

use std::io;
use std::ptr::NonNull;

use crate::key::RegionId;

/// Something that registers regions with the kernel: an adapter's io_uring, typically with
/// `IORING_REGISTER_BUFFERS_UPDATE` into a sparse table, at index `id.0`.
///
/// [`MessagePool::attach`](crate::MessagePool::attach) calls [`register`](Self::register) for
/// every region the pool has, and the pool calls it again for each region added later by
/// [`MessagePool::grow`](crate::MessagePool::grow), before any buffer of that region is handed
/// out. When the pool is finally freed it calls [`unregister`](Self::unregister) for each region.
pub trait Registrar: Send + Sync {
    /// Registers `len` bytes at `base` as region `id`.
    ///
    /// The memory stays mapped until `unregister(id)` has been called.
    fn register(&self, id: RegionId, base: NonNull<u8>, len: usize) -> io::Result<()>;

    /// The region is about to be unmapped: drop the registration. The default does nothing, for
    /// registrars whose tables die with their ring.
    fn unregister(&self, id: RegionId) {
        let _ = id;
    }
}
