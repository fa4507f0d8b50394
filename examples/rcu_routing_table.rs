//! Worker threads route requests through a shared table while a control thread keeps changing
//! it, with `regio_sync::Rcu`: the workers never block and never take a lock.
//!
//! Run: `cargo run --release --example rcu_routing_table`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use regio::sync::{Domain, Rcu};

/// Which queue serves which key range: what an adapter keeps per work queue.
type Routes = BTreeMap<u64, &'static str>;

fn main() {
    let domain = Domain::new();
    let routes = Arc::new(Rcu::new(&domain, Routes::from([(0, "cq0")])));
    let stop = Arc::new(AtomicBool::new(false));
    let routed = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..2)
        .map(|worker: u64| {
            // Each executor thread registers once, then reads with a plain load.
            let mut reader = domain.register();
            let (routes, stop, routed) =
                (Arc::clone(&routes), Arc::clone(&stop), Arc::clone(&routed));
            thread::spawn(move || {
                let mut key = worker;
                // Relaxed: the flag only ends the loop; `join` orders everything else.
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1_000 {
                        key = key.wrapping_mul(6364136223846793005).wrapping_add(1) % 1_000;
                        let table = routes.read(&reader);
                        let (_, queue) = table.range(..=key).next_back().expect("route 0 exists");
                        std::hint::black_box(queue);
                    }
                    // Relaxed: a statistic, read after the join.
                    routed.fetch_add(1_000, Ordering::Relaxed);
                    // End of a loop turn: this thread holds no reference into the table.
                    reader.quiescent();
                }
            })
        })
        .collect();

    // The control thread: add a queue every few milliseconds, copy-on-write.
    for (n, queue) in ["cq1", "cq2", "cq3", "cq4"].into_iter().enumerate() {
        thread::sleep(Duration::from_millis(20));
        let old = routes.update(|table| {
            let mut next = table.clone();
            next.insert((n as u64 + 1) * 200, queue);
            next
        });
        // Wait for every worker to pass a quiescent state, then the old table is ours to drop.
        let old = old.synchronize();
        println!(
            "published {} routes (retired a table of {})",
            n + 2,
            old.len()
        );
    }

    // Relaxed: see the loop above.
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker panicked");
    }
    // Relaxed: every worker was joined.
    println!(
        "{} requests routed, no reader ever blocked",
        routed.load(Ordering::Relaxed)
    );
}
