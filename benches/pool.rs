//! `pool`: acquiring and releasing a message from `regio_pool::MessagePool` against a pool built
//! on crossbeam's `ArrayQueue` and one built on `Mutex<Vec<_>>`, with 1 thread and with 2
//! threads sharing the pool; plus bulk acquire/release and the async round trips. Prints the
//! `COMPARE pool_acq_rel_1t` and `pool_acq_rel_2t` lines (see the README, "Benchmarks"), and `pool_xthread`: one
//! thread acquires and another releases, as when completions are reaped on another thread. The
//! relay passes each buffer through a bounded queue of its own, whose cost every peer's figure
//! includes; `pool_xthread_relay_only` is that relay passing a plain value, with no pool.
//! `pool_xthread_batch32` is the same relay passing 32 buffers at a time, as a thread that
//! reaps a CQ releases the buffers of a whole reap: the queue's cost is then spread over 32
//! buffers, and the pools' own cross-thread paths make most of the figure.
//!
//! Run: `cargo bench --bench pool` (add `-- --warm-up-time 1 --measurement-time 3` for a quick
//! run).
//!
//! For instruction counts, which stay put however loaded the machine is, name a loop in
//! `REGIO_BENCH_ICOUNT` (`acq_rel`, `bulk_64`, `xthread` and `handover`, each also with the
//! suffix `_arrayqueue` or `_mutex` for a peer, optionally followed by `:<iterations>`); the
//! binary then runs just that loop and exits. See `docs/performance.md`.

#[allow(dead_code)] // shared with the other benches; each uses part of it
mod support;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{measurement::WallTime, BenchmarkGroup, Criterion};
use crossbeam_queue::ArrayQueue;
use regio_pool::{MessagePool, PoolBuilder};
use support::{timed, Background, Samples};

const BUFS: u32 = 1024;
const BUF_SIZE: usize = 4096;

/// The memory every peer hands out: `BUFS` buffers of `BUF_SIZE` bytes.
struct Slab {
    bytes: Box<[u8]>,
}

impl Slab {
    fn new() -> Self {
        Self {
            bytes: vec![0; BUFS as usize * BUF_SIZE].into_boxed_slice(),
        }
    }

    fn buf(&self, index: u32) -> *const u8 {
        self.bytes[index as usize * BUF_SIZE..].as_ptr()
    }
}

/// A buffer pool on crossbeam's bounded lock-free MPMC queue of indices.
struct QueuePool {
    free: ArrayQueue<u32>,
    slab: Slab,
}

/// A buffer from [`QueuePool`]; goes back on drop.
struct QueueBuf<'a> {
    pool: &'a QueuePool,
    index: u32,
}

impl QueuePool {
    fn new() -> Self {
        let free = ArrayQueue::new(BUFS as usize);
        for i in 0..BUFS {
            free.push(i).expect("sized for every buffer");
        }
        Self {
            free,
            slab: Slab::new(),
        }
    }

    fn acquire(&self) -> Option<QueueBuf<'_>> {
        self.free.pop().map(|index| QueueBuf { pool: self, index })
    }
}

impl QueueBuf<'_> {
    fn as_ptr(&self) -> *const u8 {
        self.pool.slab.buf(self.index)
    }
}

impl Drop for QueueBuf<'_> {
    fn drop(&mut self) {
        self.pool
            .free
            .push(self.index)
            .expect("only taken indices come back");
    }
}

/// A buffer pool on a mutex-protected stack of indices.
struct LockPool {
    free: Mutex<Vec<u32>>,
    slab: Slab,
}

/// A buffer from [`LockPool`]; goes back on drop.
struct LockBuf<'a> {
    pool: &'a LockPool,
    index: u32,
}

impl LockPool {
    fn new() -> Self {
        Self {
            free: Mutex::new((0..BUFS).collect()),
            slab: Slab::new(),
        }
    }

