//! `adapters`: the cost of regio-adapters' work queues and completion queues against a raw
//! `io-uring` crate loop in the same run, with SQPOLL on and off; completions reaped per second
//! across 16 CQs by 1 and 2 threads; and system calls per operation at steady SQPOLL load.
//!
//! Prints `COMPARE adapters_nop_batch32`, `COMPARE adapters_read4k_qd32` (SQPOLL on; the SQPOLL
//! off figures follow as `_nosqpoll` lines), `COMPARE adapters_nop_batch32_single_issuer` (SQPOLL
//! off, regio's single-issuer mode against a raw ring with `SINGLE_ISSUER | DEFER_TASKRUN`),
//! `cqset_reap_16cq_{1,2}t` and `syscalls_per_op`.
//! The criterion groups record each side alone; the `COMPARE` lines come from a separate
//! interleaved measurement (regio and raw alternating in 150 ms rounds, 9 pairs, the median
//! pair's ratio printed), because on a shared
//! machine the load drifts between criterion's back-to-back groups.
//!
//! The NOP round trips reap with `Batch::reap_each`, which hands each completion to a closure;
//! on both sides each completion's cookie and result are read (through `black_box`), the least
//! any user of a ring does with a completion. The 4 KiB reads reap into a `Vec` with
//! `Batch::reap`, so that API stays measured too.
//!
//! Run: `cargo bench --bench adapters -- --warm-up-time 1 --measurement-time 3`.
//! Cross-check the syscall figure by hand with
//! `REGIO_BENCH_STEADY=5 strace -c -f -e trace=io_uring_enter <bench binary>` (the binary then
//! runs only the steady SQPOLL read load and prints its own count). To profile one loop alone,
//! set `REGIO_BENCH_PROFILE=<regio|raw>_<nop|read>_<sqpoll|nosqpoll>`: the binary then runs just
//! that loop for 5 s.
//!
//! To run regio's SQPOLL rings with early publishing (`Config::sqpoll_publish_every`), set
//! `REGIO_BENCH_PUBLISH_EVERY=<n>` (the SQEs per early tail store; unset, the default 0).
//!
//! To count instructions (callgrind, deterministic), set
//! `REGIO_BENCH_ICOUNT=<regio|raw>_nop_<nosqpoll|single_issuer>[:<units>]`: the binary then
//! runs that many 32-NOP round trips (100 000 by default) after a warm-up, inside
//! `adapters::icount_units`, and exits. See `docs/performance.md` for the callgrind command.

#[allow(dead_code)] // shared with the other benches; this one prints rates, not times
mod support;

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::Criterion;
use io_uring::{opcode, types, IoUring};
use regio_adapters::{Adapter, Completion, Config, CqSet, Op, Ring, SqPoll, Target, WorkQueue};
use regio_pool::{Message, MessagePool};
use support::{timed, Samples};

const BATCH: usize = 32;
const QD: usize = 32;
const BLOCK: usize = 4096;
const FILE_BLOCKS: u64 = 16 * 1024; // 64 MiB
/// The SQPOLL threads (regio's and raw's alike) run on CPU 1 and the benchmark thread on CPU 0,
/// so that a polling thread never shares a core with the thread it serves.
const SQPOLL_CPU: u32 = 1;

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled and passed by reference.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn config(sqpoll: bool, rings: usize) -> Config {
    Config::default()
        .rings(rings)
        .sq_entries(256)
        .cq_entries(1024)
        .sqpoll(sqpoll.then_some(SqPoll {
            idle: Duration::from_millis(1000),
            cpu: Some(SQPOLL_CPU),
        }))
        .sqpoll_fallback(false)
        .sqpoll_publish_every(publish_every())
}

/// `REGIO_BENCH_PUBLISH_EVERY=<n>`: regio's SQPOLL rings publish staged SQEs early, every `n`
/// ([`Config::sqpoll_publish_every`]); unset, 0 (the default: at the commit only).
fn publish_every() -> u32 {
    std::env::var("REGIO_BENCH_PUBLISH_EVERY").map_or(0, |v| {
        v.parse()
            .expect("REGIO_BENCH_PUBLISH_EVERY=<SQEs per early tail store>")
    })
}

/// A raw ring set up as regio's single-issuer mode sets up its own on this kernel.
fn raw_ring_single_issuer() -> IoUring {
    let mut b = IoUring::builder();
    b.setup_cqsize(1024)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag();
    b.build(256)
        .expect("io_uring with SINGLE_ISSUER | DEFER_TASKRUN")
}

