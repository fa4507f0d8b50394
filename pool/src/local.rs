//! Which cache slot the current thread owns in each pool it uses.
//!
//! The first time a thread touches a pool it claims a [`CacheSlot`] there and remembers it in a
//! thread-local list (and in a one-entry "last pool" shortcut, so that the common case costs one
//! comparison). When the thread exits, its magazines flow back to their pools and the slots are
//! released. Each entry keeps a `Weak` to its pool: the allocation cannot be reused while the
//! entry exists, so a pool's address identifies it, and the thread can tell at exit whether the
//! pool is still alive.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::sync::{Arc, Weak};

use crate::magazine::CacheSlot;
use crate::pool::Inner;

struct Entry {
    pool: *const Inner,
    weak: Weak<Inner>,
    slot: *const CacheSlot,
}

struct LocalCaches {
    last: Cell<(*const Inner, *const CacheSlot)>,
    entries: RefCell<Vec<Entry>>,
}

impl LocalCaches {
    fn new() -> Self {
        Self {
            last: Cell::new((std::ptr::null(), std::ptr::null())),
            entries: RefCell::new(Vec::new()),
        }
    }

    #[cold]
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
        self.last.set((me, slot));
        slot
    }
}

impl Drop for LocalCaches {
    fn drop(&mut self) {
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
}
#[cfg(loom)]
loom::thread_local! {
    static LOCAL: LocalCaches = LocalCaches::new();
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

/// The calling thread's cache slot in `pool`, or `None` if every slot is taken by other
/// threads or the thread is shutting down.
#[inline(always)]
pub(crate) fn slot(pool: &Inner) -> Option<&CacheSlot> {
    let me: *const Inner = pool;
    let ptr = LOCAL
        .try_with(|local| {
            let (last, slot) = local.last.get();
            if last == me {
                slot
            } else {
                local.lookup(pool)
            }
        })
        .unwrap_or(std::ptr::null());
    // SAFETY: a non-null slot was claimed by this thread in `pool` and stays inside it, so it
    // lives as long as the borrow of `pool`.
    unsafe { ptr.as_ref() }
}
