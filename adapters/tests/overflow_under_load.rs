//! An overflowing CQ under hostile use: lost or duplicated completions, stalled waits without a
//! timeout, ring and work-queue resizes while the CQ overflows, wrong statistics, single-issuer
//! mode. (Every reap that finds the CQ empty reads the kernel's `IORING_SQ_CQ_OVERFLOW` flag.)
//!
//! Every adapter here has a CQ of 8 entries and work queues with far more credit, so the CQ
//! overflows over and over. No wait here can hang the test: waits without a timeout run on a
//! thread of their own under a watchdog that fails the test after a stall.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{config, TestBuf};
use regio_adapters::{Adapter, Completion, CqSet, Error, Op, PostError, Target, WorkQueue};

/// The longest a reaper may go without progress before the test calls it stalled.
const STALL: Duration = Duration::from_secs(10);

fn overflowing(sqpoll: bool, rings: usize) -> Option<Adapter<TestBuf>> {
    common::tiny_cq_adapter(config(rings, sqpoll))
}

/// An [`overflowing`] adapter of one ring, with a work queue of 64 credits on it.
fn overflowing_queue(sqpoll: bool) -> Option<(Adapter<TestBuf>, WorkQueue<TestBuf>)> {
    let adapter = overflowing(sqpoll, 1)?;
    let wq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    Some((adapter, wq))
}

/// Posts NOPs with cookies `base..base + total` to `wq`, retrying while the queue is out of
/// credit or the SQ is full, until `stop`. Returns how many it posted.
fn post_all(wq: &WorkQueue<TestBuf>, base: u64, total: u64, stop: &AtomicBool) -> u64 {
    let mut i = 0;
    // Relaxed: the flag only ends the posters' loops; the joins order the rest.
    while i < total && !stop.load(Ordering::Relaxed) {
        match wq.post(Op::nop(base + i)) {
            Ok(()) => i += 1,
            Err(PostError::Closed(_)) => panic!("queue closed"),
            Err(_) => std::thread::yield_now(),
        }
    }
    i
}

/// [`post_all`] on a thread of its own; the thread returns how many it posted.
fn spawn_poster(
    wq: WorkQueue<TestBuf>,
    base: u64,
    total: u64,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let stop = Arc::clone(stop);
    std::thread::spawn(move || post_all(&wq, base, total, &stop))
}

/// Two work queues of 64 credits on `adapter`'s first ring: one for the test to post to, and
/// one that a poster thread fills with `total` NOPs (cookies from 1 000 000 on) until `stop`.
fn own_and_a_poster(
    adapter: &Adapter<TestBuf>,
    total: u64,
    stop: &Arc<AtomicBool>,
) -> (WorkQueue<TestBuf>, std::thread::JoinHandle<u64>) {
    let own = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    let other = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    (own, spawn_poster(other, 1_000_000, total, stop))
}

/// The end of a test with [`own_and_a_poster`]: `cookies` holds every completion of the
/// `own` posts (cookies from 0) and of the poster's (from 1 000 000) once, each given as
/// (posted, meant to post), and the CQ overflowed on the way.
fn check_own_and_others(
    adapter: &Adapter<TestBuf>,
    cookies: &[u64],
    (own, own_total): (u64, u64),
    (others, others_total): (u64, u64),
) {
    let stats = adapter.stats();
    assert_eq!(
        cookies.len() as u64,
        own + others,
        "stalled or lost: {stats:?}"
    );
    check_exactly_once(
        cookies,
        (0..own_total).chain(1_000_000..1_000_000 + others_total),
    );
    assert!(stats.cq_overflows > 0, "the CQ never overflowed: {stats:?}");
}

/// Checks that `cookies` are exactly `expected`, each once.
fn check_exactly_once(cookies: &[u64], expected: impl Iterator<Item = u64>) {
    let mut seen = HashSet::new();
    for &c in cookies {
        assert!(seen.insert(c), "cookie {c} reaped twice");
    }
    let expected: HashSet<u64> = expected.collect();
    let missing = expected.difference(&seen).count();
    let extra = seen.difference(&expected).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "missing or unexpected completions"
    );
}

