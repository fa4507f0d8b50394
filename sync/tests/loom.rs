//! Loom models of regio-sync: the QSBR RCU scheme (see `src/rcu.rs` and `src/domain.rs`) here,
//! the combiner and the index stack in `loom/`.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p regio-sync
//! --test loom`.
//!
//! A version's destructor *writes* its fields (a poison value) through loom's `UnsafeCell`, and
//! readers *read* them. So a reclamation that is not ordered after every read of that version is
//! a data race, which loom reports whatever the interleaving (under loom, `Rcu` leaks the storage
//! of a reclaimed version so the race is detected rather than becoming a real use-after-free).
#![cfg(loom)]

#[path = "loom/combiner.rs"]
mod combiner;
#[path = "loom/index_stack.rs"]
mod index_stack;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use regio_sync::{Domain, Rcu};

const POISON: u64 = u64::MAX;

/// A version with two fields that a writer always sets equal.
struct Version {
    a: UnsafeCell<u64>,
    b: UnsafeCell<u64>,
}

impl Version {
    fn new(n: u64) -> Self {
        Self {
            a: UnsafeCell::new(n),
            b: UnsafeCell::new(n),
        }
    }

    /// Reads both fields; loom fails the model if a destructor's write races with this.
    fn get(&self) -> (u64, u64) {
        // SAFETY: loom checks that no write to these cells is concurrent with this read.
        let a = self.a.with(|p| unsafe { *p });
        // SAFETY: as above.
        let b = self.b.with(|p| unsafe { *p });
        (a, b)
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Loom has already failed the model; a second panic here would abort the test.
            return;
        }
        // SAFETY: `&mut self`: loom checks that every reader's access happened before this.
        self.a.with_mut(|p| unsafe { *p = POISON });
        // SAFETY: as above.
        self.b.with_mut(|p| unsafe { *p = POISON });
    }
}

/// Spins under loom until `flag` is set.
fn wait_for(flag: &AtomicBool) {
    // Acquire: pairs with the Release store that sets the flag.
    while !flag.load(Ordering::Acquire) {
        thread::yield_now();
    }
}

/// Runs `reader` on its own thread against a cell holding version 1, while this thread publishes
/// version 2, waits for a grace period and drops version 1.
fn model_reader_against_synchronized_update(reader: fn(&Domain, &Rcu<Version>)) {
    loom::model(move || {
        let domain = Domain::new();
        let cell = Arc::new(Rcu::new(&domain, Version::new(1)));

        let reader_thread = {
            let (domain, cell) = (domain.clone(), Arc::clone(&cell));
            thread::spawn(move || reader(&domain, &cell))
        };

        drop(cell.replace(Version::new(2)).synchronize());
        reader_thread.join().unwrap();
    });
}

#[test]
fn reader_never_sees_freed_memory() {
    model_reader_against_synchronized_update(|domain, cell| {
        let mut reader = domain.register();
        for _ in 0..2 {
            let (a, _) = cell.read(&reader).get();
            assert_ne!(a, POISON);
            reader.quiescent();
        }
    });
}

#[test]
fn reader_sees_old_or_new_version_whole() {
    loom::model(|| {
        let domain = Domain::new();
        let cell = Arc::new(Rcu::new(&domain, Version::new(1)));
        let reader = domain.register();

        let reader_thread = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || {
                let (a, b) = cell.read(&reader).get();
                assert_eq!(a, b, "a torn version");
                assert!(a == 1 || a == 2, "neither the old nor the new version: {a}");
            })
        };

        cell.update(|old| {
            let (n, _) = old.get();
            Version::new(n + 1)
        })
        .defer();
        reader_thread.join().unwrap();
        domain.barrier();
        assert_eq!(domain.pending(), 0);
    });
}

#[test]
fn grace_period_ends_once_every_reader_passed_a_quiescent_point() {
    loom::model(|| {
        let domain = Domain::new();
        let passed = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);

        let readers: Vec<_> = (0..2)
            .map(|i| {
                let mut reader = domain.register();
                let passed = Arc::clone(&passed);
                thread::spawn(move || {
                    // Relaxed: the Release store inside `quiescent` publishes it to the writer.
                    passed[i].store(true, Ordering::Relaxed);
                    reader.quiescent();
                })
            })
            .collect();

        domain.synchronize();
        for flag in passed.iter() {
            // Relaxed: the grace period's Acquire loads already ordered the reader's store
            // before this point; seeing `false` would mean the grace period ended too early.
            assert!(
                flag.load(Ordering::Relaxed),
                "grace period ended before a reader's QS"
            );
        }
        for r in readers {
            r.join().unwrap();
        }
    });
}

