//! Which cache slot the current thread owns in each pool it uses.
//!
//! The first time a thread touches a pool it claims a [`CacheSlot`] there and remembers it in a
//! thread-local list. When the thread exits, its magazines flow back to their pools and the slots
//! are released. Each entry keeps a `Weak` to its pool: the allocation cannot be reused while the
//! entry exists, so a pool's address identifies it, and the thread can tell at exit whether the
//! pool is still alive.
//!
//! In front of the list sits a one-entry "last pool" shortcut, `LAST`, in a thread-local of its
//! own with a constant initialiser and no destructor: reading it needs no lazy-initialisation
//! check, so the common case costs one comparison against a thread-local word. It only ever names
//! a pool whose entry is in the list (the list's destructor clears it before giving the slots
//! back), so the `Weak` of that entry keeps its address from being reused.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use crate::magazine::{CacheSlot, Cached, Magazine, Mags};
use crate::shared::Inner;

struct Entry {
    pool: *const Inner,
    weak: Weak<Inner>,
    slot: *const CacheSlot,
}

struct LocalCaches {
    entries: RefCell<Vec<Entry>>,
}

/// The one-entry shortcut: the pool this thread looked up last, its slot there (null if it has
/// none) and that slot's magazines, which the hot paths reach without loading them from the
/// slot; for a thread without a slot, the pool's empty stand-in magazines, so that the hot paths
/// need no null check (see [`CacheSlot::stand_in`]). `NONE` names no pool.
#[derive(Clone, Copy)]
struct Shortcut {
    pool: *const Inner,
    slot: *const CacheSlot,
    mags: NonNull<Magazine<Cached>>,
}

impl Shortcut {
    const NONE: Shortcut = Shortcut {
        pool: std::ptr::null(),
        slot: std::ptr::null(),
        mags: NonNull::dangling(),
    };
}

type Last = Cell<Shortcut>;

impl LocalCaches {
    fn new() -> Self {
        Self {
            entries: RefCell::new(Vec::new()),
        }
    }

    fn lookup(&self, pool: &Inner) -> *const CacheSlot {
        let me: *const Inner = pool;
        let mut entries = self.entries.borrow_mut();
        let slot = match entries.iter().find(|e| e.pool == me) {
            Some(e) => e.slot,
            None => {
                // Forget pools that are gone, so the list stays as short as the live set.
                entries.retain(|e| e.weak.strong_count() > 0);
                let slot = pool
                    .claim_slot()
                    .map_or(std::ptr::null(), |s| s as *const _);
                // SAFETY: every `Inner` lives in an `Arc` allocation (see `MessagePool`), and
                // `pool` is alive; `ManuallyDrop` keeps the strong count unchanged.
                let arc = ManuallyDrop::new(unsafe { Arc::from_raw(me) });
                entries.push(Entry {
                    pool: me,
                    weak: Arc::downgrade(&arc),
                    slot,
                });
                slot
            }
        };
        // SAFETY: a non-null slot lives inside the live `pool`.
        let mags = unsafe { slot.as_ref() }.map_or(pool.stand_in_mags(), CacheSlot::first_mag);
        let shortcut = Shortcut {
            pool: me,
            slot,
            mags,
        };
        // The loom thread-local may already be gone while a thread exits; std's never is.
        let _ = LAST.try_with(|last| last.set(shortcut));
        slot
    }
}

impl Drop for LocalCaches {
    fn drop(&mut self) {
        // The slots are given back below: the shortcut must not lead to them any more.
        let _ = LAST.try_with(|last| last.set(Shortcut::NONE));
        for entry in self.entries.get_mut().drain(..) {
            if entry.slot.is_null() {
                continue;
            }
            if let Some(pool) = entry.weak.upgrade() {
                // SAFETY: the slot lives inside `pool`, which the upgrade keeps alive, and this
                // thread owns it.
                let slot = unsafe { &*entry.slot };
                pool.flush_slot(slot);
                slot.release();
            }
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static LOCAL: LocalCaches = LocalCaches::new();
    static LAST: Last = const { Cell::new(Shortcut::NONE) };
}
#[cfg(loom)]
loom::thread_local! {
    static LOCAL: LocalCaches = LocalCaches::new();
    static LAST: Last = Cell::new(Shortcut::NONE);
}

/// The calling thread's cache slot in `pool` if it already has one; never claims.
pub(crate) fn existing_slot(pool: &Inner) -> Option<&CacheSlot> {
    let me: *const Inner = pool;
    let ptr = LOCAL
        .try_with(|local| {
            let entries = local.entries.borrow();
            entries
                .iter()
                .find(|e| e.pool == me)
                .map_or(std::ptr::null(), |e| e.slot)
        })
        .unwrap_or(std::ptr::null());
    // SAFETY: as in `slot`.
    unsafe { ptr.as_ref() }
}

/// The magazines of the calling thread's cache slot in `pool` (or the pool's empty stand-in,
/// for a thread without a slot) if the shortcut names `pool`: the hot paths' look, one compare
/// against a thread-local word. `None` says nothing more; [`slot`] gives the answer.
#[inline(always)]
pub(crate) fn cached_mags(pool: &Inner) -> Option<Mags<'_>> {
    let me: *const Inner = pool;
    let mags = LAST
        .try_with(|last| {
            let last = last.get();
            (last.pool == me).then_some(last.mags)
        })
        .ok()
        .flatten()?;
    // SAFETY: a shortcut that names `pool` holds the magazines of a slot this thread claimed in
    // `pool`, or those of its stand-in, which stay inside it as long as the borrow of `pool`.
    Some(unsafe { Mags::new(mags) })
}

/// The calling thread's cache slot in `pool`, or `None` if every slot is taken by other
/// threads or the thread is shutting down. Claims one on the thread's first use of `pool`.
pub(crate) fn slot(pool: &Inner) -> Option<&CacheSlot> {
    let me: *const Inner = pool;
    let ptr = LAST
        .try_with(|last| {
            let last = last.get();
            if last.pool == me {
                last.slot
            } else {
                LOCAL
                    .try_with(|local| local.lookup(pool))
                    .unwrap_or(std::ptr::null())
            }
        })
        .unwrap_or(std::ptr::null());
    // SAFETY: a non-null slot was claimed by this thread in `pool` and stays inside it, so it
    // lives as long as the borrow of `pool`.
    unsafe { ptr.as_ref() }
}
