//! The RCU domain: reader slots, the grace-period counter and deferred reclamation.
//!
//! # Synchronization
//!
//! Every reader (a registered [`QsbrReader`](crate::QsbrReader) or a short-lived
//! [`Guard`](crate::Guard)) owns one [`Slot`]. Its `ctr` holds two fields: a nesting depth in the
//! low [`NEST_BITS`] bits, and above them a grace-period number. A depth of 0 means offline (the
//! number is then meaningless); otherwise the number is the one the reader saw in the domain's
//! grace-period counter `gp` at its last quiescent state or when it came online. `gp` holds its
//! number the same way, with a depth of 1: the word a reader at depth 1 announces, so coming online
//! is one load and one store. A grace period that starts by bumping `gp` to `target` is over once
//! every slot is offline or holds a word `>= target` (a later number, whatever its depth).
//!
//! A thread's cached guard slot counts its nested guards in the depth: the outermost guard
//! copies `gp` into the slot, an inner one adds 1, and every guard subtracts 1 when it ends, so the
//! outermost leaves the slot at depth 0, offline. A QSBR reader's slot stays at depth 1 while
//! online. Only the owning thread writes its slot's `ctr`, so it reads it back with a Relaxed load.
//!
//! The module relies on three patterns:
//! - **Release/Acquire on `ctr`.** Every store of `ctr` (a quiescent state, going offline, coming
//!   back online, a nested guard's count) is `Release`, and the writer loads it with `Acquire`. So everything the reader
//!   did before an announcement happens-before the writer frees a version it saw announced past.
//!   The online store needs it too: a slot that goes offline and online again (a thread's guards,
//!   `offline_while`) may be read by the writer at the online value, and the offline store before
//!   it heads no release sequence that a plain store would continue (the loom model
//!   `nested_and_repeated_guards_share_the_threads_slot` fails with a Relaxed online store).
//! - **Release/Acquire on `gp`.** The writer publishes the new pointer before its `AcqRel` bump of
//!   `gp`; a reader that loads the bumped value with `Acquire` therefore sees the new pointer in all
//!   its later reads.
//! - **A Dekker pair of fences** for a reader coming online. The reader stores `ctr`,
//!   fences, then loads the pointer; the writer stores the pointer, fences, then loads `ctr`. At
//!   least one side sees the other's store: either the reader gets the new version, or the writer
//!   sees the reader online and waits for it. The pair is asymmetric ([`crate::asym`]): where the
//!   kernel offers `membarrier`, the reader's half is a compiler fence and the writer's half a
//!   SeqCst fence plus `membarrier`, which puts a full barrier on every CPU running a reader;
//!   elsewhere both halves are SeqCst fences.
//!
//! Guards reuse a slot per thread and domain ([`crate::local`]); a slot is claimed with an Acquire
//! CAS and given back with a Release store of its `claimed` flag, so its next owner comes after
//! its last one.

use std::fmt;

use crate::asym;
use regio_loom_shim::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use regio_loom_shim::sync::{Arc, Mutex};
use regio_loom_shim::thread;

/// How many low bits of a slot's word (and of `gp`) hold the nesting depth (module docs).
pub(crate) const NEST_BITS: u32 = 16;

/// The depth field of a slot's word; its largest value is the deepest nesting a slot counts.
pub(crate) const NEST_MASK: u64 = (1 << NEST_BITS) - 1;

/// One grace period's step of `gp`: its number field plus 1.
const GP_STEP: u64 = 1 << NEST_BITS;

/// A slot's word while its reader is offline (depth 0).
pub(crate) const OFFLINE: u64 = 0;

/// One reader's announcement word.
pub(crate) struct Slot {
    /// The depth and grace-period number (module docs); only the owning thread writes it.
    pub(crate) ctr: AtomicU64,
    /// Whether a reader owns this slot.
    claimed: AtomicBool,
    /// The next slot in the domain's list. Written once, before the slot is published.
    next: *const Slot,
}

