//! `rcu`: the cost of reading an `Rcu<T>` (QSBR and guard readers) against `arc_swap::ArcSwap`
//! and `parking_lot::RwLock`, with 1 and 2 threads reading, and the writer's update latency while
//! a reader is active. Prints the `COMPARE rcu_read_1t`, `rcu_read_2t` and `rcu_update_1r` lines
//! of the README ("Benchmarks"): `rcu_read_<n>t` times a QSBR read (the reader is registered
//! once; a read is a load), and `COMPARE rcu_guard_read_<n>t` the guard read (`domain.guard()`,
//! the read, the guard's drop), both against the same `ArcSwap::load()` and `RwLock::read()`.
//!
//! Run: `cargo bench --bench rcu` (add `-- --warm-up-time 1 --measurement-time 3` for a quick run).
//!
//! For instruction counts, name a loop in `REGIO_BENCH_ICOUNT` (`qsbr_read`, `guard_read`,
//! `arc_swap_read`, optionally followed by `:<iterations>`); the binary then runs just that loop, in
//! a function of its own, and exits. See `docs/performance.md`.

#[allow(dead_code)] // shared with the other benches; each uses part of it
mod support;

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::Criterion;
use parking_lot::RwLock;
use regio_sync::{Domain, Rcu};
use support::{timed, Background, Samples};

/// What every contender protects: a small routing table.
#[derive(Clone, Default)]
struct Table {
    entries: [u64; 8],
}

fn reads(c: &mut Criterion, samples: &Samples, threads: usize) {
    let group_name = format!("rcu_read_{threads}t");
    let mut group = c.benchmark_group(&group_name);
    let others = threads - 1;

    let domain = Domain::new();
    let cell = Arc::new(Rcu::new(&domain, Table::default()));
    {
        let (d, rcu) = (domain.clone(), Arc::clone(&cell));
        let _others = Background::spawn(
            others,
            move || d.register(),
            move |reader| {
                for _ in 0..64 {
                    black_box(rcu.read(reader).entries[0]);
                }
                reader.quiescent();
            },
        );
        let mut reader = domain.register();
        samples.bench(&mut group, &group_name, "qsbr", |iters| {
            let took = timed(iters, || {
                black_box(cell.read(&reader).entries[0]);
            });
            reader.quiescent();
            took
        });
        samples.bench(&mut group, &group_name, "guard", |iters| {
            timed(iters, || {
                let guard = domain.guard();
                black_box(cell.read(&guard).entries[0]);
            })
        });
    }

    let swap = Arc::new(ArcSwap::from_pointee(Table::default()));
    {
        let peer = Arc::clone(&swap);
        let _others = Background::spawn(
            others,
            || (),
            move |_| {
                black_box(peer.load().entries[0]);
            },
        );
        samples.bench(&mut group, &group_name, "arc_swap", |iters| {
            timed(iters, || {
                black_box(swap.load().entries[0]);
            })
        });
    }

    let lock = Arc::new(RwLock::new(Table::default()));
    {
        let peer = Arc::clone(&lock);
        let _others = Background::spawn(
            others,
            || (),
            move |_| {
                black_box(peer.read().entries[0]);
            },
        );
        samples.bench(&mut group, &group_name, "rwlock", |iters| {
            timed(iters, || {
                black_box(lock.read().entries[0]);
            })
        });
    }
    group.finish();
}

