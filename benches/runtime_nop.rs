//! `runtime_nop`: the runtime's cost per operation. NOP round trips through futures on a regio
//! worker against a raw `io-uring` crate loop doing the same round trips, in the same run.
//!
//! - **regio**: one task on a one-worker runtime (no SQPOLL) keeps 32 NOPs in flight: each
//!   round creates 32 `regio_runtime::nop()` futures and awaits them all together (a join of
//!   futures), so every round is 32 operations staged by one task poll, posted and submitted in
//!   one batch by the worker, reaped, and routed back by cookie, waking the task once.
//! - **raw**: the same 32 NOPs pushed into the SQ, one `io_uring_enter`, and each of the 32
//!   CQEs read, its cookie and its result (`support::raw_nop_round`).
//!
//! Both run pinned to CPU 0 (the worker thread, and the thread of the raw loop). The two sides
//! alternate in 150 ms rounds, 9 pairs, and the pair with the median ratio is printed, because
//! on a shared machine the load drifts between back-to-back measurements:
//!
//!     COMPARE runtime_nop: regio=<ops/s>ops/s raw=<ops/s>ops/s ratio=<regio/raw>
//!
//! The regio side measures inside its task (the clock starts and stops on the worker), so the
//! hand-off of the task to the worker is not counted. A second line,
//! `runtime_nop_cpu: regio=<ns>ns/op raw=<ns>ns/op ratio=<r>`, gives the CPU time (user and
//! system) of the measuring thread per operation, which other processes on a shared machine do
//! not inflate.
//!
//! Run: `cargo bench --bench runtime_nop`. To profile one side alone for 5 s, set
//! `REGIO_BENCH_PROFILE=<regio|raw>`.

#[allow(dead_code)] // shared with the other benches; this one uses the raw NOP round
mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use io_uring::IoUring;
use regio_runtime::{nop, Nop, RingMode, Runtime};

/// NOPs in flight per round.
const BATCH: usize = 32;
/// Rounds between two looks at the clock.
const CHUNK: u64 = 16;

/// The calling thread's CPU time (user and system): unlike the wall clock, it does not count
/// the time other processes take the CPU from the thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One side's measurement: operations per second of wall time, and CPU time per operation.
#[derive(Clone, Copy)]
struct Rate {
    ops_per_sec: f64,
    cpu_ns_per_op: f64,
}

impl Rate {
    fn new(ops: u64, wall: Duration, cpu: Duration) -> Self {
        Self {
            ops_per_sec: ops as f64 / wall.as_secs_f64(),
            cpu_ns_per_op: cpu.as_nanos() as f64 / ops as f64,
        }
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled and passed by reference.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Awaits `BATCH` NOPs together.
struct JoinNops {
    nops: [Option<Nop>; BATCH],
    left: usize,
}

impl JoinNops {
    fn new() -> Self {
        Self {
            nops: std::array::from_fn(|_| Some(nop())),
            left: BATCH,
        }
    }
}

impl Future for JoinNops {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        for slot in this.nops.iter_mut() {
            if let Some(op) = slot {
                if let Poll::Ready(result) = Pin::new(op).poll(cx) {
                    result.expect("a NOP completes with 0");
                    *slot = None;
                    this.left -= 1;
                }
            }
        }
        if this.left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// regio: rounds of 32 NOPs for `dur` after a 100 ms warm-up, measured on the worker.
fn regio_rate(rt: &Runtime, dur: Duration) -> Rate {
    let task = rt.spawn(async move {
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(100) {
            JoinNops::new().await;
        }
        let (start, cpu) = (Instant::now(), thread_cpu());
        let mut rounds = 0u64;
        while start.elapsed() < dur {
            for _ in 0..CHUNK {
                JoinNops::new().await;
            }
            rounds += CHUNK;
        }
        Rate::new(rounds * BATCH as u64, start.elapsed(), thread_cpu() - cpu)
    });
    rt.block_on(task).expect("the benchmark task")
}

/// raw: rounds for `dur` after a 100 ms warm-up.
fn raw_rate(ring: &mut IoUring, dur: Duration) -> Rate {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        support::raw_nop_round(ring, BATCH);
    }
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut rounds = 0u64;
    while start.elapsed() < dur {
        for _ in 0..CHUNK {
            support::raw_nop_round(ring, BATCH);
        }
        rounds += CHUNK;
    }
    Rate::new(rounds * BATCH as u64, start.elapsed(), thread_cpu() - cpu)
}

fn runtime() -> Runtime {
    Runtime::builder()
        .worker_threads(1)
        .pin_workers(true)
        .ring_mode(RingMode::Interrupt)
        .pool_class(4096, 64)
        .build()
        .expect("a regio runtime")
}

fn raw_ring() -> IoUring {
    let mut b = IoUring::builder();
    b.setup_cqsize(1024);
    b.build(256).expect("io_uring")
}

fn main() {
    // The raw loop runs here, and the runtime's worker inherits this CPU set: both on CPU 0.
    pin_to(0);
    if let Ok(which) = std::env::var("REGIO_BENCH_PROFILE") {
        let dur = Duration::from_secs(5);
        let rate = match which.as_str() {
            "regio" => regio_rate(&runtime(), dur),
            "raw" => raw_rate(&mut raw_ring(), dur),
            other => panic!("REGIO_BENCH_PROFILE=<regio|raw>, not {other}"),
        };
        println!(
            "{which}: {:.0} ops/s, {:.1} ns of CPU per op",
            rate.ops_per_sec, rate.cpu_ns_per_op
        );
        return;
    }
    const ROUNDS: usize = 9;
    let dur = Duration::from_millis(150);
    let rt = runtime();
    let mut ring = raw_ring();
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let ours = regio_rate(&rt, dur);
        let theirs = raw_rate(&mut ring, dur);
        rounds.push((ours.ops_per_sec / theirs.ops_per_sec, ours, theirs));
    }
    // The median round by ratio: each round's pair ran back to back under the same load.
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, regio, raw) = rounds[ROUNDS / 2];
    let worker = rt.stats()[0];
    println!(
        "runtime_nop: {} task polls, {} ops submitted, {} reaps, {} parks",
        worker.tasks_polled, worker.ops_submitted, worker.reaps, worker.parks
    );
    // CPU time per operation, which other processes on the machine do not inflate: the
    // overhead itself (the median round's).
    println!(
        "runtime_nop_cpu: regio={:.1}ns/op raw={:.1}ns/op ratio={:.2}",
        regio.cpu_ns_per_op,
        raw.cpu_ns_per_op,
        raw.cpu_ns_per_op / regio.cpu_ns_per_op
    );
    println!(
        "COMPARE runtime_nop: regio={:.0}ops/s raw={:.0}ops/s ratio={ratio:.2}",
        regio.ops_per_sec, raw.ops_per_sec
    );
}