impl Slot {
    /// Enters a nested guard on a slot that is online (depth at least 1) or, returning false
    /// without a change, finds its depth at the maximum.
    ///
    /// The calling thread owns the slot.
    #[inline(always)]
    pub(crate) fn nest(&self, word: u64) -> bool {
        if word & NEST_MASK == NEST_MASK {
            return false;
        }
        // Release, like every announcement (module docs); the word stays online with the same
        // number, so a writer's verdict on it does not change.
        self.ctr.store(word + 1, Ordering::Release);
        true
    }

    /// Ends one guard on the thread's cached slot: one level less, offline at depth 0.
    ///
    /// The calling thread owns the slot, which is online.
    #[inline(always)]
    pub(crate) fn leave(&self) {
        // Relaxed: only the owning thread writes the word, so it reads back its own last store.
        let word = self.ctr.load(Ordering::Relaxed);
        debug_assert_ne!(word & NEST_MASK, 0, "a guard ended on an offline slot");
        // Release: as in `offline` when the depth reaches 0; otherwise as in `nest`.
        self.ctr.store(word - 1, Ordering::Release);
    }

    /// The slot's word as its owning thread left it.
    #[inline(always)]
    pub(crate) fn word(&self) -> u64 {
        // Relaxed: as in `leave`.
        self.ctr.load(Ordering::Relaxed)
    }

    /// Takes the slot's reader offline: the writer stops waiting for it.
    #[inline]
    pub(crate) fn offline(&self) {
        // Release: as in `State::quiescent`, every earlier read happens-before the writer's
        // reclamation.
        self.ctr.store(OFFLINE, Ordering::Release);
    }

    /// Gives the slot back. The owner must have taken it offline first.
    pub(crate) fn release(&self) {
        // Release: the next owner, whose claim is an Acquire CAS, sees the slot offline.
        self.claimed.store(false, Ordering::Release);
    }
}

/// What a thread's cached guard slots hold on to ([`crate::local`]): whether the domain still
/// exists. The domain clears the flag, under the lock, before it frees its slots.
pub(crate) struct Home {
    alive: Mutex<bool>,
}

impl Home {
    /// The lock on the flag, if the domain is alive; its slots stay allocated while it is held.
    pub(crate) fn lock_alive(&self) -> Option<regio_loom_shim::sync::MutexGuard<'_, bool>> {
        // Nothing can panic while the flag is locked, so a poisoned lock is still accurate.
        let alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
        (*alive).then_some(alive)
    }

    /// Whether the domain still exists.
    pub(crate) fn is_alive(&self) -> bool {
        self.lock_alive().is_some()
    }
}

/// A value retired by a writer, freed once the grace period `target` is over.
struct Deferred {
    /// [`UNASSIGNED`] until a grace period that started after the value was retired is chosen.
    target: u64,
    value: Box<dyn Send>,
}

/// The target of a deferred value whose grace period has not started yet.
const UNASSIGNED: u64 = 0;

/// Deferred values are reclaimed in batches of this many, so that one grace-period start and one
/// walk of the reader slots are shared by the whole batch.
const DEFER_BATCH: usize = 32;

/// An RCU domain: the set of readers whose quiescent states end a grace period.
///
/// Create one with [`Domain::new`], register each executor thread with [`Domain::register`], and
/// share it with the [`Rcu`](crate::Rcu) cells it protects. Threads that are not registered read
/// through a [`Domain::guard`]. A `Domain` is a handle: clones share one set of readers.
#[derive(Clone)]
pub struct Domain {
    pub(crate) state: Arc<State>,
    /// The address of the state's [`Home`] ([`State::home_ptr`]), which names the domain in a
    /// thread's slot shortcut ([`crate::local`]). Kept in the handle, which guards borrow, so
    /// that the shortcut's compare needs no load from the shared state.
    pub(crate) home_key: usize,
}

impl Default for Domain {
    fn default() -> Self {
        let state = Arc::new(State::default());
        let home_key = state.home_ptr() as usize;
        Self { state, home_key }
    }
}