#[test]
fn offline_reader_does_not_hold_up_the_writer() {
    loom::model(|| {
        let domain = Domain::new();
        let cell = Arc::new(Rcu::new(&domain, Version::new(1)));
        let writer_done = Arc::new(AtomicBool::new(false));
        let mut reader = domain.register();

        let reader_thread = {
            let (cell, writer_done) = (Arc::clone(&cell), Arc::clone(&writer_done));
            thread::spawn(move || {
                // Blocks, offline, until the writer has finished a full grace period: if going
                // offline did not release the writer, this model would deadlock.
                reader.offline_while(|| wait_for(&writer_done));
                let (a, _) = cell.read(&reader).get();
                assert_eq!(a, 2, "back online, the reader must see the new version");
            })
        };

        drop(cell.replace(Version::new(2)).synchronize());
        // Release: pairs with the reader's Acquire in `wait_for`.
        writer_done.store(true, Ordering::Release);
        reader_thread.join().unwrap();
    });
}

#[test]
fn guard_reader_is_protected_like_a_registered_one() {
    model_reader_against_synchronized_update(|domain, cell| {
        let guard = domain.guard();
        let (a, b) = cell.read(&guard).get();
        assert_eq!(a, b);
        assert_ne!(a, POISON);
    });
}

/// A thread's guards share its cached slot: an inner guard that ends must not take the slot
/// offline under the outer one, and a later guard reuses the slot.
#[test]
fn nested_and_repeated_guards_share_the_threads_slot() {
    model_reader_against_synchronized_update(|domain, cell| {
        let outer = domain.guard();
        let version = cell.read(&outer);
        drop(domain.guard());
        let (a, b) = version.get();
        assert_eq!(a, b);
        assert_ne!(a, POISON);
        drop(outer);
        let again = domain.guard();
        assert_ne!(cell.read(&again).get().0, POISON);
    });
}

#[test]
fn deferred_reclamation_waits_for_the_reader() {
    loom::model(|| {
        let domain = Domain::new();
        let cell = Arc::new(Rcu::new(&domain, Version::new(1)));
        let mut reader = domain.register();

        let reader_thread = {
            let (domain, cell) = (domain.clone(), Arc::clone(&cell));
            thread::spawn(move || {
                let (a, _) = cell.read(&reader).get();
                assert_ne!(a, POISON);
                reader.quiescent();
                // A reader may reclaim on the writer's behalf; it never waits.
                domain.reclaim();
            })
        };

        cell.replace(Version::new(2)).defer();
        domain.reclaim();
        reader_thread.join().unwrap();
        domain.barrier();
        assert_eq!(domain.pending(), 0);
    });
}

/// The model that must fail: a reader that keeps using a version after announcing a quiescent
/// state (the equivalent of a writer reclaiming before the grace period). Loom must report the
/// race between the reader's late read and the version's destructor.
#[test]
#[should_panic]
fn broken_use_after_quiescent_state_is_caught() {
    model_reader_against_synchronized_update(|domain, cell| {
        let mut reader = domain.register();
        let stale: *const Version = cell.read(&reader);
        reader.quiescent();
        // SAFETY: none; this is the bug the model exists to catch. The storage stays allocated
        // under loom (see the module docs), so only loom's check fires.
        let (a, _) = unsafe { &*stale }.get();
        assert_ne!(a, POISON);
    });
}

/// The same announcement protocol, written out with the reader's quiescent-state store weakened
/// from `Release` to `Relaxed`. The writer can then see the announcement without the reader's
/// earlier read being ordered before the reclamation, and loom must report the race.
#[test]
#[should_panic]
fn broken_relaxed_quiescent_announcement_is_caught() {
    use loom::sync::atomic::AtomicU64;

    loom::model(|| {
        let announced = Arc::new(AtomicU64::new(0));
        let version = Arc::new(Version::new(1));

        let reader_thread = {
            let (announced, version) = (Arc::clone(&announced), Arc::clone(&version));
            thread::spawn(move || {
                let _ = version.get();
                // The bug: Relaxed does not order the read above before the writer's reclaim.
                announced.store(1, Ordering::Relaxed);
            })
        };

        // Acquire: correct on this side; the missing Release on the reader's side breaks it.
        while announced.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        // "Reclaim" the version: the destructor's write, through a clone that stays alive.
        // SAFETY: none if the announcement is broken, which is what loom must report.
        version.a.with_mut(|p| unsafe { *p = POISON });
        reader_thread.join().unwrap();
    });
}
