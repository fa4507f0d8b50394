//! Registered memory: regions registered by hand ([`Adapter::register_region`]) and the pools'
//! regions ([`Adapter::registrar`]). How a buffer names a region, and why it cannot name another
//! one, is written once in the crate docs ([Buffer identity](crate#buffer-identity)).
//!
//! Every registration picks a free fixed-buffer index in the adapter's table, installs the
//! region there on ring 0 and clones it to the other rings (or installs it on each, where the
//! kernel cannot clone), and only then publishes it in the table. A registration that fails on
//! one ring is removed again from the rings it reached, so it leaves no pinned pages behind.
//!
//! All of it runs under the tables' write lock, with system calls on the rings' fds
//! ([`crate::register`]): never with a ring owned, so a thread that owns a ring (reaping, or in
//! a [`Batch`](crate::Batch)) can grow a pool or free one without waiting for itself.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use regio_pool::{PoolRegion, RegionId, Registrar};

use super::{check_registrar, next_generation, Adapter, Inner};
use crate::error::Error;
use crate::register;
use crate::tables::{Owner, Region, Slot};
use crate::IoBuf;

/// A region registered with [`Adapter::register_region`]: where the adapter put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The fixed-buffer index the adapter chose; buffers of the region name it as their key's
    /// region ([`BufSlice::Registered`](crate::BufSlice::Registered)).
    pub index: RegionId,
    /// The registration's generation, unique in the process; buffers of the region carry it.
    pub generation: u32,
}

impl<B: IoBuf> Adapter<B> {
    /// Registers `len` bytes at `base` as a fixed buffer on every ring, at an index the adapter
    /// chooses, and returns that index with the registration's generation. Buffers of the region
    /// name both ([`BufSlice::Registered`](crate::BufSlice::Registered)).
    ///
    /// Pools register through [`registrar`](Self::registrar) instead. In single-issuer mode it
    /// must come from the thread that owns every bound ring ([`Error::NotOwner`] otherwise,
    /// before any ring is touched).
    ///
    /// # Safety
    ///
    /// `base..base + len` must be one allocation that stays valid until
    /// [`unregister_region`](Self::unregister_region) returns or the adapter is dropped, and
    /// that nobody else uses while an operation may write to it.
    ///
    /// # Errors
    ///
    /// [`Error::MemlockTooLow`] when pinning exceeds RLIMIT_MEMLOCK; [`Error::Invalid`] when the
    /// table ([`Config::max_regions`](crate::Config::max_regions)) is full; [`Error::Sys`] for
    /// another refusal. Nothing stays registered after an error.
    pub unsafe fn register_region(&self, base: *mut u8, len: usize) -> Result<Registration, Error> {
        let _w = self.inner.tables.write_lock();
        check_registrar(&self.inner.rings)?;
        // SAFETY: the caller's promise about the memory.
        unsafe { self.inner.install_region(base, len, Owner::Caller) }
    }

    /// Unregisters the region registered at `index`: new posts naming it are rejected at once;
    /// operations already in flight keep the kernel's reference to its pages until they
    /// complete.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when no region of [`register_region`](Self::register_region) is at
    /// `index` (a pool's region leaves with [`MessagePool::detach`](regio_pool::MessagePool::detach));
    /// [`Error::NotOwner`] in single-issuer mode off the thread that owns every bound ring
    /// (nothing is changed then); [`Error::Sys`] when the kernel refuses the removal (the region
    /// is out of the table all the same).
    pub fn unregister_region(&self, index: RegionId) -> Result<(), Error> {
        let _w = self.inner.tables.write_lock();
        check_registrar(&self.inner.rings)?;
        let guard = self.inner.tables.domain.guard();
        let registered = self
            .inner
            .tables
            .regions
            .read(&guard)
            .live(index.0)
            .copied();
        drop(guard);
        if !registered.is_some_and(|r| r.owner == Owner::Caller) {
            return Err(Error::Invalid(
                "no region registered with register_region at this index",
            ));
        }
        self.inner.remove_region(index.0)
    }