/// Reaps with `wait` (a wait with no timeout, for a few completions at a time) until `total`
/// completions came, counting them in `progress`; returns their cookies.
fn reap_all(
    total: u64,
    progress: &AtomicU64,
    mut wait: impl FnMut(&mut Vec<Completion<TestBuf>>) -> usize,
) -> Vec<u64> {
    let mut cookies = Vec::new();
    let mut out = Vec::new();
    while (cookies.len() as u64) < total {
        out.clear();
        let n = wait(&mut out);
        cookies.extend(out.iter().map(|c| c.cookie));
        // Relaxed: a statistic for the watchdog.
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    cookies
}

/// [`reap_all`] on a thread of its own, which sends the cookies on the returned channel; the
/// counter is its progress, for [`cookies_or_stall`].
fn spawn_waiter(
    total: u64,
    wait: impl FnMut(&mut Vec<Completion<TestBuf>>) -> usize + Send + 'static,
) -> (
    std::thread::JoinHandle<()>,
    Arc<AtomicU64>,
    mpsc::Receiver<Vec<u64>>,
) {
    let progress = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let _ = done_tx.send(reap_all(total, &progress, wait));
        })
    };
    (waiter, progress, done_rx)
}

/// The watchdog: the cookies the waiter sends on `done`, or a panic with `stalled`'s message
/// (given the count reaped so far) once `progress` stayed put for [`STALL`].
fn cookies_or_stall(
    done: &mpsc::Receiver<Vec<u64>>,
    progress: &AtomicU64,
    stalled: impl FnOnce(u64) -> String,
) -> Vec<u64> {
    let mut last = (0, Instant::now());
    loop {
        if let Ok(cookies) = done.recv_timeout(Duration::from_millis(100)) {
            return cookies;
        }
        // Relaxed: see `reap_all`.
        let now = progress.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            panic!("{}", stalled(now));
        }
    }
}

/// One thread posts `TOTAL` NOPs to a work queue with far more credit than its ring's CQ holds,
/// while this one reaps a few at a time: the CQ overflows over and over, and the kernel decides
/// that it is full against a head the reaper may already have moved past. Every completion must
/// still arrive; before the reap read the overflow flag on every empty CQ, the ring stalled
/// within milliseconds (with SQPOLL), its CQEs parked in the kernel's overflow list for good.
fn overflow_under_a_concurrent_reaper(sqpoll: bool) {
    const TOTAL: u64 = 20_000;
    let Some((adapter, wq)) = overflowing_queue(sqpoll) else {
        return;
    };
    let cq = wq.ring();
    let stop = Arc::new(AtomicBool::new(false));
    let poster = spawn_poster(wq, 0, TOTAL, &stop);
    let mut out = Vec::new();
    let mut reaped = 0u64;
    let mut last_progress = Instant::now();
    while reaped < TOTAL && last_progress.elapsed() < STALL {
        out.clear();
        let n = cq.reap(&mut out, 3).unwrap();
        if n > 0 {
            reaped += n as u64;
            last_progress = Instant::now();
        }
    }
    // Relaxed: the flag only ends the posters' loops; the joins order the rest.
    stop.store(true, Ordering::Relaxed);
    let posted = poster.join().unwrap();
    let stats = adapter.stats();
    assert_eq!(
        reaped, posted,
        "the reap stalled: {posted} posted, {reaped} reaped; {stats:?}"
    );
    assert_eq!(posted, TOTAL);
    assert!(stats.cq_overflows > 0, "the CQ never overflowed: {stats:?}");
}

#[test]
fn a_cq_overflowing_under_a_concurrent_reaper_loses_nothing_with_sqpoll() {
    overflow_under_a_concurrent_reaper(true);
}

#[test]
fn a_cq_overflowing_under_a_concurrent_reaper_loses_nothing_without_sqpoll() {
    overflow_under_a_concurrent_reaper(false);
}