    fn acquire(&self) -> Option<LockBuf<'_>> {
        let index = self.free.lock().unwrap().pop()?;
        Some(LockBuf { pool: self, index })
    }
}

impl LockBuf<'_> {
    fn as_ptr(&self) -> *const u8 {
        self.pool.slab.buf(self.index)
    }
}

impl Drop for LockBuf<'_> {
    fn drop(&mut self) {
        self.pool.free.lock().unwrap().push(self.index);
    }
}

fn regio_pool() -> Arc<MessagePool> {
    Arc::new(
        PoolBuilder::new()
            .class(BUF_SIZE as u32, BUFS)
            .build()
            .expect("a 4 MiB pool"),
    )
}

fn acq_rel(c: &mut Criterion, samples: &Samples, threads: usize) {
    let group_name = format!("pool_acq_rel_{threads}t");
    let mut group = c.benchmark_group(&group_name);
    let others = threads - 1;
    // Each cycle acquires one buffer and releases it again at the end of the statement.
    let pool = regio_pool();
    let cycle = move || {
        pool.try_acquire()
            .expect("never exhausted")
            .as_ptr()
            .cast_const()
    };
    contended(samples, &mut group, &group_name, "regio", others, cycle);
    let queue = QueuePool::new();
    let cycle = move || queue.acquire().expect("never exhausted").as_ptr();
    contended(
        samples,
        &mut group,
        &group_name,
        "arrayqueue",
        others,
        cycle,
    );
    let lock = LockPool::new();
    let cycle = move || lock.acquire().expect("never exhausted").as_ptr();
    contended(samples, &mut group, &group_name, "mutex_vec", others, cycle);
    group.finish();
}

/// Times `cycle` on this thread while `others` threads run it too.
fn contended(
    samples: &Samples,
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    name: &str,
    others: usize,
    cycle: impl Fn() -> *const u8 + Send + Sync + 'static,
) {
    let cycle = Arc::new(cycle);
    let peer = Arc::clone(&cycle);
    let _others = Background::spawn(
        others,
        || (),
        move |_| {
            for _ in 0..64 {
                black_box(peer());
            }
        },
    );
    samples.bench(group, group_name, name, |iters| {
        timed(iters, || {
            black_box(cycle());
        })
    });
}

/// How many buffers [`bulk`] holds at once.
const BULK: usize = 64;

/// 64 acquires then 64 releases per iteration: the path that moves whole batches between the
/// magazines and the shared store.
fn bulk(c: &mut Criterion, samples: &Samples) {
    let group_name = "pool_bulk_64";
    let mut group = c.benchmark_group(group_name);

    let pool = regio_pool();
    bulk_peer(samples, &mut group, group_name, "regio", || {
        pool.try_acquire().ok()
    });
    let queue = QueuePool::new();
    bulk_peer(samples, &mut group, group_name, "arrayqueue", || {
        queue.acquire()
    });
    let lock = LockPool::new();
    bulk_peer(samples, &mut group, group_name, "mutex_vec", || {
        lock.acquire()
    });
    group.finish();
}

/// Times one peer in [`bulk`]: `BULK` acquires, then `BULK` releases, per iteration.
fn bulk_peer<B>(
    samples: &Samples,
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    name: &str,
    acquire: impl Fn() -> Option<B>,
) {
    let mut held = Vec::with_capacity(BULK);
    samples.bench(group, group_name, name, |iters| {
        timed(iters, || {
            held.extend((0..BULK).map(|_| acquire().expect("never exhausted")));
            black_box(&held);
            held.clear();
        })
    });
}

/// How many buffers the relay's channel holds.
const RELAY_DEPTH: usize = 256;

/// How many buffers one hand-over of `pool_xthread_batch32` carries: a CQ reap's worth.
const RELAY_BATCH: usize = 32;