fn raw_ring(sqpoll: bool) -> IoUring {
    let mut b = IoUring::builder();
    b.setup_cqsize(1024);
    if sqpoll {
        b.setup_sqpoll(1000).setup_sqpoll_cpu(SQPOLL_CPU);
    }
    b.build(256).expect("io_uring")
}

/// A 64 MiB file in the page cache.
fn data_file() -> (std::fs::File, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("regio-bench-adapters-{}", std::process::id()));
    std::fs::write(&path, vec![0x5au8; (FILE_BLOCKS as usize) * BLOCK]).unwrap();
    (std::fs::File::open(&path).unwrap(), path)
}

struct Rng(u64);
impl Rng {
    fn block(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % FILE_BLOCKS) * BLOCK as u64
    }
}

/// regio: NOP round trips of `BATCH` through a work queue and its CQ, reaped with
/// [`Batch::reap_each`](regio_adapters::Batch::reap_each) (each completion handed to a closure
/// that reads its cookie and result, as the raw loop reads each CQE's).
struct RegioNop {
    _adapter: Adapter<Message>,
    wq: WorkQueue<Message>,
    cq: Ring<Message>,
}

impl RegioNop {
    fn new(sqpoll: bool) -> Self {
        Self::on(Adapter::new(config(sqpoll, 1)).unwrap())
    }

    /// In single-issuer mode (SQPOLL off), bound to the calling thread.
    fn single_issuer() -> Self {
        let cfg = config(false, 1).single_issuer(true);
        let adapter = Adapter::new(cfg).unwrap();
        adapter.bind_owner().unwrap();
        Self::on(adapter)
    }

    /// A work queue of NOPs on `adapter`'s first CQ.
    fn on(adapter: Adapter<Message>) -> Self {
        let wq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
        let cq = wq.ring();
        Self {
            _adapter: adapter,
            wq,
            cq,
        }
    }

    fn round_trip(&mut self) {
        let mut batch = self
            .cq
            .batch()
            .expect("single-threaded bench owns the ring");
        for i in 0..BATCH {
            batch.post(&self.wq, Op::nop(i as u64)).unwrap();
        }
        batch.commit().unwrap();
        let mut got = 0;
        while got < BATCH {
            got += batch
                .reap_each(64, |c| {
                    black_box((c.cookie, c.result));
                })
                .unwrap();
        }
    }
}

/// raw io-uring: the same round trip.
struct RawNop(IoUring);

impl RawNop {
    fn round_trip(&mut self) {
        support::raw_nop_round(&mut self.0, BATCH);
    }
}

/// regio: 4 KiB read_fixed at queue depth `QD`, pool messages as buffers.
struct RegioRead {
    adapter: Adapter<Message>,
    _pool: MessagePool,
    wq: WorkQueue<Message>,
    cq: Ring<Message>,
    out: Vec<Completion<Message>>,
    rng: Rng,
}

impl RegioRead {
    fn new(sqpoll: bool, file: &std::fs::File) -> Self {
        let adapter = Adapter::new(config(sqpoll, 1)).unwrap();
        let pool = MessagePool::builder()
            .class(BLOCK as u32, 2 * QD as u32)
            .build()
            .unwrap();
        pool.attach(adapter.registrar()).unwrap();
        let wq = adapter
            .work_queue(0, Target::Fd(file.as_raw_fd()), 8, QD as u32)
            .unwrap();
        let cq = wq.ring();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..QD {
            wq.post(Op::read_fixed(
                pool.try_acquire().unwrap(),
                rng.block(),
                i as u64,
            ))
            .unwrap();
        }
        Self {
            adapter,
            _pool: pool,
            wq,
            cq,
            out: Vec::with_capacity(QD),
            rng,
        }
    }

    /// Completes `n` reads, re-posting each buffer at once.
    fn run(&mut self, n: usize) {
        let mut done = 0;
        while done < n {
            let mut batch = self
                .cq
                .batch()
                .expect("single-threaded bench owns the ring");
            batch.reap(&mut self.out, QD).unwrap();
            for c in self.out.drain(..) {
                assert_eq!(c.result, BLOCK as i32);
                let buf = c.buf.expect("final completion");
                batch
                    .post(&self.wq, Op::read_fixed(buf, self.rng.block(), c.cookie))
                    .unwrap();
                done += 1;
            }
        }
    }
}