/// `Ring::wait` with no timeout, on a thread of its own, while another thread posts into an
/// overflowing CQ: every wait must return (an overflow with an empty CQ must wake the waiter
/// or be flushed by the wait's reap), and every completion must arrive once. A watchdog fails
/// the test if the waiter makes no progress for `STALL`.
fn untimed_wait_on_an_overflowing_cq(sqpoll: bool) {
    const TOTAL: u64 = 20_000;
    let Some((adapter, wq)) = overflowing_queue(sqpoll) else {
        return;
    };
    let cq = wq.ring();
    let stop = Arc::new(AtomicBool::new(false));
    // Small batches: the CQ keeps overflowing while we wait.
    let (waiter, progress, done_rx) =
        spawn_waiter(TOTAL, move |out| cq.wait(out, 3, None).unwrap());
    let poster = spawn_poster(wq, 0, TOTAL, &stop);
    let cookies = cookies_or_stall(&done_rx, &progress, |now| {
        // Relaxed: the flag only ends the posters' loops; the joins order the rest.
        stop.store(true, Ordering::Relaxed);
        format!("Ring::wait(None) stalled at {now}; {:?}", adapter.stats())
    });
    waiter.join().unwrap();
    let posted = poster.join().unwrap();
    assert_eq!(posted, TOTAL);
    check_exactly_once(&cookies, 0..TOTAL);
    let stats = adapter.stats();
    assert!(stats.cq_overflows > 0, "the CQ never overflowed: {stats:?}");
    assert_eq!(stats.completed, TOTAL, "{stats:?}");
}

#[test]
fn untimed_wait_on_an_overflowing_cq_returns_with_sqpoll() {
    untimed_wait_on_an_overflowing_cq(true);
}

#[test]
fn untimed_wait_on_an_overflowing_cq_returns_without_sqpoll() {
    untimed_wait_on_an_overflowing_cq(false);
}

/// `CqSet::wait` with no timeout over two CQs that both overflow, each fed by its own poster:
/// the set's wait must keep returning and deliver every completion once.
#[test]
fn untimed_cqset_wait_over_two_overflowing_cqs() {
    const EACH: u64 = 10_000;
    let Some(adapter) = overflowing(true, 2) else {
        return;
    };
    let a = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    let b = adapter.work_queue(1, Target::Fd(-1), 64, 64).unwrap();
    let set = CqSet::new([a.ring(), b.ring()]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (waiter, progress, done_rx) =
        spawn_waiter(2 * EACH, move |out| set.wait(out, 5, None).unwrap());
    let posters: Vec<_> = [(a, 0), (b, 1_000_000)]
        .into_iter()
        .map(|(wq, base)| spawn_poster(wq, base, EACH, &stop))
        .collect();
    let cookies = cookies_or_stall(&done_rx, &progress, |now| {
        // Relaxed: the flag only ends the posters' loops; the joins order the rest.
        stop.store(true, Ordering::Relaxed);
        format!("CqSet::wait(None) stalled at {now}; {:?}", adapter.stats())
    });
    waiter.join().unwrap();
    for p in posters {
        assert_eq!(p.join().unwrap(), EACH);
    }
    check_exactly_once(&cookies, (0..EACH).chain(1_000_000..1_000_000 + EACH));
    assert!(adapter.stats().cq_overflows > 0);
}

/// The CQ is resized (`Adapter::resize_completion_queue`, to 16, 32, 8, ...) again and again
/// while a poster keeps it overflowing and a reaper drains it a few at a time; the work queue's
/// depth changes too (`resize_work_queue`). The retiring ring may hold CQEs in its overflow
/// list when it is swapped out: none may be lost, none reaped twice, the reaper may not stall,
/// and the counters must add up.
fn resizes_while_the_cq_overflows(sqpoll: bool) {
    const TOTAL: u64 = 20_000;
    let Some(adapter) = overflowing(sqpoll, 1) else {
        return;
    };
    let adapter = Arc::new(adapter);
    let wq = Arc::new(adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap());
    let cq = wq.ring();
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let (wq, stop) = (Arc::clone(&wq), Arc::clone(&stop));
        std::thread::spawn(move || post_all(&wq, 0, TOTAL, &stop))
    };
    let resizer = {
        let (adapter, wq, stop) = (Arc::clone(&adapter), Arc::clone(&wq), Arc::clone(&stop));
        std::thread::spawn(move || {
            let sizes = [16u32, 32, 8, 64, 8];
            let (mut ok, mut refused) = (0u32, 0u32);
            let until = Instant::now() + Duration::from_secs(8);
            for k in 0..400usize {
                // Relaxed: the flag only ends the posters' loops; the joins order the rest.
                if stop.load(Ordering::Relaxed) || Instant::now() > until {
                    break;
                }
                match adapter.resize_completion_queue(0, sizes[k % sizes.len()]) {
                    Ok(()) => ok += 1,
                    Err(Error::CqTooSmall { .. } | Error::ResizeDraining { .. }) => refused += 1,
                    Err(e) => panic!("resize {k}: {e}"),
                }
                let depth = if k % 2 == 0 { 4 } else { 64 };
                adapter.resize_work_queue(&wq, depth, depth);
                std::thread::sleep(Duration::from_millis(2));
            }
            adapter.resize_work_queue(&wq, 64, 64);
            (ok, refused)
        })
    };
    let mut out: Vec<Completion<TestBuf>> = Vec::new();
    let mut cookies = Vec::new();
    let mut last_progress = Instant::now();
    let mut max_gap = Duration::ZERO;
    while (cookies.len() as u64) < TOTAL && last_progress.elapsed() < STALL {
        out.clear();
        let n = cq.reap(&mut out, 3).unwrap();
        if n > 0 {
            cookies.extend(out.iter().map(|c| c.cookie));
            max_gap = max_gap.max(last_progress.elapsed());
            last_progress = Instant::now();
        }
    }
    // Relaxed: the flag only ends the posters' loops; the joins order the rest.
    stop.store(true, Ordering::Relaxed);
    let posted = poster.join().unwrap();
    let (ok, refused) = resizer.join().unwrap();
    let stats = adapter.stats();
    assert_eq!(
        cookies.len() as u64,
        posted,
        "the reap stalled or lost completions ({ok} resizes, {refused} refused); {stats:?}"
    );
    assert_eq!(posted, TOTAL);
    check_exactly_once(&cookies, 0..TOTAL);
    assert!(ok > 0, "no resize went through ({refused} refused)");
    assert_eq!(stats.completed, TOTAL, "{stats:?}");
    eprintln!("{ok} resizes, {refused} refused, longest gap between reaps {max_gap:?}; {stats:?}");
}

