//! `Rcu<T>`: a pointer that readers follow without blocking while one writer replaces it.
//!
//! # Synchronization
//!
//! - The current version is an `AtomicPtr<T>` made by `Box::into_raw`. Writers publish with an
//!   `AcqRel` swap and readers load with `Acquire`, so a reader that sees a version sees it whole.
//! - Writers are serialised by a mutex, so a read-copy-update sees the version it replaces.
//! - An old version is freed only after a grace period of the [`Domain`] (see its module docs).

use std::fmt;
use std::marker::PhantomData;

use crate::domain::Domain;
use crate::reader::ReadSide;
use regio_loom_shim::sync::atomic::{AtomicPtr, Ordering};
use regio_loom_shim::sync::Mutex;

/// A shared value that many threads read while one writer at a time replaces it.
///
/// Reads never block and never write shared memory. A writer publishes a new version with
/// [`replace`](Self::replace) or [`update`](Self::update); the old one comes back as a
/// [`Retired`], which either waits for a grace period ([`Retired::synchronize`]) or is handed to
/// the domain to drop later ([`Retired::defer`], also what dropping it does).
///
/// ```
/// use regio_sync::{Domain, Rcu};
///
/// let domain = Domain::new();
/// let routes = Rcu::new(&domain, vec!["eth0"]);
///
/// let mut reader = domain.register();
/// assert_eq!(routes.read(&reader)[0], "eth0");
/// reader.quiescent();
///
/// // The writer: copy, modify, publish, then reclaim without blocking.
/// routes.update(|old| {
///     let mut new = old.clone();
///     new.push("eth1");
///     new
/// }).defer();
/// assert_eq!(routes.read(&reader).len(), 2);
/// ```
pub struct Rcu<T> {
    current: AtomicPtr<T>,
    domain: Domain,
    writer: Mutex<()>,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: the `Rcu` owns a `T` that it may drop on any thread, hence `T: Send`.
unsafe impl<T: Send> Send for Rcu<T> {}
// SAFETY: readers on many threads get `&T` at once (`T: Sync`), and a writer on any thread may
// replace and drop a version (`T: Send`).
unsafe impl<T: Send + Sync> Sync for Rcu<T> {}

impl<T> Rcu<T> {
    /// Creates a cell holding `value`, protected by `domain`'s grace periods.
    pub fn new(domain: &Domain, value: T) -> Self {
        Self {
            current: AtomicPtr::new(Box::into_raw(Box::new(value))),
            domain: domain.clone(),
            writer: Mutex::new(()),
            _owns: PhantomData,
        }
    }

    /// The domain whose grace periods protect this cell.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Reads the current version.
    ///
    /// The reference lives as long as the borrow of `reader`, and a [`QsbrReader`] cannot
    /// announce a quiescent state while it is borrowed. The cost is one load, plus a pointer
    /// comparison that checks `reader` belongs to this cell's domain.
    ///
    /// # Panics
    ///
    /// If `reader` belongs to another domain, whose grace periods would not protect this read.
    ///
    /// [`QsbrReader`]: crate::QsbrReader
    #[inline]
    pub fn read<'a>(&'a self, reader: &'a impl ReadSide) -> &'a T {
        assert!(
            reader.protects(&self.domain),
            "Rcu::read through a reader of another domain"
        );
        // Acquire: pairs with the writer's AcqRel swap, so the version's contents are visible.
        let ptr = self.current.load(Ordering::Acquire);
        // SAFETY: the reader is online in this domain (a `QsbrReader` always is; a `Guard` is
        // for its lifetime), so the version it loaded stays allocated until the reader passes a
        // quiescent state, which needs `&mut` to the reader and so ends the borrow `'a` first.
        unsafe { &*ptr }
    }
}

impl<T: Send + 'static> Rcu<T> {
    /// Publishes `value` and returns the version it replaced.
    pub fn replace(&self, value: T) -> Retired<T> {
        let _writer = self.lock_writer();
        self.publish(value)
    }

