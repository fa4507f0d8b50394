//! The two kinds of reader: registered QSBR threads and short-lived guards.

use crate::domain::{Domain, Slot, State};

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
/// use regio_sync::{Domain, Rcu};
///
/// let domain = Domain::new();
/// let table = Rcu::new(&domain, vec![1, 2, 3]);
/// let mut reader = domain.register();
/// assert_eq!(table.read(&reader).len(), 3);
/// reader.quiescent(); // end of a loop turn: no references held
/// ```
pub struct QsbrReader {
    domain: Domain,
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
    pub fn register(&self) -> QsbrReader {
        let slot: *const Slot = self.state.claim_slot();
        // SAFETY: the slot was just claimed and lives as long as the domain's state.
        self.state.online(unsafe { &*slot });
        QsbrReader {
            domain: self.clone(),
            slot,
        }
    }

    /// Starts a guarded read for a thread that is not registered.
    ///
    /// The thread's first guard in a domain claims a reader slot there, which later guards of
    /// the thread reuse (it goes back to the domain when the thread exits). A guard then costs
    /// a fence to come online, and nothing more if another guard of the same thread is alive
    /// already. While the guard lives, writers wait for it.
    ///
    /// ```
    /// use regio_sync::{Domain, Rcu};
    ///
    /// let domain = Domain::new();
    /// let config = Rcu::new(&domain, String::from("v1"));
    /// let guard = domain.guard();
    /// assert_eq!(config.read(&guard), "v1");
    /// ```
    #[inline]
    pub fn guard(&self) -> Guard<'_> {
        let state = &*self.state;
        let (slot, cached) = match crate::local::cached_slot(self) {
            // The shortcut exists only where the fence pair is expedited (see `crate::local`).
            Some(slot) if state.enter(slot, true) => (slot, true),
            _ => self.guard_slow(),
        };
        Guard {
            state,
            slot,
            cached,
        }
    }

    /// [`guard`](Self::guard) when the thread's shortcut names another domain (or none), or its
    /// slot is nested as deep as it counts: the thread's slot from its list, else (the thread is
    /// exiting, or the slot is too deep) a slot of the guard's own. Returns the slot online and
    /// whether it is the thread's cached one (two words, which come back in registers).
    #[cold]
    #[inline(never)]
    fn guard_slow(&self) -> (&Slot, bool) {
        let state = &*self.state;
        if let Some(slot) = crate::local::slot(state) {
            if state.enter(slot, false) {
                return (slot, true);
            }
        }
        let slot = state.claim_slot();
        state.online(slot);
        (slot, false)
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
        self.domain.state.quiescent(self.slot());
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
                self.0.domain.state.online(self.0.slot());
            }
        }
        self.slot().offline();
        let _rejoin = Rejoin(self);
        f()
    }

    /// Waits for a grace period from a registered thread, offline for the wait so that the
    /// thread does not wait for itself.
    pub fn synchronize(&mut self) {
        let state = self.domain.state.clone();
        self.offline_while(|| state.synchronize());
    }

    /// The domain this reader belongs to.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl Drop for QsbrReader {
    fn drop(&mut self) {
        self.slot().offline();
        self.slot().release();
    }
}

/// A guarded read section for a thread that is not a registered reader. See [`Domain::guard`].
///
/// It is neither `Send` nor `Sync`: it uses its thread's slot.
pub struct Guard<'d> {
    state: &'d State,
    slot: &'d Slot,
    /// Whether `slot` is the thread's cached one (else the guard claimed it for itself).
    cached: bool,
}

impl std::fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.cached {
            self.slot.offline();
            self.slot.release();
            return;
        }
        // The cached slot is this thread's, and a guard stays on its thread.
        self.slot.leave();
    }
}

/// Something that proves the current thread is inside a read-side section of a domain.
///
/// Implemented by [`QsbrReader`] and [`Guard`]; sealed.
pub trait ReadSide: sealed::Sealed {
    /// Whether reads made through this are protected by `domain`'s grace periods.
    fn protects(&self, domain: &Domain) -> bool;
}

impl ReadSide for QsbrReader {
    #[inline]
    fn protects(&self, domain: &Domain) -> bool {
        std::ptr::eq(&*self.domain.state, &*domain.state)
    }
}

impl ReadSide for Guard<'_> {
    #[inline]
    fn protects(&self, domain: &Domain) -> bool {
        std::ptr::eq(self.state, &*domain.state)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::QsbrReader {}
    impl Sealed for super::Guard<'_> {}
}