fn updates(c: &mut Criterion, samples: &Samples) {
    let group_name = "rcu_update_1r";
    let mut group = c.benchmark_group(group_name);

    let domain = Domain::new();
    let cell = Arc::new(Rcu::new(&domain, Table::default()));
    {
        let (d, rcu) = (domain.clone(), Arc::clone(&cell));
        let _reader = Background::spawn(
            1,
            move || d.register(),
            move |reader| {
                for _ in 0..64 {
                    black_box(rcu.read(reader).entries[0]);
                }
                reader.quiescent();
            },
        );
        samples.bench(&mut group, group_name, "synchronize", |iters| {
            timed(iters, || {
                black_box(cell.replace(Table::default()).synchronize());
            })
        });
        samples.bench(&mut group, group_name, "defer", |iters| {
            timed(iters, || cell.replace(Table::default()).defer())
        });
        domain.barrier();
    }

    let swap = Arc::new(ArcSwap::from_pointee(Table::default()));
    {
        let peer = Arc::clone(&swap);
        let _reader = Background::spawn(
            1,
            || (),
            move |_| {
                black_box(peer.load().entries[0]);
            },
        );
        samples.bench(&mut group, group_name, "arc_swap", |iters| {
            timed(iters, || swap.store(Arc::new(Table::default())))
        });
    }

    let lock = Arc::new(RwLock::new(Table::default()));
    {
        let peer = Arc::clone(&lock);
        let _reader = Background::spawn(
            1,
            || (),
            move |_| {
                black_box(peer.read().entries[0]);
            },
        );
        samples.bench(&mut group, group_name, "rwlock", |iters| {
            timed(iters, || *lock.write() = Table::default())
        });
    }
    group.finish();
}

/// The loops `REGIO_BENCH_ICOUNT` names, each in a function of its own (`rcu::icount_<loop>`) so
/// that callgrind can count it alone (`--toggle-collect`); each reads `n` times.
#[inline(never)]
fn icount_qsbr_read(cell: &Rcu<Table>, reader: &regio_sync::QsbrReader, n: u64) {
    for _ in 0..n {
        black_box(cell.read(reader).entries[0]);
    }
}

#[inline(never)]
fn icount_guard_read(cell: &Rcu<Table>, domain: &Domain, n: u64) {
    for _ in 0..n {
        let guard = domain.guard();
        black_box(cell.read(&guard).entries[0]);
    }
}

#[inline(never)]
fn icount_arc_swap_read(swap: &ArcSwap<Table>, n: u64) {
    for _ in 0..n {
        black_box(swap.load().entries[0]);
    }
}

/// Runs the loop `spec` (`<loop>[:<iterations>]`) names; see the module docs.
fn icount(spec: &str) {
    let (name, n) = support::icount_spec(spec);
    let domain = Domain::new();
    let cell = Rcu::new(&domain, Table::default());
    let swap = ArcSwap::from_pointee(Table::default());
    match name {
        "qsbr_read" => icount_qsbr_read(&cell, &domain.register(), n),
        "guard_read" => icount_guard_read(&cell, &domain, n),
        "arc_swap_read" => icount_arc_swap_read(&swap, n),
        other => panic!("REGIO_BENCH_ICOUNT: no loop {other:?}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("REGIO_BENCH_ICOUNT") {
        icount(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let samples = Samples::default();
    reads(&mut c, &samples, 1);
    reads(&mut c, &samples, 2);
    updates(&mut c, &samples);
    c.final_summary();

    for t in ["rcu_read_1t", "rcu_read_2t"] {
        let peers = [
            ("arcswap", format!("{t}/arc_swap")),
            ("rwlock", format!("{t}/rwlock")),
        ];
        let peers: Vec<(&str, &str)> = peers.iter().map(|(l, k)| (*l, k.as_str())).collect();
        samples.compare_times(t, &format!("{t}/qsbr"), &peers);
        // The guard read (take a guard, read, drop the guard) against the same peers: arc-swap's
        // `load()` guard is the like-for-like one.
        samples.compare_times(
            &format!("rcu_guard_read_{}", &t[9..]),
            &format!("{t}/guard"),
            &peers,
        );
    }
    samples.compare_times(
        "rcu_update_1r",
        "rcu_update_1r/defer",
        &[
            ("arcswap", "rcu_update_1r/arc_swap"),
            ("rwlock", "rcu_update_1r/rwlock"),
        ],
    );
    samples.report("rcu_update_synchronize_1r", "rcu_update_1r/synchronize");
}
