//! Exclusive ownership of a state, with an inbox for the threads that do not own it.
//!
//! A [`Combiner`] guards a state `S` (in regio's adapters: a ring's SQ, CQ and in-flight table).
//! At most one thread owns it at a time, through [`Combiner::try_lock`]; nobody ever waits for
//! it. A thread that finds it owned leaves its item in the inbox ([`Combiner::post`]), and
//! whoever owns the state absorbs the inbox before letting go. So the state is never worked on by
//! two threads at once (a ring's CQ is never reaped twice), and a post is never stranded in the
//! inbox; the one exception, an item the state refused (a full SQ), stays first in the inbox, and
//! the state is told ([`Absorb::refused`]) so that it can have the waiters come back for it.
//!
//! ```
//! use regio_sync::{Absorb, Combiner};
//!
//! #[derive(Default)]
//! struct Log(Vec<u32>);
//!
//! impl Absorb<u32> for Log {
//!     fn absorb(&mut self, item: u32) -> Result<(), u32> {
//!         self.0.push(item);
//!         Ok(())
//!     }
//! }
//!
//! let log = Combiner::new(Log::default());
//! let mut owner = log.try_lock().expect("nobody owns it yet");
//! log.post(1); // owned: left in the inbox
//! assert_eq!(log.queued(), 1);
//! drop(owner); // the owner absorbs the inbox before it lets go
//! log.post(2); // unowned: this thread takes the lock and absorbs it itself
//! owner = log.try_lock().unwrap();
//! assert_eq!(owner.with(|log| log.0.clone()), [1, 2]);
//! ```
//!
//! # Synchronization
//!
//! - `locked` is a test-and-set lock taken with an Acquire CAS and released with a Release
//!   store; the pair hands the state from one owner to the next.
//! - The hand-off is a Dekker pair on `queued` and `locked`, made with SeqCst fences: a poster
//!   increments `queued`, issues a fence, then tries the lock; an owner releases the lock,
//!   issues a fence, then reads `queued`. By the fence rules, either the poster's attempt sees
//!   the lock free (and the poster drains its own item), or the owner's read sees the increment
//!   (and the owner takes the lock back and drains it). No item is left behind with nobody to
//!   drain it: there is no lost wake-up. (Fences rather than SeqCst accesses, because loom
//!   models SeqCst accesses only as AcqRel and so cannot verify that form; it verifies this one.)
//! - The inbox itself is a short mutex-protected deque; `queued` changes only under its mutex,
//!   together with the deque, so it always equals the deque's length when the mutex is free.
//! - A waiter that finds the state owned asks the owner to wake it ([`Combiner::try_lock_or_ask`]):
//!   a second Dekker pair, on `asked` and `locked`, the same shape as the first. The waiter
//!   sets `asked` (a Release swap), issues a SeqCst fence, then tries the lock again; an owner
//!   releases the lock, issues a fence, then reads `asked`. Either the waiter takes the lock (and
//!   looks at the state itself), or an owner sees the request and takes the lock back to answer
//!   it ([`Absorb::wake_if_ready`]). The owner takes the request with an Acquire swap under the
//!   lock, which pairs with the waiter's Release swap: what the waiter did before asking (it
//!   reset its wake-up: a ring's CQ eventfd) happens before the owner's look at the state, so
//!   the owner sees every completion whose wake-up the waiter consumed.
//!
//! The loom models in `tests/loom/combiner.rs` check the first two properties (and that they fail
//! without the fences), and regio-adapters' model of its CQ wait the wake-up of a waiter.

use std::collections::VecDeque;

use regio_loom_shim::cell::UnsafeCell;
use regio_loom_shim::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use regio_loom_shim::sync::Mutex;

/// A state that takes items from the inbox.
pub trait Absorb<T> {
    /// Takes `item`, or hands it back if the state cannot take it now (its SQ is full). A
    /// handed-back item stays first in the inbox for the next owner.
    fn absorb(&mut self, item: T) -> Result<(), T>;