    /// Read-copy-update: builds the next version from the current one, then publishes it.
    ///
    /// Writers are serialised, so no other update slips in between the read and the publish.
    pub fn update(&self, next: impl FnOnce(&T) -> T) -> Retired<T> {
        let _writer = self.lock_writer();
        // Relaxed: only writers store `current`, and we hold the writer lock, whose acquisition
        // ordered us after the previous writer's store.
        let ptr = self.current.load(Ordering::Relaxed);
        // SAFETY: only writers retire versions and we are the only writer; the current version
        // is never retired while it is current.
        let value = next(unsafe { &*ptr });
        self.publish(value)
    }

    fn publish(&self, value: T) -> Retired<T> {
        let fresh = Box::into_raw(Box::new(value));
        // AcqRel: Release publishes the new version's contents to Acquire readers; Acquire makes
        // the old version's contents ours before we drop it.
        let old = self.current.swap(fresh, Ordering::AcqRel);
        Retired {
            // SAFETY: `old` came from `Box::into_raw` and was current until the swap, so nothing
            // else owns it.
            value: Some(unsafe { Box::from_raw(old) }),
            domain: self.domain.clone(),
        }
    }

    fn lock_writer(&self) -> regio_loom_shim::sync::MutexGuard<'_, ()> {
        // The lock guards no data, so a panic in another writer's closure leaves nothing torn.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Drop for Rcu<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means no reader or writer is left.
        let ptr = self.current.load(Ordering::Relaxed);
        // SAFETY: `ptr` came from `Box::into_raw`; with no readers left it is freed only here.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

impl<T: fmt::Debug> fmt::Debug for Rcu<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let guard = self.domain.guard();
        f.debug_tuple("Rcu").field(self.read(&guard)).finish()
    }
}

/// A version that was replaced and may still be read. Readers may hold it until a grace period
/// ends, so it cannot be touched before then.
///
/// Dropping it is [`defer`](Self::defer).
#[must_use = "a retired version is reclaimed by `synchronize` (blocking) or `defer`"]
pub struct Retired<T: Send + 'static> {
    value: Option<Box<T>>,
    domain: Domain,
}

impl<T: Send + 'static> Retired<T> {
    /// Waits for a grace period, then hands the old version back, now unshared.
    ///
    /// The calling thread must not be an online reader of the domain, or it waits for itself
    /// forever: a registered thread calls it inside
    /// [`QsbrReader::offline_while`](crate::QsbrReader::offline_while).
    pub fn synchronize(mut self) -> T {
        self.domain.synchronize();
        unbox(
            self.value
                .take()
                .expect("a Retired holds its value until consumed"),
        )
    }

    /// Hands the old version to the domain, which drops it after a grace period, without
    /// waiting for readers here.
    pub fn defer(self) {
        drop(self);
    }
}

impl<T: Send + 'static> Drop for Retired<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            #[cfg(not(loom))]
            self.domain.defer(value);
            #[cfg(loom)]
            self.domain.defer(Box::new(unbox(value)));
        }
    }
}

/// Moves a retired version out of its allocation.
///
/// Under loom the allocation is leaked instead of freed: the models detect a premature
/// reclamation as a race between the version's destructor and a reader, and the leaked storage
/// keeps that detection free of real use-after-free in the models that expect it.
#[allow(
    clippy::boxed_local,
    reason = "the box is the reclaimed allocation: freed here, leaked under loom"
)]
fn unbox<T>(value: Box<T>) -> T {
    #[cfg(not(loom))]
    {
        *value
    }
    #[cfg(loom)]
    {
        let ptr = Box::into_raw(value);
        // SAFETY: `ptr` came from `Box::into_raw` and is read exactly once; the allocation is
        // never freed, so the bytes stay readable but are never used as a `T` again.
        unsafe { std::ptr::read(ptr) }
    }
}

impl<T: Send + 'static> fmt::Debug for Retired<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retired").finish_non_exhaustive()
    }
}