/// The state a [`Domain`] handle shares.
pub(crate) struct State {
    /// The grace-period counter, as the word a reader at depth 1 announces (module docs).
    gp: AtomicU64,
    /// The head of an append-only list of slots. Slots are reused, never unlinked before drop.
    /// Loaded with Acquire everywhere, pairing with the Release CAS that publishes a slot.
    slots: AtomicPtr<Slot>,
    /// Values waiting for their grace period, oldest first.
    deferred: Mutex<Vec<Deferred>>,
    /// Tells the threads that cache a slot here whether the domain is still alive.
    home: Arc<Home>,
}

// SAFETY: the raw `next` pointers in the slot list point to slots owned by this state, which are
// written once before publication and freed only in `Drop`, when no other reference exists.
unsafe impl Send for State {}
// SAFETY: as above; every shared mutation goes through atomics or the `deferred` mutex.
unsafe impl Sync for State {}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            // Relaxed: a diagnostic snapshot, ordering nothing.
            .field("gp", &self.state.gp.load(Ordering::Relaxed))
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Domain {
    /// Creates a domain with no readers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until every reader that was online when this call began has passed a quiescent
    /// state or gone offline.
    ///
    /// The calling thread must not be an online reader of this domain, or it waits for itself
    /// forever: use [`QsbrReader::synchronize`](crate::QsbrReader::synchronize) there. Readers
    /// never wait on this.
    pub fn synchronize(&self) {
        self.state.synchronize();
    }

    /// Hands `value` over, to be dropped once every reader has passed a quiescent state.
    ///
    /// This never blocks on readers: it is the `call_rcu` of this domain. Values are reclaimed
    /// in batches: every few deferrals, those whose grace period is over are dropped, on the
    /// deferring thread. [`reclaim`](Self::reclaim) and [`barrier`](Self::barrier) force it.
    pub fn defer(&self, value: Box<dyn Send>) {
        let batch_full = {
            let mut deferred = self.state.lock_deferred();
            deferred.push(Deferred {
                target: UNASSIGNED,
                value,
            });
            deferred.len() % DEFER_BATCH == 0
        };
        if batch_full {
            self.reclaim();
        }
    }

    /// Drops the deferred values whose grace period is over, and returns how many it dropped.
    /// It never waits for readers.
    pub fn reclaim(&self) -> usize {
        let ready: Vec<Box<dyn Send>> = {
            let mut deferred = self.state.lock_deferred();
            // Values retired since the last reclaim share one new grace period. It starts after
            // their retirement: each was pushed under this lock after its publication.
            if deferred.last().is_some_and(|d| d.target == UNASSIGNED) {
                let target = self.state.start_grace_period();
                for d in deferred.iter_mut().rev() {
                    if d.target != UNASSIGNED {
                        break;
                    }
                    d.target = target;
                }
            }
            // Targets grow in push order, so the ready values are a prefix; one walk of the
            // slots answers for every value of the same target.
            let mut checked = (UNASSIGNED, false);
            let ready = deferred
                .iter()
                .take_while(|d| {
                    if checked.0 != d.target {
                        checked = (d.target, self.state.grace_period_over(d.target));
                    }
                    checked.1
                })
                .count();
            deferred.drain(..ready).map(|d| d.value).collect()
        };
        // Dropped outside the lock, so a value's destructor may itself defer.
        let dropped = ready.len();
        drop(ready);
        dropped
    }

    /// Waits for the grace period of every deferred value, then drops them all.
    pub fn barrier(&self) {
        // The first reclaim starts the grace period of values retired since the last one; the
        // wait then covers every target, and the second reclaim drops everything.
        self.reclaim();
        self.state.synchronize();
        self.reclaim();
    }

    /// The number of deferred values not yet dropped.
    pub fn pending(&self) -> usize {
        self.state.lock_deferred().len()
    }
}

impl Default for State {
    fn default() -> Self {
        asym::init();
        Self {
            gp: AtomicU64::new(GP_STEP | 1),
            slots: AtomicPtr::new(std::ptr::null_mut()),
            deferred: Mutex::new(Vec::new()),
            home: Arc::new(Home {
                alive: Mutex::new(true),
            }),
        }
    }
}