/// raw io-uring: the same reads from one registered buffer of `QD` blocks.
struct RawRead {
    ring: IoUring,
    _mem: Vec<u8>,
    base: *mut u8,
    rng: Rng,
    fd: i32,
}

impl RawRead {
    fn new(sqpoll: bool, file: &std::fs::File) -> Self {
        let ring = raw_ring(sqpoll);
        let mut mem = vec![0u8; QD * BLOCK];
        let base = mem.as_mut_ptr();
        let iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: mem.len(),
        };
        // SAFETY: `mem` lives as long as the ring (both in `Self`; the ring drops first).
        unsafe { ring.submitter().register_buffers(&[iov]).unwrap() };
        let mut me = Self {
            ring,
            _mem: mem,
            base,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            fd: file.as_raw_fd(),
        };
        for i in 0..QD {
            me.push(i);
        }
        me.ring.submit().unwrap();
        me
    }

    fn push(&mut self, i: usize) {
        let off = self.rng.block();
        // SAFETY: block `i` of the registered buffer.
        let addr = unsafe { self.base.add(i * BLOCK) };
        let e = opcode::ReadFixed::new(types::Fd(self.fd), addr, BLOCK as u32, 0)
            .offset(off)
            .build()
            .user_data(i as u64);
        // SAFETY: the buffer outlives the ring; at most QD reads are in flight, so the SQ has room.
        unsafe { self.ring.submission().push(&e).unwrap() };
    }

    fn run(&mut self, n: usize) {
        let mut done = 0;
        let mut ready = Vec::with_capacity(QD);
        while done < n {
            ready.extend(self.ring.completion().map(|c| {
                assert_eq!(c.result(), BLOCK as i32);
                c.user_data() as usize
            }));
            for i in ready.drain(..) {
                self.push(i);
                done += 1;
            }
            self.ring.submit().unwrap();
        }
    }
}

fn mode(sqpoll: bool) -> &'static str {
    if sqpoll {
        "sqpoll"
    } else {
        "nosqpoll"
    }
}

fn nop(c: &mut Criterion, s: &Samples, sqpoll: bool) {
    let name = format!("adapters_nop_batch32_{}", mode(sqpoll));
    let mut group = c.benchmark_group(&name);
    let mut regio = RegioNop::new(sqpoll);
    s.bench(&mut group, &name, "regio", |iters| {
        timed(iters, || regio.round_trip())
    });
    drop(regio);
    let mut raw = RawNop(raw_ring(sqpoll));
    s.bench(&mut group, &name, "raw", |iters| {
        timed(iters, || raw.round_trip())
    });
    group.finish();
}

fn read(c: &mut Criterion, s: &Samples, sqpoll: bool, file: &std::fs::File) {
    let name = format!("adapters_read4k_qd32_{}", mode(sqpoll));
    let mut group = c.benchmark_group(&name);
    let mut regio = RegioRead::new(sqpoll, file);
    s.bench(&mut group, &name, "regio", |iters| {
        timed(iters, || regio.run(QD))
    });
    drop(regio);
    let mut raw = RawRead::new(sqpoll, file);
    s.bench(&mut group, &name, "raw", |iters| {
        timed(iters, || raw.run(QD))
    });
    group.finish();
}