    /// Runs once after each drain, just before the lock is released (a ring submits here).
    fn settle(&mut self) {}

    /// Wakes the waiters if the state has something for them (a ring signals its CQ eventfd
    /// when its CQ holds completions). Runs just before the lock is released when a waiter asked
    /// for it ([`Combiner::try_lock_or_ask`]).
    fn wake_if_ready(&mut self) {}

    /// Runs just before the lock is released when the state refused an item, which stays in the
    /// inbox: the waiters must come back to push it once the state can take it (a ring signals
    /// its CQ eventfd).
    fn refused(&mut self) {}
}

/// A state owned by one thread at a time, plus the inbox of the others.
pub struct Combiner<S, T> {
    locked: AtomicBool,
    queued: AtomicUsize,
    /// A waiter found the state owned and asked to be woken (module docs).
    asked: AtomicBool,
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
            asked: AtomicBool::new(false),
            inbox: Mutex::new(VecDeque::new()),
            state: UnsafeCell::new(state),
        }
    }

    /// Takes ownership if nobody has it. Never waits. The guard drains the inbox when dropped.
    pub fn try_lock(&self) -> Option<CombinerGuard<'_, S, T>> {
        // Acquire on success: everything the previous owner did to the state (before its
        // Release store) is visible to us. Relaxed on failure: we touch nothing; the SeqCst
        // fence before a poster's attempt (in `post`) is what the hand-off rests on.
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| CombinerGuard { owner: self })
    }

    /// Takes ownership if nobody has it; if somebody does, asks that owner to call
    /// [`Absorb::wake_if_ready`] before it lets go, and tries once more. Never waits.
    ///
    /// For a waiter that has just reset its wake-up and is about to sleep: when this returns
    /// `None`, an owner looks at the state after this call and wakes the waiter if there is
    /// something for it (module docs), so the waiter may sleep.
    pub fn try_lock_or_ask(&self) -> Option<CombinerGuard<'_, S, T>> {
        if let Some(guard) = self.try_lock() {
            return Some(guard);
        }
        // Release: the owner that takes the request (Acquire swap, under the lock) sees what
        // this thread did before, its reset of the wake-up included (module docs). A
        // read-modify-write rather than a store, so that the request is ordered after the last
        // one an owner took (an RMW reads the latest value): loom, which keeps modification
        // order only as far as a thread has seen it, then cannot let the owner's next read see
        // that older swap instead of this request.
        self.asked.swap(true, Ordering::Release);
        // SeqCst fence: the waiter half of the second Dekker pair (module docs), between the
        // request and the second lock attempt.
        fence(Ordering::SeqCst);
        self.try_lock()
    }

    /// Leaves `item` for the owner, or absorbs it now if nobody owns the state.
    pub fn post(&self, item: T) {
        self.push(item);
        // SeqCst fence: the poster half of the Dekker pair (module docs), between our count
        // increment and our lock attempt.
        fence(Ordering::SeqCst);
        if let Some(guard) = self.try_lock() {
            drop(guard);
        }
    }

    /// Leaves `item` in the inbox and nothing more: no attempt at the lock. The caller must make
    /// sure the owner looks at the inbox afterwards (a ring in single-issuer mode wakes its owner
    /// thread), since the hand-off of [`post`](Self::post) is skipped.
    pub fn push(&self, item: T) {
        let mut inbox = self.lock_inbox();
        inbox.push_back(item);
        // Relaxed: changed under the inbox mutex together with the deque. For `post`, the fence
        // after this orders it for the hand-off; for a bare push, the wake-up that follows it
        // (a system call, or a mutex in the loom model) does.
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// The state, through exclusive access to the combiner (no lock needed: nobody else can
    /// reach it).
    pub fn get_mut(&mut self) -> &mut S {
        // SAFETY: `&mut self` excludes every guard and every other reference to the state.
        self.state.with_mut(|s| unsafe { &mut *s })
    }

    /// How many items wait in the inbox.
    pub fn queued(&self) -> usize {
        // Relaxed: an estimate for statistics; correctness never rests on it.
        self.queued.load(Ordering::Relaxed)
    }

    fn lock_inbox(&self) -> regio_loom_shim::sync::MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the inbox lock can only come from a push or pop, which leave the
        // deque whole; carry on with it.
        self.inbox
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes a waiter's request to be woken, if there is one. Called by the owner only.
    fn take_request(&self) -> bool {
        // Relaxed: a cheap test before the read-modify-write. A request this misses is caught
        // after the unlock (the fence pair in the guard's drop), and this load cannot read an
        // older value than the one that made us take the lock back.
        // Acquire (the swap): pairs with the asker's Release swap (module docs).
        self.asked.load(Ordering::Relaxed) && self.asked.swap(false, Ordering::Acquire)
    }

    /// Absorbs the inbox into the state. Returns false if the state refused an item.
    #[inline]
    fn drain(&self) -> bool {
        // Relaxed: a fast path for the common empty inbox. A post this misses is caught by the
        // release protocol (the fence pair in `post` and in the guard's drop), and a later
        // load cannot read an older count than the one that made us take the lock back.
        if self.queued.load(Ordering::Relaxed) == 0 {
            return true;
        }
        self.drain_queued()
    }

    /// [`drain`](Self::drain) when the inbox looked non-empty.
    #[cold]
    fn drain_queued(&self) -> bool {
        loop {
            let item = {
                let mut inbox = self.lock_inbox();
                let item = inbox.pop_front();
                if item.is_some() {
                    // Relaxed: changed under the inbox mutex together with the deque, and
                    // the mutex orders it; the SeqCst pair lives in `post` and the release.
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                }
                item
            };
            let Some(item) = item else {
                return true;
            };
            // SAFETY: only called by the owner (from `CombinerGuard`), so no other reference
            // to the state exists.
            let taken = self.state.with_mut(|s| unsafe { &mut *s }.absorb(item));
            if let Err(item) = taken {
                let mut inbox = self.lock_inbox();
                inbox.push_front(item);
                // Relaxed: as for the decrement above.
                self.queued.fetch_add(1, Ordering::Relaxed);
                return false;
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

    /// The state, borrowed for as long as the guard is: for an owner that works on it call after
    /// call (a batch of posts), with no closure to move each argument through.
    #[inline(always)]
    pub fn state_mut(&mut self) -> &mut S {
        // SAFETY: as in `with`: this guard is the only owner, and the reference lives no longer
        // than the `&mut self` borrow of the guard. (Under loom the access is tracked only while
        // the pointer is taken; the loom models go through `with`.)
        self.owner.state.with_mut(|s| unsafe { &mut *s })
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
            if owner.take_request() {
                // SAFETY: we still own the state.
                owner.state.with_mut(|s| unsafe { &mut *s }.wake_if_ready());
            }
            if !drained {
                // SAFETY: we still own the state.
                owner.state.with_mut(|s| unsafe { &mut *s }.refused());
            }
            // Release: hands our state changes to the next owner's Acquire CAS.
            owner.locked.store(false, Ordering::Release);
            // SeqCst fence: the owner half of both Dekker pairs (module docs), between our
            // unlock and our reads of the count and of the request.
            fence(Ordering::SeqCst);
            // Relaxed (both): ordered by the fence above. A refused item (full SQ) stays queued
            // for the next owner rather than being retried in a loop here; the state's
            // `refused` has told the waiters to come back for it.
            let posts = drained && owner.queued.load(Ordering::Relaxed) > 0;
            if !posts && !owner.asked.load(Ordering::Relaxed) {
                return;
            }
            // Acquire on success, as in `try_lock`. On failure another thread owns the state
            // now, and it drains the inbox and answers the request before it lets go.
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