impl State {
    /// Claims a free slot, or appends a new one. The slot is returned claimed and offline.
    pub(crate) fn claim_slot(&self) -> &Slot {
        // Acquire on success: the previous owner's final stores to `ctr` (Release) are visible
        // before we use the slot. Relaxed on failure: we only move on.
        let free = self.slots().find(|slot| {
            slot.claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(slot) = free {
            return slot;
        }
        let fresh = Box::into_raw(Box::new(Slot {
            ctr: AtomicU64::new(OFFLINE),
            claimed: AtomicBool::new(true),
            next: std::ptr::null(),
        }));
        // Relaxed: the Release CAS below is what publishes the slot.
        let mut head = self.slots.load(Ordering::Relaxed);
        loop {
            // SAFETY: `fresh` is not yet shared, so this thread has exclusive access to it.
            unsafe { (*fresh).next = head };
            // Release on success: publishes the slot's initialised fields to list walkers, which
            // load the head with Acquire. Relaxed on failure: we retry with the new head.
            match self.slots.compare_exchange_weak(
                head,
                fresh,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                // SAFETY: the slot now belongs to the list, which lives as long as the domain.
                Ok(_) => return unsafe { &*fresh },
                Err(now) => head = now,
            }
        }
    }

    /// This domain's [`Home`], for a thread that caches a slot here.
    pub(crate) fn home(&self) -> Arc<Home> {
        Arc::clone(&self.home)
    }

    /// The address of this domain's [`Home`], which names the domain as long as a thread's
    /// cache entry holds the `Home`.
    #[inline(always)]
    pub(crate) fn home_ptr(&self) -> *const Home {
        Arc::as_ptr(&self.home)
    }

    /// Announces that `slot`'s reader holds no references: a quiescent state.
    ///
    /// The reader must be online. This is a load and a store; there is no fence and no
    /// read-modify-write.
    #[inline]
    pub(crate) fn quiescent(&self, slot: &Slot) {
        // Acquire: if this reads a bumped counter, the writer's publication (made before the
        // bump) happens-before every later read of this reader.
        let gp = self.gp.load(Ordering::Acquire);
        // Release: every read this reader made before now happens-before the writer's Acquire
        // load of `ctr`, and so before the writer frees what those reads returned. `gp` is the
        // word of depth 1 (module docs).
        slot.ctr.store(gp, Ordering::Release);
    }

    /// Brings `slot`'s reader online, at depth 1. Afterwards the writer waits for it.
    #[inline(always)]
    pub(crate) fn online(&self, slot: &Slot) {
        self.announce_online(slot);
        // The reader half of the Dekker pair with the fence in `start_grace_period`: either the
        // writer's `ctr` load sees us online, or our next pointer load sees the new version.
        asym::light();
    }

    /// [`online`](Self::online) for a caller that has seen [`asym::expedited`] return true.
    #[inline(always)]
    fn online_expedited(&self, slot: &Slot) {
        self.announce_online(slot);
        // As in `online`.
        asym::light_expedited();
    }

    /// The store that brings `slot`'s reader online; the caller's fence must follow.
    #[inline(always)]
    fn announce_online(&self, slot: &Slot) {
        // Acquire: as in `quiescent`.
        let gp = self.gp.load(Ordering::Acquire);
        // Release, like every announcement: a writer that reads it may free what this reader
        // read in its earlier read sections (before an `offline`), so those reads must
        // happen-before. (A Relaxed store here would not do: the `offline` store before it heads
        // no release sequence that this store continues.) The caller's fence orders the store
        // before the reader's next loads.
        slot.ctr.store(gp, Ordering::Release);
    }

    /// Enters a guard on this thread's cached `slot`: online at depth 1 if it was offline, one
    /// level deeper otherwise. Returns false, having changed nothing, if the slot is nested as
    /// deep as it counts. `expedited` says the caller has seen [`asym::expedited`] return true.
    #[inline(always)]
    pub(crate) fn enter(&self, slot: &Slot, expedited: bool) -> bool {
        let word = slot.word();
        if word & NEST_MASK != 0 {
            return slot.nest(word);
        }
        if expedited {
            self.online_expedited(slot);
        } else {
            self.online(slot);
        }
        true
    }

    /// Starts a grace period and returns its target: once every slot is offline or announces a
    /// value at least this large, every reader has passed a quiescent state since this call.
    fn start_grace_period(&self) -> u64 {
        // The writer half of the Dekker pair with the fence in `online`. The caller's
        // publication (an earlier pointer swap) is ordered before the `ctr` loads that follow.
        asym::heavy();
        // AcqRel: Release so that a reader which sees the new count also sees the publication
        // that preceded it; Acquire to keep the later `ctr` loads after it. The number field has
        // room for 2^48 grace periods, so it never wraps.
        self.gp.fetch_add(GP_STEP, Ordering::AcqRel) + GP_STEP
    }

    /// Whether every reader is offline or has announced `target` or later.
    fn grace_period_over(&self, target: u64) -> bool {
        self.slots().all(|slot| passed(slot, target))
    }

    /// Every slot in the list, newest first.
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        // Acquire: see `claim_slot`.
        let head = self.slots.load(Ordering::Acquire);
        std::iter::successors(
            // SAFETY: slots stay allocated until the domain drops, and `&self` keeps it alive.
            unsafe { head.as_ref() },
            // SAFETY: as above; `next` was written before the slot was published.
            |slot| unsafe { slot.next.as_ref() },
        )
    }

    /// See [`Domain::synchronize`].
    pub(crate) fn synchronize(&self) {
        let target = self.start_grace_period();
        let mut backoff = Backoff::default();
        // One walk suffices: a slot that has passed stays passed for this target, because its
        // word only moves to depth 0 or to a later grace-period number. A slot appended after
        // the walk began belongs to a reader that came online after the publication, through
        // `online`, so it cannot hold the old version.
        for slot in self.slots() {
            while !passed(slot, target) {
                backoff.snooze();
            }
        }
    }

    fn lock_deferred(&self) -> regio_loom_shim::sync::MutexGuard<'_, Vec<Deferred>> {
        // A destructor that panicked while the list was locked cannot have left it half-updated:
        // pushes and drains are single calls. So a poisoned lock is still usable.
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Threads that cache a slot here give it back only under this lock, with the flag set:
        // once it is cleared, none of them touches a slot again.
        *self.home.alive.lock().unwrap_or_else(|e| e.into_inner()) = false;
        // `&mut self`: no reader or writer can exist, so every deferred value may go now.
        self.deferred
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // Relaxed: exclusive access; no other thread can observe the list any more.
        let mut cur = self.slots.load(Ordering::Relaxed);
        while !cur.is_null() {
            // SAFETY: every slot was created by `Box::into_raw` in `claim_slot` and is freed
            // exactly once, here, while the domain is exclusively borrowed.
            let slot = unsafe { Box::from_raw(cur) };
            cur = slot.next.cast_mut();
        }
    }
}