/// 16 CQs, each pre-filled with NOP completions; `threads` reapers empty them through a CqSet.
fn cqset(c: &mut Criterion, s: &Samples, threads: usize) {
    const CQS: usize = 16;
    const PER_CQ: usize = 128;
    let name = format!("cqset_reap_16cq_{threads}t");
    let mut group = c.benchmark_group(&name);
    let adapter = Adapter::<Message>::new(config(false, CQS)).unwrap();
    let wqs: Vec<_> = (0..CQS)
        .map(|i| {
            adapter
                .work_queue(i, Target::Fd(-1), PER_CQ as u32, 8)
                .unwrap()
        })
        .collect();
    let set = CqSet::new(adapter.rings()).unwrap();
    let fill = || {
        for wq in &wqs {
            let cq = wq.ring();
            let mut b = cq.batch().unwrap();
            for i in 0..PER_CQ {
                b.post(wq, Op::nop(i as u64)).unwrap();
            }
        }
    };
    s.bench(&mut group, &name, "reap", |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            fill();
            let left = AtomicU64::new((CQS * PER_CQ) as u64);
            let start = Barrier::new(threads);
            let reap = || {
                let mut out = Vec::with_capacity(256);
                // Relaxed: a work counter; the scope's join orders the rest.
                // Relaxed: a countdown to wait on; the reapers' work is not read through it.
                while left.load(Ordering::Relaxed) > 0 {
                    out.clear();
                    let n = set.reap(&mut out, 256).unwrap();
                    left.fetch_sub(n as u64, Ordering::Relaxed);
                }
            };
            // This thread is one of the reapers; the others start with it at the barrier.
            total += std::thread::scope(|sc| {
                for _ in 1..threads {
                    sc.spawn(|| {
                        pin_to(1); // the second reaper gets the other core
                        start.wait();
                        reap();
                    });
                }
                start.wait();
                let t = Instant::now();
                reap();
                // Relaxed: a countdown to wait on; the reapers' work is not read through it.
                while left.load(Ordering::Relaxed) > 0 {
                    std::hint::spin_loop();
                }
                t.elapsed()
            });
        }
        total
    });
    group.finish();
    let per_iter = (CQS * PER_CQ) as f64;
    if let Some(ns) = s.median_ns(&format!("{name}/reap")) {
        println!("{name}: {:.0} completions/s", per_iter / ns * 1e9);
    }
}

/// Steady SQPOLL read load for `dur`: returns (ops, syscalls per op from the stats counter).
fn steady(file: &std::fs::File, dur: Duration) -> (u64, f64) {
    let mut r = RegioRead::new(true, file);
    r.run(10 * QD); // warm: the SQPOLL thread is awake
    let before = r.adapter.stats();
    let t = Instant::now();
    let mut ops = 0;
    while t.elapsed() < dur {
        r.run(1024);
        ops += 1024;
    }
    let after = r.adapter.stats();
    let enters = after.enters - before.enters;
    let submitted = after.submitted - before.submitted;
    (ops, enters as f64 / submitted.max(1) as f64)
}

/// Something measured in the interleaved comparison: runs one unit of `ops` operations.
trait Engine {
    fn unit(&mut self);
}

impl Engine for RegioNop {
    fn unit(&mut self) {
        self.round_trip();
    }
}

impl Engine for RawNop {
    fn unit(&mut self) {
        self.round_trip();
    }
}

impl Engine for RegioRead {
    fn unit(&mut self) {
        self.run(QD);
    }
}

impl Engine for RawRead {
    fn unit(&mut self) {
        self.run(QD);
    }
}

/// Runs `engine` for `dur` after a short warm-up; returns units done and the time taken.
fn run_for(engine: &mut dyn Engine, dur: Duration) -> (u64, Duration) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        engine.unit();
    }
    let t = Instant::now();
    let mut units = 0;
    while t.elapsed() < dur {
        for _ in 0..16 {
            engine.unit();
        }
        units += 16;
    }
    (units, t.elapsed())
}

/// The same-run comparison: regio and raw alternate in short rounds, each built fresh so that
/// only one SQPOLL thread runs at a time, and the machine's load drifts over both alike.
/// Prints `COMPARE <name>: regio=<r>ops/s raw=<r>ops/s ratio=<regio/raw>` for the median round.
fn compare(
    name: &str,
    ops_per_unit: f64,
    mut regio: impl FnMut() -> Box<dyn Engine>,
    mut raw: impl FnMut() -> Box<dyn Engine>,
) {
    const ROUNDS: usize = 9;
    let dur = Duration::from_millis(150);
    let rate = |(u, t): (u64, Duration)| u as f64 * ops_per_unit / t.as_secs_f64();
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let ours = rate(run_for(regio().as_mut(), dur));
        let theirs = rate(run_for(raw().as_mut(), dur));
        rounds.push((ours / theirs, ours, theirs));
    }
    // The median round by ratio: each round's pair ran back to back under the same load.
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, r, p) = rounds[ROUNDS / 2];
    println!("COMPARE {name}: regio={r:.0}ops/s raw={p:.0}ops/s ratio={ratio:.2}");
}

