//! The reader slot each thread keeps in each domain it reads through guards.
//!
//! The first [`Domain::guard`](crate::Domain::guard) of a thread in a domain claims a [`Slot`]
//! there and keeps it in a thread-local list, so that later guards reuse it: a guard costs no
//! slot claim, and a guard inside another guard of the same thread costs no fence either (the
//! slot is online already; a depth count in the slot's word says when the outermost guard ends,
//! see [`crate::domain`]). When
//! the thread exits, its slots go offline and back to their domains.
//!
//! In front of the list sits a one-entry shortcut, `LAST`, in a thread-local with a constant
//! initialiser and no destructor, so that the common case is one comparison of a thread-local
//! word against the domain handle's key. It serves only processes whose fence pair is expedited
//! (see [`cached_slot`]).
//!
//! # Synchronization
//!
//! - **Liveness through the domain's `Home`.** A domain may be dropped while threads still list
//!   one of its slots. Each entry holds an `Arc` of the domain's [`Home`], whose mutex-guarded
//!   flag the domain clears (under the lock) before it frees its slots. A thread that exits gives
//!   a slot back only while holding that lock with the flag set, so it never touches a freed
//!   slot. Holding the `Home` also keeps its address from being reused, so the shortcut can name
//!   a domain by it.
//! - **The slot itself** is claimed and given back exactly as for a one-off guard (an Acquire
//!   CAS, a Release store; see [`crate::domain`]), and goes online and offline through the same
//!   protocol; only the owning thread writes its word.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use crate::asym;
use crate::domain::{Domain, Home, Slot, State};
use regio_loom_shim::sync::Arc;

struct Entry {
    home: Arc<Home>,
    slot: *const Slot,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(alive) = self.home.lock_alive() {
            // SAFETY: the domain is alive and cannot free its slots while we hold `alive`; this
            // thread owns the slot.
            let slot = unsafe { &*self.slot };
            // A guard that was leaked (`mem::forget`) may have left the slot online.
            slot.offline();
            slot.release();
            drop(alive);
        }
    }
}

/// The domain this thread looked up last (by its `Home`), and its slot there. A slot is never
/// null, so a match needs no null check; `NONE` names no domain (no handle's key is null).
#[derive(Clone, Copy)]
struct Shortcut {
    home: *const Home,
    slot: NonNull<Slot>,
}

impl Shortcut {
    const NONE: Shortcut = Shortcut {
        home: std::ptr::null(),
        slot: NonNull::dangling(),
    };
}

/// The thread's list of slots, one per domain.
struct Entries(RefCell<Vec<Entry>>);

impl Drop for Entries {
    fn drop(&mut self) {
        // The slots are given back below: the shortcut must not lead to them any more.
        let _ = LAST.try_with(|last| last.set(Shortcut::NONE));
        self.0.get_mut().clear();
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static ENTRIES: Entries = const { Entries(RefCell::new(Vec::new())) };
    static LAST: Cell<Shortcut> = const { Cell::new(Shortcut::NONE) };
}
#[cfg(loom)]
loom::thread_local! {
    static ENTRIES: Entries = Entries(RefCell::new(Vec::new()));
    static LAST: Cell<Shortcut> = Cell::new(Shortcut::NONE);
}

/// This thread's slot in `domain` if the shortcut names it: one compare of a thread-local word
/// against the handle's key. The shortcut is only ever set in a process whose fence pair is
/// expedited ([`crate::asym`]), so a slot from here may come online with
/// [`asym::light_expedited`]; elsewhere each guard pays a SeqCst fence, beside which the list's
/// lookup ([`slot`]) costs little.
#[inline(always)]
pub(crate) fn cached_slot(domain: &Domain) -> Option<&Slot> {
    let slot = LAST
        .try_with(|last| {
            let last = last.get();
            (last.home as usize == domain.home_key).then_some(last.slot)
        })
        .ok()
        .flatten()?;
    // SAFETY: a slot in a shortcut that names a domain was claimed by this thread there (the
    // entry that holds the domain's `Home` keeps the key's address from being reused), and the
    // domain frees its slots only when its state drops, after the borrow of `domain` ends.
    Some(unsafe { slot.as_ref() })
}

/// This thread's slot in `state`, claiming one on first use; `None` once the thread is shutting
/// down (its list is gone). Sets the shortcut if the fence pair is expedited. The slot lives as
/// long as `state`.
#[cold]
#[inline(never)]
pub(crate) fn slot(state: &State) -> Option<&Slot> {
    let slot = ENTRIES
        .try_with(|entries| {
            let mut entries = entries.0.borrow_mut();
            let home = state.home_ptr();
            if let Some(e) = entries.iter().find(|e| Arc::as_ptr(&e.home) == home) {
                return e.slot;
            }
            // Forget domains that are gone, so the list stays as short as the live set.
            entries.retain(|e| e.home.is_alive());
            let slot: *const Slot = state.claim_slot();
            entries.push(Entry {
                home: state.home(),
                slot,
            });
            slot
        })
        .unwrap_or(std::ptr::null());
    if let (Some(slot), true) = (NonNull::new(slot.cast_mut()), asym::expedited()) {
        let shortcut = Shortcut {
            home: state.home_ptr(),
            slot,
        };
        // The loom thread-local may already be gone while a thread exits; std's never is.
        let _ = LAST.try_with(|last| last.set(shortcut));
    }
    // SAFETY: a non-null slot was claimed by this thread in `state`, which frees its slots only
    // when it drops, after the borrow of `state` ends.
    unsafe { slot.as_ref() }
}