#[test]
fn resizes_while_the_cq_overflows_lose_nothing_with_sqpoll() {
    resizes_while_the_cq_overflows(true);
}

#[test]
fn resizes_while_the_cq_overflows_lose_nothing_without_sqpoll() {
    resizes_while_the_cq_overflows(false);
}

/// Single-issuer mode: the owner thread posts bursts far beyond the CQ (64 credits, CQ of 8)
/// and reaps with small `max`; another thread posts through the inbox too. Every completion
/// must arrive once, and a `Ring::wait` with a timeout must never come back empty-handed while
/// completions are owed for long.
#[test]
fn single_issuer_overflowing_cq_loses_nothing() {
    const OWN: u64 = 10_000;
    const OTHER: u64 = 5_000;
    let Some(adapter) = common::tiny_cq_adapter::<TestBuf>(config(1, false).single_issuer(true))
    else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (own, poster) = own_and_a_poster(&adapter, OTHER, &stop);
    let cq = own.ring();
    cq.bind_owner().unwrap();
    let mut out: Vec<Completion<TestBuf>> = Vec::new();
    let mut cookies = Vec::new();
    let mut posted = 0u64;
    let mut last_progress = Instant::now();
    while (cookies.len() as u64) < OWN + OTHER && last_progress.elapsed() < STALL {
        // A burst: as many as the credit allows.
        while posted < OWN {
            match own.post(Op::nop(posted)) {
                Ok(()) => posted += 1,
                Err(PostError::Closed(_)) => panic!("queue closed"),
                Err(_) => break,
            }
        }
        out.clear();
        let n = if posted % 2 == 0 {
            cq.reap(&mut out, 3).unwrap()
        } else {
            cq.wait(&mut out, 3, Some(Duration::from_millis(200)))
                .unwrap()
        };
        if n > 0 {
            cookies.extend(out.iter().map(|c| c.cookie));
            last_progress = Instant::now();
        }
    }
    // Relaxed: the flag only ends the posters' loops; the joins order the rest.
    stop.store(true, Ordering::Relaxed);
    let other_posted = poster.join().unwrap();
    check_own_and_others(&adapter, &cookies, (posted, OWN), (other_posted, OTHER));
}