/// Runs one engine alone for 5 s, for a profiler: `REGIO_BENCH_PROFILE=<regio|raw>_<nop|read>_<sqpoll|nosqpoll>`.
fn profile(which: &str, file: &std::fs::File) {
    let sqpoll = !which.ends_with("_nosqpoll");
    let mut engine: Box<dyn Engine> = match which.split('_').take(2).collect::<Vec<_>>()[..] {
        ["regio", "nop"] => Box::new(RegioNop::new(sqpoll)),
        ["raw", "nop"] => Box::new(RawNop(raw_ring(sqpoll))),
        ["regio", "read"] => Box::new(RegioRead::new(sqpoll, file)),
        ["raw", "read"] => Box::new(RawRead::new(sqpoll, file)),
        _ => panic!("REGIO_BENCH_PROFILE=<regio|raw>_<nop|read>_<sqpoll|nosqpoll>, not {which}"),
    };
    let (units, t) = run_for(engine.as_mut(), Duration::from_secs(5));
    println!("{which}: {:.0} units/s", units as f64 / t.as_secs_f64());
}

/// The loop `REGIO_BENCH_ICOUNT` counts: `n` units of `engine`, in a function of its own so that
/// callgrind can count it alone (`--toggle-collect=adapters::icount_units`).
#[inline(never)]
fn icount_units(engine: &mut dyn Engine, n: u64) {
    for _ in 0..n {
        engine.unit();
    }
}

/// Runs the NOP loop `spec` (`<regio|raw>_nop_<nosqpoll|single_issuer>[:<units>]`) names after
/// a warm-up of 1000 units; see the module docs. Only the modes without SQPOLL count the same on
/// every run: with SQPOLL the reaping thread spins for as long as the kernel thread takes.
fn icount(spec: &str) {
    let (name, n) = match spec.split_once(':') {
        Some((name, n)) => (name, n.parse().expect("REGIO_BENCH_ICOUNT=<loop>:<units>")),
        None => (spec, 100_000),
    };
    let mut engine: Box<dyn Engine> = match name {
        "regio_nop_nosqpoll" => Box::new(RegioNop::new(false)),
        "raw_nop_nosqpoll" => Box::new(RawNop(raw_ring(false))),
        "regio_nop_single_issuer" => Box::new(RegioNop::single_issuer()),
        "raw_nop_single_issuer" => Box::new(RawNop(raw_ring_single_issuer())),
        other => panic!(
            "REGIO_BENCH_ICOUNT=<regio|raw>_nop_<nosqpoll|single_issuer>[:<units>], not {other:?}"
        ),
    };
    for _ in 0..1000 {
        engine.unit();
    }
    icount_units(engine.as_mut(), n);
    println!("{name}: {n} units of {BATCH} NOPs");
}

fn main() {
    pin_to(0);
    if let Ok(spec) = std::env::var("REGIO_BENCH_ICOUNT") {
        icount(&spec);
        return;
    }
    let (file, path) = data_file();
    if let Ok(which) = std::env::var("REGIO_BENCH_PROFILE") {
        profile(&which, &file);
        std::fs::remove_file(path).unwrap();
        return;
    }
    if let Ok(secs) = std::env::var("REGIO_BENCH_STEADY") {
        let secs: u64 = secs.parse().expect("REGIO_BENCH_STEADY=<seconds>");
        let (ops, per_op) = steady(&file, Duration::from_secs(secs));
        println!("steady SQPOLL read4k: {ops} ops");
        println!("syscalls_per_op: {per_op:.5}");
        std::fs::remove_file(path).unwrap();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let s = Samples::default();
    for sqpoll in [true, false] {
        nop(&mut c, &s, sqpoll);
        read(&mut c, &s, sqpoll, &file);
    }
    cqset(&mut c, &s, 1);
    cqset(&mut c, &s, 2);
    c.final_summary();
    for sqpoll in [true, false] {
        let suffix = if sqpoll { "" } else { "_nosqpoll" };
        compare(
            &format!("adapters_nop_batch32{suffix}"),
            BATCH as f64,
            || Box::new(RegioNop::new(sqpoll)),
            || Box::new(RawNop(raw_ring(sqpoll))),
        );
        compare(
            &format!("adapters_read4k_qd32{suffix}"),
            QD as f64,
            || Box::new(RegioRead::new(sqpoll, &file)),
            || Box::new(RawRead::new(sqpoll, &file)),
        );
    }
    compare(
        "adapters_nop_batch32_single_issuer",
        BATCH as f64,
        || Box::new(RegioNop::single_issuer()),
        || Box::new(RawNop(raw_ring_single_issuer())),
    );
    let (ops, per_op) = steady(&file, Duration::from_secs(2));
    println!("steady SQPOLL read4k: {ops} ops in 2 s");
    println!("syscalls_per_op: {per_op:.5}");
    std::fs::remove_file(path).unwrap();
}
