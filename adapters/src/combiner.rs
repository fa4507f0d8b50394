//! Exclusive ownership of a ring, with an inbox for the threads that do not own it.
//!
//! A [`Combiner`] guards a state `S` (for a ring: its SQ, CQ and in-flight table). At most one
//! thread owns it at a time, through [`Combiner::try_lock`]; nobody ever waits for it. A thread
//! that finds it owned leaves its item in the inbox ([`Combiner::post`]), and whoever owns the
//! state absorbs the inbox before letting go. So a ring's CQ is never reaped by two threads at
//! once, and a post is never stranded in the inbox.
//!
//! # Synchronization
//!
//! - `locked` is a test-and-set lock taken with an Acquire CAS and released with a SeqCst store;
//!   the Acquire/Release pair hands the state from one owner to the next.
//! - The hand-off is a Dekker pair on `locked` and `queued`, both SeqCst: a poster increments
//!   `queued` and then tries the lock; an owner releases the lock and then reads `queued`. In the
//!   single total order of SeqCst operations, either the poster's lock attempt comes after the
//!   release (and the poster drains its own item), or the owner's read comes after the increment
//!   (and the owner takes the lock back and drains it). No item is left behind with nobody to
//!   drain it: there is no lost wake-up.
//! - The inbox itself is a short mutex-protected deque; the mutex orders the items.
//!
//! The loom model in `tests/loom.rs` checks both properties.

use std::collections::VecDeque;

use regio_sync::primitive::cell::UnsafeCell;
use regio_sync::primitive::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use regio_sync::primitive::sync::Mutex;

/// A state that takes items from the inbox.
pub trait Absorb<T> {
    /// Takes `item`, or hands it back if the state cannot take it now (its SQ is full). A
    /// handed-back item stays first in the inbox for the next owner.
    fn absorb(&mut self, item: T) -> Result<(), T>;

    /// Runs once after each drain, just before the lock is released (a ring submits here).
    fn settle(&mut self) {}
}

/// A state owned by one thread at a time, plus the inbox of the others.
pub struct Combiner<S, T> {
    locked: AtomicBool,
    queued: AtomicUsize,
    inbox: Mutex<VecDeque<T>>,
    state: UnsafeCell<S>,
}

// SAFETY: the state is only reached through a `CombinerGuard`, and `locked` lets at most one
// guard exist at a time, so moving the combiner to another thread moves `S` and `T` values
// that are `Send`.
unsafe impl<S: Send, T: Send> Send for Combiner<S, T> {}
// SAFETY: shared access reaches `S` only through the lock (one thread at a time) and `T` only
// through the inbox mutex; both just need `Send`.
unsafe impl<S: Send, T: Send> Sync for Combiner<S, T> {}

impl<S: Absorb<T>, T> Combiner<S, T> {
    /// Wraps `state`, unowned, with an empty inbox.
    pub fn new(state: S) -> Self {
        Self {
            locked: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            inbox: Mutex::new(VecDeque::new()),
            state: UnsafeCell::new(state),
        }
    }

    /// Takes ownership if nobody has it. Never waits. The guard drains the inbox when dropped.
    pub fn try_lock(&self) -> Option<CombinerGuard<'_, S, T>> {
        // Acquire on success: everything the previous owner did to the state (before its
        // release store) is visible to us. Relaxed on failure: we touch nothing.
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| CombinerGuard { owner: self })
    }

    /// Leaves `item` for the owner, or absorbs it now if nobody owns the state.
    pub fn post(&self, item: T) {
        self.lock_inbox().push_back(item);
        // SeqCst: the poster half of the Dekker pair (module docs). It also orders the push,
        // made under the mutex, before any owner that sees the count.
        self.queued.fetch_add(1, Ordering::SeqCst);
        if let Some(guard) = self.try_lock() {
            drop(guard);
        }
    }

    /// How many items wait in the inbox.
    pub fn queued(&self) -> usize {
        // Relaxed: an estimate for statistics; correctness never rests on it.
        self.queued.load(Ordering::Relaxed)
    }

    fn lock_inbox(&self) -> regio_sync::primitive::sync::MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the inbox lock can only come from a push or pop, which leave the
        // deque whole; carry on with it.
        self.inbox.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Absorbs the inbox into the state. Returns false if the state refused an item.
    fn drain(&self) -> bool {
        loop {
            let Some(item) = self.lock_inbox().pop_front() else {
                return true;
            };
            // SAFETY: only called by the owner (from `CombinerGuard`), so no other reference
            // to the state exists.
            let taken = self.state.with_mut(|s| unsafe { &mut *s }.absorb(item));
            match taken {
                // Relaxed: the count only needs to stay >= the number of items in the inbox;
                // decrementing after the pop keeps it so, and the SeqCst pair lives in
                // `post`/`release`.
                Ok(()) => drop(self.queued.fetch_sub(1, Ordering::Relaxed)),
                Err(item) => {
                    self.lock_inbox().push_front(item);
                    return false;
                }
            }
        }
    }
}

/// Ownership of a [`Combiner`]'s state. Dropping it drains the inbox and lets go.
pub struct CombinerGuard<'a, S: Absorb<T>, T> {
    owner: &'a Combiner<S, T>,
}

impl<S: Absorb<T>, T> CombinerGuard<'_, S, T> {
    /// Runs `f` on the state.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut S) -> R) -> R {
        // SAFETY: this guard is the only owner (`locked` is held), and `&mut self` keeps the
        // reference from escaping or aliasing another one made through this guard.
        self.owner.state.with_mut(|s| f(unsafe { &mut *s }))
    }

    /// Absorbs whatever waits in the inbox now.
    pub fn drain(&mut self) -> bool {
        self.owner.drain()
    }
}

impl<S: Absorb<T>, T> Drop for CombinerGuard<'_, S, T> {
    fn drop(&mut self) {
        let owner = self.owner;
        loop {
            let drained = owner.drain();
            // SAFETY: we still own the state.
            owner.state.with_mut(|s| unsafe { &mut *s }.settle());
            // SeqCst: the owner half of the Dekker pair (module docs); also a Release that hands
            // our state changes to the next owner.
            owner.locked.store(false, Ordering::SeqCst);
            // SeqCst: see the module docs. A refused item (full SQ) stays queued for the next
            // owner rather than being retried in a loop here.
            if !drained || owner.queued.load(Ordering::SeqCst) == 0 {
                return;
            }
            // Acquire on success, as in `try_lock`. On failure another thread owns the state
            // now, and it drains the inbox before it lets go.
            if owner
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
        }
    }
}