    /// This adapter as a [`Registrar`] for
    /// [`MessagePool::attach`](regio_pool::MessagePool::attach): each region of the pool becomes
    /// a fixed buffer on every ring, at an index the adapter picks. It holds the adapter weakly,
    /// so a pool (which the buffers of in-flight operations keep alive) never keeps its adapter
    /// alive; once the adapter is gone, the pool forgets it ([`Registrar::is_detached`]).
    pub fn registrar(&self) -> Arc<dyn Registrar> {
        Arc::new(PoolRegistrar {
            adapter: Arc::downgrade(&self.inner),
        })
    }
}

impl<B> Inner<B> {
    /// Registers `base..base + len` for `owner` at a vacant index on every ring, and publishes it.
    /// Called with the tables' write lock held, on a thread that may register.
    ///
    /// # Safety
    ///
    /// The memory must stay valid until the region is removed or the adapter is dropped.
    unsafe fn install_region(
        &self,
        base: *mut u8,
        len: usize,
        owner: Owner,
    ) -> Result<Registration, Error> {
        self.flush_removals();
        let guard = self.tables.domain.guard();
        let index = self.tables.regions.read(&guard).vacant();
        drop(guard);
        let index = index.ok_or(Error::Invalid(
            "every fixed-buffer index is taken (Config::max_regions)",
        ))?;
        let iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        let pin_err = |source: io::Error| match source.raw_os_error() {
            Some(libc::ENOMEM) => Error::memlock("registering buffers", Some(len as u64)),
            _ => Error::Sys {
                what: "IORING_REGISTER_BUFFERS_UPDATE",
                source,
            },
        };
        let first = self.rings[0].fd();
        for (k, ring) in self.rings.iter().enumerate() {
            // Relaxed: `clone_ok` only picks between two correct paths.
            let installed = if k > 0 && self.clone_ok.load(Ordering::Relaxed) {
                register::clone_buffer(ring.fd(), first, u32::from(index)).or_else(|e| {
                    // An opcode the kernel lacks is EINVAL; any other error is this
                    // registration's, and fails it.
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(e);
                    }
                    tracing::warn!(parent: &self.span, error = %e,
                        "IORING_REGISTER_CLONE_BUFFERS refused (Linux 6.12+); registering on each ring");
                    // Relaxed: as above.
                    self.clone_ok.store(false, Ordering::Relaxed);
                    // SAFETY: the caller's promise about the memory.
                    unsafe { register::buffers_update(ring.fd(), u32::from(index), &iov) }
                })
            } else {
                // SAFETY: the caller's promise about the memory.
                unsafe { register::buffers_update(ring.fd(), u32::from(index), &iov) }
            };
            if let Err(e) = installed {
                for done in &self.rings[..k] {
                    if let Err(e) = register::buffers_remove(done.fd(), u32::from(index)) {
                        tracing::error!(parent: &self.span, index, error = %e,
                            "rolling back a failed registration failed");
                    }
                }
                return Err(pin_err(e));
            }
        }
        let generation = next_generation();
        let region = Region {
            base: base as usize,
            size: len as u64,
            generation,
            owner,
        };
        self.tables
            .regions
            .update(|t| {
                let mut t = t.clone();
                t.insert(index, region);
                t
            })
            .defer();
        tracing::debug!(parent: &self.span, index, len, generation, ?owner, "region registered");
        Ok(Registration {
            index: RegionId(index),
            generation,
        })
    }

    /// Takes the region at `index` out of the table and removes it from every ring. Called with
    /// the tables' write lock held, on a thread that may register.
    fn remove_region(&self, index: u16) -> Result<(), Error> {
        self.leave_table(index, Slot::Free);
        let mut result = Ok(());
        for ring in &self.rings {
            if let Err(source) = register::buffers_remove(ring.fd(), u32::from(index)) {
                tracing::warn!(parent: &self.span, index, error = %source, "removing a fixed buffer failed");
                result = Err(Error::Sys {
                    what: "IORING_REGISTER_BUFFERS_UPDATE (remove)",
                    source,
                });
            }
        }
        result
    }

    /// Publishes a region table without the region at `index`, whose slot becomes `then`.
    fn leave_table(&self, index: u16, then: Slot) {
        self.tables
            .regions
            .update(|t| {
                let mut t = t.clone();
                t.remove(index, then);
                t
            })
            .defer();
    }

    /// Removes the kernel entries of the regions that a thread other than the owner freed in
    /// single-issuer mode ([`Slot::Removing`]). Called with the tables' write lock held, on a
    /// thread that may register.
    fn flush_removals(&self) {
        let guard = self.tables.domain.guard();
        let removing: Vec<u16> = self.tables.regions.read(&guard).removing().collect();
        drop(guard);
        for index in removing {
            let removed = self
                .rings
                .iter()
                .all(|ring| register::buffers_remove(ring.fd(), u32::from(index)).is_ok());
            if removed {
                self.leave_table(index, Slot::Free);
            }
        }
    }

    /// A pool's region is going away. Never waits for a ring: in single-issuer mode, off the
    /// owner thread, the region leaves the table at once and its kernel entry waits for the
    /// next registration on the owner thread ([`flush_removals`](Self::flush_removals)).
    fn unregister_pool_region(&self, pool: u32, id: RegionId) {
        let _w = self.tables.write_lock();
        let guard = self.tables.domain.guard();
        let index = self.tables.regions.read(&guard).pool_index(pool, id.0);
        drop(guard);
        let Some(index) = index else {
            return;
        };
        if check_registrar(&self.rings).is_ok() {
            // Failures are logged by `remove_region`; the region is out of the table anyway.
            let _ = self.remove_region(index);
            return;
        }
        self.leave_table(index, Slot::Removing);
        tracing::debug!(parent: &self.span, index, "a pool region was freed off the owner thread; its kernel entry goes at the next registration there");
    }
}

