//! How adapters register the pool's memory with the kernel, without the pool knowing io_uring.

use std::io;
use std::ptr::NonNull;

use crate::key::RegionId;

/// One region of a pool, as a [`Registrar`] sees it.
///
/// A region is named by its pool and its id in that pool: two pools both have a region 0, so the
/// registrar (an adapter) picks the kernel's fixed-buffer index itself and remembers which pool
/// region it holds. A buffer of the pool is then found by the same pair, never by an index the
/// pool chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRegion {
    /// The pool's id ([`MessagePool::id`](crate::MessagePool::id)).
    pub pool: u32,
    /// The region's id in its pool.
    pub id: RegionId,
    /// The region's first byte.
    pub base: NonNull<u8>,
    /// The region's length in bytes.
    pub len: usize,
}

// SAFETY: a `PoolRegion` is a description (an address and a length), not access to the memory;
// whoever dereferences `base` must own the memory, which sending the description does not give.
unsafe impl Send for PoolRegion {}
// SAFETY: as above.
unsafe impl Sync for PoolRegion {}

/// Something that registers regions with the kernel: an adapter's io_uring rings, typically.
///
/// [`MessagePool::attach`](crate::MessagePool::attach) calls [`register`](Self::register) for
/// every region the pool has, and the pool calls it again for each region added later by
/// [`MessagePool::grow`](crate::MessagePool::grow), before any buffer of that region is handed
/// out. [`unregister`](Self::unregister) is called when the pool is freed, for each region, and
/// by [`MessagePool::detach`](crate::MessagePool::detach).
///
/// # Contract
///
/// - **No waiting on the caller.** `register` and `unregister` may be called by a thread that
///   is in the middle of work the registrar knows: the pool is grown inside a batch of posts, or
///   its last message is dropped while the thread reaps a ring. Neither may wait for anything
///   such a thread can hold; work that needs it must be deferred.
/// - **Unmapping follows `unregister`.** When the pool is freed, each region is unmapped as soon
///   as `unregister` returns. The registrar must refuse new I/O naming the region from then on.
///   (io_uring pins registered pages, so I/O already in flight, and a kernel table entry whose
///   removal was deferred, keep their pages rather than reach into whatever is mapped next.)
///
/// # Registering is unsafe
///
/// A registrar hands the kernel the memory a [`PoolRegion`] describes, and an adapter then turns
/// every buffer of pool `region.pool` in region `region.id` into an address inside it. So only
/// the pool itself may call [`register`](Self::register), with its own regions: anyone else
/// could aim the kernel at memory they do not own (another message's buffer, a freed
/// allocation). Safe code cannot do that, neither with a region it makes up nor with one it
/// got from the pool:
///
/// ```compile_fail,E0133
/// fn forge(registrar: &dyn regio_pool::Registrar, victim: &regio_pool::Message, pool: u32) {
///     let region = regio_pool::PoolRegion {
///         pool,
///         id: regio_pool::RegionId(0),
///         base: std::ptr::NonNull::new(victim.as_ptr()).unwrap(),
///         len: 4096,
///     };
///     let _ = registrar.register(region);
/// }
/// ```
pub trait Registrar: Send + Sync {
    /// Registers `region`. An error leaves the region unregistered here.
    ///
    /// # Safety
    ///
    /// `region` is region `region.id` of the live pool whose id is `region.pool`, mapped at
    /// `base..base + len`, and the caller is that pool: the memory stays mapped until the pool
    /// has called [`unregister`](Self::unregister) for it on this registrar (or the registrar
    /// [`is_detached`](Self::is_detached)), and no other memory is ever registered under the
    /// same pool and id. [`MessagePool::attach`](crate::MessagePool::attach) and
    /// [`MessagePool::grow`](crate::MessagePool::grow) are the callers.
    unsafe fn register(&self, region: PoolRegion) -> io::Result<()>;

    /// Drops the registration of region `id` of pool `pool` (see the contract above). The
    /// default does nothing, for registrars whose tables die with their ring.
    fn unregister(&self, pool: u32, id: RegionId) {
        let _ = (pool, id);
    }

    /// Whether this registrar can register nothing any more (its adapter is gone). The pool then
    /// forgets it, so that it neither blocks growth nor is called again.
    fn is_detached(&self) -> bool {
        false
    }
}