/// One thread acquires and passes the buffers, `N` at a time, through a bounded queue (of
/// `RELAY_DEPTH` buffers) to a second thread, which drops them. Returns the producer's time for
/// `iters` buffers. The two threads run on two different CPUs ([`RelayCpus`]), and both sides
/// yield while they wait, so that an oversubscribed machine measures the pools rather than the
/// scheduler.
fn relay<const N: usize, B: Send>(iters: u64, acquire: impl Fn() -> Option<B> + Sync) -> Duration {
    let units = iters.div_ceil(N as u64);
    let channel = ArrayQueue::<[B; N]>::new(RELAY_DEPTH / N);
    let cpus = RelayCpus::get();
    let took = thread::scope(|s| {
        let consumer = s.spawn(|| {
            let _pinned = cpus.map(|cpus| Pinned::to(cpus.releaser));
            let mut left = units;
            while left > 0 {
                match channel.pop() {
                    Some(unit) => {
                        drop(unit);
                        left -= 1;
                    }
                    None => thread::yield_now(),
                }
            }
        });
        let _pinned = cpus.map(|cpus| Pinned::to(cpus.acquirer));
        let start = Instant::now();
        for _ in 0..units {
            let mut unit = std::array::from_fn(|_| loop {
                match acquire() {
                    Some(buf) => break buf,
                    None => thread::yield_now(),
                }
            });
            while let Err(back) = channel.push(unit) {
                unit = back;
                thread::yield_now();
            }
        }
        consumer.join().expect("the consumer panicked");
        start.elapsed()
    });
    took.mul_f64(iters as f64 / (units * N as u64) as f64)
}

/// The two CPUs the relay's threads run on: the first two this process may use.
///
/// Left to the scheduler, the two threads sometimes share one CPU, taking turns at each yield,
/// and then every peer runs two to three times slower than when they do not; which of the two
/// a run gets can change from one second to the next, so a peer measured in one state and the
/// next peer in the other compared nothing. Pinned, they always cross between CPUs, as a reaping
/// thread and a submitting thread of a busy runtime do.
#[derive(Clone, Copy)]
struct RelayCpus {
    acquirer: usize,
    releaser: usize,
}

impl RelayCpus {
    /// The two CPUs, or `None` on a machine (or in a CPU set) of one CPU, where the threads
    /// share it unpinned.
    fn get() -> Option<Self> {
        let mut allowed = Pinned::current().into_iter().flatten();
        Some(RelayCpus {
            acquirer: allowed.next()?,
            releaser: allowed.next()?,
        })
    }
}

/// The calling thread pinned to one CPU until dropped; then it may run where it could before.
struct Pinned {
    before: libc::cpu_set_t,
}

impl Pinned {
    /// The CPUs the calling thread may run on, in ascending order.
    fn current() -> Option<impl Iterator<Item = usize>> {
        let set = Self::mask()?;
        let allowed = move |&cpu: &usize| {
            // SAFETY: `CPU_ISSET` only reads the set, and `cpu` is below `CPU_SETSIZE`.
            unsafe { libc::CPU_ISSET(cpu, &set) }
        };
        Some((0..libc::CPU_SETSIZE as usize).filter(allowed))
    }

    fn mask() -> Option<libc::cpu_set_t> {
        // SAFETY: an all-zero `cpu_set_t` is the empty set, and the call writes at most
        // `size_of::<cpu_set_t>()` bytes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let got = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (got == 0).then_some(set)
        }
    }

    fn to(cpu: usize) -> Option<Self> {
        let before = Self::mask()?;
        // SAFETY: as in `mask`; `CPU_SET` writes one bit of the set, `cpu` is below
        // `CPU_SETSIZE` (it came from `current`).
        let pinned = unsafe {
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only)
        };
        (pinned == 0).then_some(Pinned { before })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: `before` is a set `sched_getaffinity` filled in.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}

