//! What every regio benchmark shares: recording criterion's samples and printing the one
//! `COMPARE` summary line per comparison that DESIGN §6 specifies.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{measurement::WallTime, BenchmarkGroup};

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