/// Whether `slot`'s reader is offline or has announced `target` or later.
#[inline]
fn passed(slot: &Slot, target: u64) -> bool {
    // Acquire: pairs with the reader's Release store, so the reader's earlier reads
    // happen-before whatever the caller frees next.
    let ctr = slot.ctr.load(Ordering::Acquire);
    // `target` has depth 1, so any online word with its number or a later one is `>= target`,
    // and any word with an earlier number is below it (depths stay below `GP_STEP`).
    ctr & NEST_MASK == 0 || ctr >= target
}

/// Spins, then yields, then sleeps: a writer waiting for slow readers costs little CPU.
#[derive(Default)]
struct Backoff {
    step: u32,
}

impl Backoff {
    fn snooze(&mut self) {
        #[cfg(loom)]
        thread::yield_now();
        #[cfg(not(loom))]
        {
            if self.step < 6 {
                for _ in 0..(1u32 << self.step) {
                    regio_loom_shim::hint::spin_loop();
                }
            } else if self.step < 16 {
                thread::yield_now();
            } else {
                thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        self.step = self.step.saturating_add(1);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Domain;

    #[test]
    fn threads_that_exit_give_their_guard_slots_back() {
        let domain = Domain::new();
        for _ in 0..8 {
            let domain = domain.clone();
            std::thread::spawn(move || drop(domain.guard()))
                .join()
                .unwrap();
        }
        assert_eq!(
            domain.state.slots().count(),
            1,
            "each thread reused the slot"
        );
    }
}