/// One group of cross-thread runs: every peer, and the relay alone, passing `N` buffers at a
/// time.
fn cross_thread<const N: usize>(c: &mut Criterion, samples: &Samples, group_name: &str) {
    let mut group = c.benchmark_group(group_name);
    let pool = regio_pool();
    samples.bench(&mut group, group_name, "regio", |iters| {
        relay::<N, _>(iters, || pool.try_acquire().ok())
    });
    let queue = QueuePool::new();
    samples.bench(&mut group, group_name, "arrayqueue", |iters| {
        relay::<N, _>(iters, || queue.acquire())
    });
    let lock = LockPool::new();
    samples.bench(&mut group, group_name, "mutex_vec", |iters| {
        relay::<N, _>(iters, || lock.acquire())
    });
    // The relay alone, passing a value of a message's size that belongs to no pool: the floor
    // that every pool's figure above includes.
    samples.bench(&mut group, group_name, "relay_only", |iters| {
        relay::<N, _>(iters, || Some([0u64; 2]))
    });
    group.finish();
}

/// How many rounds the cross-thread `COMPARE` lines take ([`cross_thread_rounds`]).
const ROUNDS: usize = 31;

/// How many buffers each peer relays in one round.
const ROUND_BUFFERS: u64 = 100_000;

/// The cross-thread `COMPARE` line of `group_name`, from interleaved rounds: each round relays
/// [`ROUND_BUFFERS`] buffers, `N` at a time, through every peer in turn, one right after the
/// other (the order rotating from round to round), and takes the ratio of that round. The line
/// gives the median time of each peer and the median of the rounds' ratios; a second line gives
/// the ratios' spread.
///
/// On a virtual machine the cost of crossing between two CPUs can change by a factor of three
/// from one second to the next, for every peer alike (see docs/performance.md). Criterion's
/// groups run one peer for seconds, then the next, so their medians may compare two different
/// machines; peers timed within milliseconds of each other share one.
fn cross_thread_rounds<const N: usize>(group_name: &str) {
    let pool = regio_pool();
    let queue = QueuePool::new();
    let lock = LockPool::new();
    let peers: [&dyn Fn() -> f64; 3] = [
        &|| per_buffer_ns(relay::<N, _>(ROUND_BUFFERS, || pool.try_acquire().ok())),
        &|| per_buffer_ns(relay::<N, _>(ROUND_BUFFERS, || queue.acquire())),
        &|| per_buffer_ns(relay::<N, _>(ROUND_BUFFERS, || lock.acquire())),
    ];
    let mut times = [const { Vec::new() }; 3];
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut ns = [0.0; 3];
        for k in 0..peers.len() {
            let peer = (round + k) % peers.len();
            ns[peer] = peers[peer]();
        }
        for (all, ns) in times.iter_mut().zip(ns) {
            all.push(ns);
        }
        ratios.push(ns[1].min(ns[2]) / ns[0]);
    }
    let [regio, arrayqueue, mutex_vec] = times.map(|mut t| quantiles(&mut t)[2]);
    let spread = quantiles(&mut ratios);
    println!(
        "COMPARE {group_name}: regio={regio:.2}ns arrayqueue={arrayqueue:.2}ns \
         mutex_vec={mutex_vec:.2}ns ratio={:.2}",
        spread[2]
    );
    println!(
        "{group_name}_ratio_spread: min={:.2} q1={:.2} median={:.2} q3={:.2} max={:.2} \
         ({ROUNDS} rounds of {ROUND_BUFFERS} buffers)",
        spread[0], spread[1], spread[2], spread[3], spread[4]
    );
}

fn per_buffer_ns(took: Duration) -> f64 {
    took.as_nanos() as f64 / ROUND_BUFFERS as f64
}

/// The minimum, lower quartile, median, upper quartile and maximum of `values`.
fn quantiles(values: &mut [f64]) -> [f64; 5] {
    values.sort_by(f64::total_cmp);
    let at = |q: usize| values[(values.len() - 1) * q / 4];
    [at(0), at(1), at(2), at(3), at(4)]
}

