//! What the regio benchmarks share: recording criterion's samples, printing the one `COMPARE`
//! summary line per comparison (see the README, "Benchmarks"), timing a loop, loading other cores
//! with background threads, and the raw io-uring NOP round that regio's NOP benchmarks face.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{measurement::WallTime, BenchmarkGroup};
use io_uring::{opcode, IoUring};

/// Nanoseconds per iteration of every sample criterion took, by benchmark name.
#[derive(Default)]
pub struct Samples {
    per_iter_ns: RefCell<BTreeMap<String, Vec<f64>>>,
}

impl Samples {
    /// Benchmarks `routine` as `name` in `group`, recorded under the key `group_name/name`
    /// (criterion does not expose a group's name). `routine(iters)` runs the operation `iters`
    /// times and returns the time it took; each such sample is also kept for
    /// [`Samples::median_ns`].
    pub fn bench(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        group_name: &str,
        name: &str,
        mut routine: impl FnMut(u64) -> Duration,
    ) {
        let key = format!("{group_name}/{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let took = routine(iters);
                self.per_iter_ns
                    .borrow_mut()
                    .entry(key.clone())
                    .or_default()
                    .push(took.as_nanos() as f64 / iters as f64);
                took
            })
        });
    }

    /// The median time per iteration of `group/name`, in nanoseconds, if it ran (a filter
    /// given on the command line may have skipped it).
    pub fn median_ns(&self, key: &str) -> Option<f64> {
        let mut samples = self.per_iter_ns.borrow().get(key)?.clone();
        samples.sort_by(f64::total_cmp);
        Some(samples[samples.len() / 2])
    }

    /// Prints `COMPARE <name>: regio=<t>ns <peer>=<t>ns ... ratio=<r>` for times per operation,
    /// where `ratio` is the best peer's time divided by regio's (above 1: regio is faster).
    /// Prints nothing unless regio and every peer ran.
    pub fn compare_times(&self, name: &str, regio: &str, peers: &[(&str, &str)]) {
        let Some(ours) = self.median_ns(regio) else {
            return;
        };
        let mut line = format!("COMPARE {name}: regio={ours:.2}ns");
        let mut best = f64::INFINITY;
        for (label, key) in peers {
            let Some(theirs) = self.median_ns(key) else {
                return;
            };
            best = best.min(theirs);
            line.push_str(&format!(" {label}={theirs:.2}ns"));
        }
        println!("{line} ratio={:.2}", best / ours);
    }

    /// Prints `<label>: <t>ns` for one benchmark, if it ran.
    pub fn report(&self, label: &str, key: &str) {
        if let Some(ns) = self.median_ns(key) {
            println!("{label}: {ns:.2}ns");
        }
    }
}

/// Times `iters` calls of `op`.
pub fn timed(iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed()
}

/// Background threads that contend with the measured one until dropped.
pub struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Background {
    /// Starts `threads` threads. Each runs `setup` once, then `turn` on its result over and over
    /// until the `Background` is dropped.
    pub fn spawn<S>(
        threads: usize,
        setup: impl Fn() -> S + Send + Sync + 'static,
        turn: impl Fn(&mut S) + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let work = Arc::new((setup, turn));
        let threads = (0..threads)
            .map(|_| {
                let (stop, work) = (Arc::clone(&stop), Arc::clone(&work));
                thread::spawn(move || {
                    let mut state = (work.0)();
                    // Relaxed: the flag only ends the loop; `join` orders everything else.
                    while !stop.load(Ordering::Relaxed) {
                        (work.1)(&mut state);
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Relaxed: see `spawn`.
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a background thread panicked");
        }
    }
}

/// Splits a `REGIO_BENCH_ICOUNT` value, `<loop>[:<iterations>]`, into the loop's name and its
/// iteration count (default one million).
pub fn icount_spec(spec: &str) -> (&str, u64) {
    match spec.split_once(':') {
        Some((name, n)) => (
            name,
            n.parse().expect("REGIO_BENCH_ICOUNT=<loop>:<iterations>"),
        ),
        None => (spec, 1_000_000),
    }
}

/// One round of `batch` NOPs on a raw ring through the io-uring crate: pushes them, submits, and
/// reaps until all have completed, reading each CQE's cookie and result, the least any user of
/// a ring does with a completion (a count alone lets the compiler skip the CQEs, which then
/// never leave the cache of the CPU that wrote them).
pub fn raw_nop_round(ring: &mut IoUring, batch: usize) {
    {
        let mut sq = ring.submission();
        for i in 0..batch {
            let e = opcode::Nop::new().build().user_data(i as u64);
            // SAFETY: a NOP references no memory.
            unsafe { sq.push(&e).expect("the SQ has room for a round") };
        }
    }
    ring.submit().expect("io_uring_enter");
    let mut got = 0;
    while got < batch {
        for cqe in ring.completion() {
            std::hint::black_box((cqe.user_data(), cqe.result()));
            got += 1;
        }
    }
}