/// A `Batch` owns the ring and posts bursts of NOPs far beyond the CQ (64 credits, CQ of 8),
/// commits, and reaps one completion at a time through the batch (so most reaps stop at `max`
/// with the CQ just emptied and the overflow list full); another thread posts to a second
/// work queue of the same CQ through the inbox meanwhile. Every completion must arrive once,
/// the counters must add up, and the loop may not stall.
fn batch_reaps_one_at_a_time_from_an_overflowing_cq(sqpoll: bool) {
    const OWN: u64 = 8_000;
    const OTHER: u64 = 4_000;
    let Some(adapter) = overflowing(sqpoll, 1) else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (own, poster) = own_and_a_poster(&adapter, OTHER, &stop);
    let cq = own.ring();
    let mut out: Vec<Completion<TestBuf>> = Vec::new();
    let mut cookies = Vec::new();
    let mut posted = 0u64;
    let mut last_progress = Instant::now();
    while (cookies.len() as u64) < OWN + OTHER && last_progress.elapsed() < STALL {
        let Some(mut batch) = cq.batch() else {
            std::thread::yield_now();
            continue;
        };
        while posted < OWN {
            match batch.post(&own, Op::nop(posted)) {
                Ok(()) => posted += 1,
                Err(PostError::Closed(_)) => panic!("queue closed"),
                Err(PostError::Full(_)) => {
                    batch.commit().unwrap();
                }
                Err(_) => break,
            }
        }
        batch.commit().unwrap();
        for _ in 0..20 {
            out.clear();
            let n = batch.reap(&mut out, 1).unwrap();
            if n == 0 {
                break;
            }
            cookies.extend(out.iter().map(|c| c.cookie));
            last_progress = Instant::now();
        }
        drop(batch);
    }
    // Relaxed: the flag only ends the posters' loops; the joins order the rest.
    stop.store(true, Ordering::Relaxed);
    let other_posted = poster.join().unwrap();
    check_own_and_others(&adapter, &cookies, (posted, OWN), (other_posted, OTHER));
    assert_eq!((posted, other_posted), (OWN, OTHER));
    assert_eq!(adapter.stats().completed, OWN + OTHER);
}

#[test]
fn batch_reaps_one_at_a_time_from_an_overflowing_cq_with_sqpoll() {
    batch_reaps_one_at_a_time_from_an_overflowing_cq(true);
}

#[test]
fn batch_reaps_one_at_a_time_from_an_overflowing_cq_without_sqpoll() {
    batch_reaps_one_at_a_time_from_an_overflowing_cq(false);
}

/// Single-issuer mode: the owner thread only waits, with no timeout, while another thread
/// posts through the inbox into a CQ of 8 with 64 credits: the owner must wake for the inbox
/// posts, submit them, flush the overflow list and deliver every completion once. A watchdog
/// fails the test if the owner makes no progress for `STALL`.
#[test]
fn single_issuer_owner_in_an_untimed_wait_while_others_post() {
    const TOTAL: u64 = 10_000;
    let Some(adapter) = common::tiny_cq_adapter::<TestBuf>(config(1, false).single_issuer(true))
    else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    let cq = wq.ring();
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (bound_tx, bound_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Vec<u64>>();
    let owner = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            cq.bind_owner().unwrap();
            bound_tx.send(()).unwrap();
            let cookies = reap_all(TOTAL, &progress, |out| cq.wait(out, 3, None).unwrap());
            let _ = done_tx.send(cookies);
        })
    };
    bound_rx.recv().unwrap();
    let poster = spawn_poster(wq, 0, TOTAL, &stop);
    let cookies = cookies_or_stall(&done_rx, &progress, |now| {
        // Relaxed: the flag only ends the posters' loops; the joins order the rest.
        stop.store(true, Ordering::Relaxed);
        format!(
            "single-issuer Ring::wait(None) stalled at {now}; {:?}",
            adapter.stats()
        )
    });
    owner.join().unwrap();
    assert_eq!(poster.join().unwrap(), TOTAL);
    check_exactly_once(&cookies, 0..TOTAL);
    let stats = adapter.stats();
    assert_eq!(stats.completed, TOTAL, "{stats:?}");
    eprintln!("single-issuer untimed wait: {stats:?}");
}
