//! The two kinds of reader: registered QSBR threads and short-lived guards.

use crate::domain::{Domain, Slot};
use crate::primitive::sync::Arc;

/// A registered reader: typically one per executor thread.
///
/// A read through it is a plain pointer load. In exchange the owner announces
/// [`quiescent`](Self::quiescent) states, where it holds no reference into any
/// [`Rcu`](crate::Rcu) of the domain, often enough for writers to make progress; an executor does
/// it once per loop turn. Around a long block (parking in `epoll_wait`, say) it goes offline with
/// [`offline_while`](Self::offline_while), and then never holds up a writer.
///
/// The borrow checker enforces the protocol: references returned by
/// [`Rcu::read`](crate::Rcu::read) borrow the reader, and every state change takes `&mut self`.
/// A `QsbrReader` that can be read through is always online.
///
/// ```
/// use std::sync::Arc;
/// use regio_sync::{Domain, Rcu};
///
/// let domain = Arc::new(Domain::new());
/// let table = Rcu::new(&domain, vec![1, 2, 3]);
/// let mut reader = domain.register();
/// assert_eq!(table.read(&reader).len(), 3);
/// reader.quiescent(); // end of a loop turn: no references held
/// ```
pub struct QsbrReader {
    domain: Arc<Domain>,
    slot: *const Slot,
}

// SAFETY: the slot belongs to this handle alone until it is dropped, and every state change goes
// through `&mut self`; the raw pointer stays valid because the handle keeps the domain alive.
unsafe impl Send for QsbrReader {}
// SAFETY: a shared `&QsbrReader` only permits reads, which need no exclusive access to the slot.
unsafe impl Sync for QsbrReader {}

impl std::fmt::Debug for QsbrReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QsbrReader").finish_non_exhaustive()
    }
}

impl Domain {
    /// Registers a QSBR reader. It is online from the start.
    pub fn register(self: &Arc<Self>) -> QsbrReader {
        let slot: *const Slot = self.claim_slot();
        // SAFETY: the slot was just claimed and lives as long as the domain.
        self.online(unsafe { &*slot });
        QsbrReader {
            domain: Arc::clone(self),
            slot,
        }
    }

    /// Starts a guarded read for a thread that is not registered.
    ///
    /// It costs a slot claim and a fence; while the guard lives, writers wait for it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use regio_sync::{Domain, Rcu};
    ///
    /// let domain = Arc::new(Domain::new());
    /// let config = Rcu::new(&domain, String::from("v1"));
    /// let guard = domain.guard();
    /// assert_eq!(config.read(&guard), "v1");
    /// ```
    pub fn guard(&self) -> Guard<'_> {
        let slot = self.claim_slot();
        self.online(slot);
        Guard { domain: self, slot }
    }
}

impl QsbrReader {
    fn slot(&self) -> &Slot {
        // SAFETY: the slot is owned by this handle and allocated until the domain (kept alive by
        // `self.domain`) drops.
        unsafe { &*self.slot }
    }

    /// Announces a quiescent state: the caller holds no reference obtained through this reader.
    ///
    /// A load and a store, with no fence and no read-modify-write.
    #[inline]
    pub fn quiescent(&mut self) {
        self.domain.quiescent(self.slot());
    }

    /// Runs `f` offline: writers do not wait for this reader until `f` returns.
    ///
    /// Use it around anything that blocks. Coming back online costs one fence.
    pub fn offline_while<R>(&mut self, f: impl FnOnce() -> R) -> R {
        /// Comes back online even if `f` unwinds, so a caught panic cannot leave a readable
        /// reader offline.
        struct Rejoin<'a>(&'a QsbrReader);
        impl Drop for Rejoin<'_> {
            fn drop(&mut self) {
                self.0.domain.online(self.0.slot());
            }
        }
        self.domain.offline(self.slot());
        let _rejoin = Rejoin(self);
        f()
    }

    /// Waits for a grace period from a registered thread, offline for the wait so that the
    /// thread does not wait for itself.
    pub fn synchronize(&mut self) {
        let domain = Arc::clone(&self.domain);
        self.offline_while(|| domain.synchronize());
    }

    /// The domain this reader belongs to.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }
}

impl Drop for QsbrReader {
    fn drop(&mut self) {
        self.domain.offline(self.slot());
        self.domain.release_slot(self.slot());
    }
}

/// A guarded read section for a thread that is not a registered reader. See [`Domain::guard`].
pub struct Guard<'d> {
    domain: &'d Domain,
    slot: &'d Slot,
}

impl std::fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.domain.offline(self.slot);
        self.domain.release_slot(self.slot);
    }
}

/// Something that proves the current thread is inside a read-side section of a domain.
///
/// Implemented by [`QsbrReader`] and [`Guard`]; sealed.
pub trait ReadSide: sealed::Sealed {
    /// The domain whose grace periods protect reads made through this.
    fn read_domain(&self) -> &Domain;
}

impl ReadSide for QsbrReader {
    #[inline]
    fn read_domain(&self) -> &Domain {
        &self.domain
    }
}

impl ReadSide for Guard<'_> {
    #[inline]
    fn read_domain(&self) -> &Domain {
        self.domain
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::QsbrReader {}
    impl Sealed for super::Guard<'_> {}
}