/// `acquire().await` when an element is free (one poll), and the hand-off to a waiting task
/// (poll pending, release, poll ready).
fn async_round_trip(c: &mut Criterion, samples: &Samples) {
    let group_name = "pool_async";
    let mut group = c.benchmark_group(group_name);
    let mut cx = Context::from_waker(Waker::noop());

    let pool = regio_pool();
    samples.bench(&mut group, group_name, "ready", |iters| {
        timed(iters, || {
            let fut = pin!(pool.acquire());
            let Poll::Ready(msg) = fut.poll(&mut cx) else {
                panic!("an element is free");
            };
            black_box(msg.as_ptr());
        })
    });

    let single = PoolBuilder::new()
        .class(BUF_SIZE as u32, 1)
        .build()
        .expect("a one-buffer pool");
    let mut held = Some(single.try_acquire().expect("one free"));
    samples.bench(&mut group, group_name, "handoff", |iters| {
        timed(iters, || {
            let mut fut = pin!(single.acquire());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            drop(held.take());
            let Poll::Ready(msg) = fut.poll(&mut cx) else {
                panic!("the release was handed to the waiter");
            };
            held = Some(msg);
        })
    });
    group.finish();
}

/// The loops `REGIO_BENCH_ICOUNT` names, each in a function of its own (`pool::icount_<loop>`) so
/// that callgrind can count it alone (`--toggle-collect`); each runs its body `n` times. Each
/// peer's loop has the same body as regio's.
#[inline(never)]
fn icount_acq_rel(pool: &MessagePool, n: u64) {
    repeat(n, || {
        black_box(pool.try_acquire().expect("never exhausted").as_ptr());
    });
}

#[inline(never)]
fn icount_acq_rel_arrayqueue(queue: &QueuePool, n: u64) {
    repeat(n, || {
        black_box(queue.acquire().expect("never exhausted").as_ptr());
    });
}

#[inline(never)]
fn icount_acq_rel_mutex(lock: &LockPool, n: u64) {
    repeat(n, || {
        black_box(lock.acquire().expect("never exhausted").as_ptr());
    });
}

#[inline(never)]
fn icount_bulk_64(pool: &MessagePool, n: u64) {
    bulk_loop(n, || pool.try_acquire().expect("never exhausted"));
}

#[inline(never)]
fn icount_bulk_64_arrayqueue(queue: &QueuePool, n: u64) {
    bulk_loop(n, || queue.acquire().expect("never exhausted"));
}

#[inline(never)]
fn icount_bulk_64_mutex(lock: &LockPool, n: u64) {
    bulk_loop(n, || lock.acquire().expect("never exhausted"));
}

/// Runs `body` `n` times.
#[inline(always)]
fn repeat(n: u64, body: impl Fn()) {
    for _ in 0..n {
        body();
    }
}

/// `n` rounds of [`BULK`] acquires, then [`BULK`] releases.
#[inline(always)]
fn bulk_loop<B>(n: u64, acquire: impl Fn() -> B) {
    let mut held = Vec::with_capacity(BULK);
    for _ in 0..n {
        held.extend((0..BULK).map(|_| acquire()));
        black_box(&held);
        held.clear();
    }
}

#[inline(never)]
fn icount_xthread(pool: &MessagePool, n: u64) {
    relay::<1, _>(n, || pool.try_acquire().ok());
}

#[inline(never)]
fn icount_xthread_arrayqueue(queue: &QueuePool, n: u64) {
    relay::<1, _>(n, || queue.acquire());
}

#[inline(never)]
fn icount_xthread_mutex(lock: &LockPool, n: u64) {
    relay::<1, _>(n, || lock.acquire());
}

/// How many buffers one hand-over of [`handover`] carries.
const HANDOVER: usize = 256;

