//! Many reads against a writer that keeps replacing the value; every retired version must be
//! dropped exactly once. Also run under AddressSanitizer by `.ci/run`, which turns a premature
//! free into a hard error.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;

use regio_sync::{Domain, Rcu};

/// Versions the writer publishes (plus the initial one).
const VERSIONS: usize = 20_000;
/// Reads each registered reader makes at least; it goes on until the writer is done.
const READS: usize = 1_000_000;
/// Reads between two quiescent states.
const READS_PER_TURN: usize = 64;

struct Version {
    id: usize,
    /// A checksum of `id` that a torn or freed version would get wrong.
    check: u64,
    drops: Arc<Vec<AtomicU32>>,
}

impl Version {
    fn new(id: usize, drops: &Arc<Vec<AtomicU32>>) -> Self {
        Self {
            id,
            check: checksum(id),
            drops: Arc::clone(drops),
        }
    }

    /// Checks the version twice, with some work in between, so that a reclamation racing with
    /// the read lands inside the window (and AddressSanitizer reports the use after free).
    fn verify(&self) {
        assert_eq!(self.check, checksum(self.id), "a torn or freed version");
        let mut spin = self.check;
        for _ in 0..8 {
            spin = std::hint::black_box(spin.rotate_left(5) ^ 0x5555);
        }
        assert_eq!(
            self.check,
            checksum(self.id),
            "version freed during a read ({spin})"
        );
    }
}

fn checksum(id: usize) -> u64 {
    (id as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
}

impl Drop for Version {
    fn drop(&mut self) {
        // Relaxed: a counter read only after every thread has been joined.
        self.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn every_retired_version_is_dropped_exactly_once() {
    let drops: Arc<Vec<AtomicU32>> = Arc::new((0..=VERSIONS).map(|_| AtomicU32::new(0)).collect());
    let domain = Domain::new();
    let cell = Arc::new(Rcu::new(&domain, Version::new(0, &drops)));
    let writer_done = Arc::new(AtomicBool::new(false));

    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let mut reader = domain.register();
            let (cell, writer_done) = (Arc::clone(&cell), Arc::clone(&writer_done));
            thread::spawn(move || {
                let mut newest = 0;
                let mut turn = 0;
                // Acquire: pairs with the writer's Release store of the flag.
                while turn < READS / READS_PER_TURN || !writer_done.load(Ordering::Acquire) {
                    turn += 1;
                    for _ in 0..READS_PER_TURN {
                        let version = cell.read(&reader);
                        version.verify();
                        newest = newest.max(version.id);
                    }
                    reader.quiescent();
                    if turn % 1024 == 0 {
                        // Park now and then, as an executor does, so writers see offline time.
                        reader.offline_while(thread::yield_now);
                    }
                }
                newest
            })
        })
        .collect();

    let guard_reader = {
        let (domain, cell, writer_done) =
            (domain.clone(), Arc::clone(&cell), Arc::clone(&writer_done));
        thread::spawn(move || {
            let mut reads = 0u64;
            // Acquire: pairs with the writer's Release store of the flag.
            while !writer_done.load(Ordering::Acquire) {
                let guard = domain.guard();
                cell.read(&guard).verify();
                reads += 1;
            }
            reads
        })
    };

    for id in 1..=VERSIONS {
        let retired = cell.replace(Version::new(id, &drops));
        if id % 2 == 0 {
            drop(retired.synchronize());
        } else {
            retired.defer();
        }
    }
    // Release: the guard reader stops after seeing it.
    writer_done.store(true, Ordering::Release);

    for reader in readers.drain(..) {
        assert!(reader.join().unwrap() <= VERSIONS);
    }
    assert!(guard_reader.join().unwrap() > 0);
    domain.barrier();
    assert_eq!(domain.pending(), 0);
    drop(cell);

    for (id, count) in drops.iter().enumerate() {
        // Relaxed: all threads were joined, which ordered their drops before these loads.
        assert_eq!(
            count.load(Ordering::Relaxed),
            1,
            "version {id} dropped {count:?} times"
        );
    }
}

#[test]
fn readers_that_come_and_go_never_block_a_writer() {
    let domain = Domain::new();
    let cell = Arc::new(Rcu::new(&domain, 0u64));
    let churn = {
        let (domain, cell) = (domain.clone(), Arc::clone(&cell));
        thread::spawn(move || {
            for _ in 0..20_000 {
                let reader = domain.register();
                let _ = *cell.read(&reader);
                drop(reader);
            }
        })
    };
    for n in 1..=2_000 {
        assert_eq!(cell.replace(n).synchronize(), n - 1);
    }
    churn.join().unwrap();
}