/// The pool's view of an adapter (see [`Adapter::registrar`]).
struct PoolRegistrar<B> {
    adapter: Weak<Inner<B>>,
}

impl<B: IoBuf> Registrar for PoolRegistrar<B> {
    unsafe fn register(&self, region: PoolRegion) -> io::Result<()> {
        let inner = self
            .adapter
            .upgrade()
            .ok_or_else(|| io::Error::other("the adapter was dropped"))?;
        let _w = inner.tables.write_lock();
        check_registrar(&inner.rings).map_err(io::Error::other)?;
        let guard = inner.tables.domain.guard();
        let known = inner
            .tables
            .regions
            .read(&guard)
            .pool_index(region.pool, region.id.0)
            .is_some();
        drop(guard);
        if known {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this pool region is registered on the adapter already",
            ));
        }
        let owner = Owner::Pool {
            pool: region.pool,
            id: region.id.0,
        };
        // SAFETY: the caller is the region's pool (`register`'s contract), which keeps it mapped
        // until it calls `unregister`, which takes the region out of the table.
        unsafe { inner.install_region(region.base.as_ptr(), region.len, owner) }
            .map(drop)
            .map_err(|e| match e {
                Error::MemlockTooLow { .. } => io::Error::new(io::ErrorKind::OutOfMemory, e),
                Error::Sys { source, .. } => source,
                other => io::Error::other(other),
            })
    }

    fn unregister(&self, pool: u32, id: RegionId) {
        // A dropped adapter took its registrations with its rings.
        if let Some(inner) = self.adapter.upgrade() {
            inner.unregister_pool_region(pool, id);
        }
    }

    fn is_detached(&self) -> bool {
        self.adapter.strong_count() == 0
    }
}