/// `n` buffers (rounded up to whole hand-overs) acquired on this thread and released on another,
/// [`HANDOVER`] at a time, through blocking channels: a cross-thread loop whose instruction count
/// does not depend on how the two threads interleave, when counted in [`handover_acquire`] and
/// [`handover_release`] alone.
fn handover<B: Send>(n: u64, acquire: impl Fn() -> Option<B>) {
    let (to_releaser, full) = mpsc::sync_channel::<Vec<B>>(1);
    let (to_acquirer, emptied) = mpsc::sync_channel::<Vec<B>>(1);
    thread::scope(|s| {
        s.spawn(move || {
            for mut held in full {
                handover_release(&mut held);
                if to_acquirer.send(held).is_err() {
                    break;
                }
            }
        });
        let mut held = Vec::with_capacity(HANDOVER);
        for _ in 0..n.div_ceil(HANDOVER as u64) {
            handover_acquire(&acquire, &mut held);
            to_releaser.send(held).expect("the releaser runs");
            held = emptied.recv().expect("the releaser hands the vector back");
        }
        drop(to_releaser);
    });
}

#[inline(never)]
fn handover_acquire<B>(acquire: &impl Fn() -> Option<B>, held: &mut Vec<B>) {
    held.extend((0..HANDOVER).map(|_| acquire().expect("never exhausted")));
}

#[inline(never)]
fn handover_release<B>(held: &mut Vec<B>) {
    held.clear();
}

/// Runs the loop `spec` (`<loop>[:<iterations>]`) names; see the module docs.
fn icount(spec: &str) {
    let (name, n) = support::icount_spec(spec);
    let pool = regio_pool();
    let queue = QueuePool::new();
    let lock = LockPool::new();
    match name {
        "acq_rel" => icount_acq_rel(&pool, n),
        "acq_rel_arrayqueue" => icount_acq_rel_arrayqueue(&queue, n),
        "acq_rel_mutex" => icount_acq_rel_mutex(&lock, n),
        "bulk_64" => icount_bulk_64(&pool, n),
        "bulk_64_arrayqueue" => icount_bulk_64_arrayqueue(&queue, n),
        "bulk_64_mutex" => icount_bulk_64_mutex(&lock, n),
        "xthread" => icount_xthread(&pool, n),
        "xthread_arrayqueue" => icount_xthread_arrayqueue(&queue, n),
        "xthread_mutex" => icount_xthread_mutex(&lock, n),
        "handover" => handover(n, || pool.try_acquire().ok()),
        "handover_arrayqueue" => handover(n, || queue.acquire()),
        "handover_mutex" => handover(n, || lock.acquire()),
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
    acq_rel(&mut c, &samples, 1);
    acq_rel(&mut c, &samples, 2);
    bulk(&mut c, &samples);
    cross_thread::<1>(&mut c, &samples, "pool_xthread");
    cross_thread::<RELAY_BATCH>(&mut c, &samples, "pool_xthread_batch32");
    async_round_trip(&mut c, &samples);
    c.final_summary();

    for t in ["pool_acq_rel_1t", "pool_acq_rel_2t", "pool_bulk_64"] {
        let peers = [
            ("arrayqueue", format!("{t}/arrayqueue")),
            ("mutex_vec", format!("{t}/mutex_vec")),
        ];
        let peers: Vec<(&str, &str)> = peers.iter().map(|(l, k)| (*l, k.as_str())).collect();
        samples.compare_times(t, &format!("{t}/regio"), &peers);
    }
    // The cross-thread lines come from interleaved rounds, run after the criterion groups if the
    // command line's filter let those run.
    if samples.median_ns("pool_xthread/regio").is_some() {
        cross_thread_rounds::<1>("pool_xthread");
    }
    if samples.median_ns("pool_xthread_batch32/regio").is_some() {
        cross_thread_rounds::<RELAY_BATCH>("pool_xthread_batch32");
    }
    samples.report("pool_xthread_relay_only", "pool_xthread/relay_only");
    samples.report(
        "pool_xthread_batch32_relay_only",
        "pool_xthread_batch32/relay_only",
    );
    samples.report("pool_async_ready_1t", "pool_async/ready");
    samples.report("pool_async_handoff_1t", "pool_async/handoff");
}
