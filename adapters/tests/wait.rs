//! `Ring::wait` and `CqSet::wait` in the default mode: no wake-up is lost when
//! another thread owns the ring (a `Batch`), for completions made in user space (rejections),
//! nor for a post that the full SQ refused (it stays in the inbox, and with SQPOLL room comes
//! back with no signal). Each test is bounded: a lost wake-up shows as a wait that sleeps out its
//! timeout, and fails.

mod common;

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use common::{config, ReapRig, TestBuf};
use regio_adapters::{Adapter, Completion, Config, CqSet, Op, PostError, Ring, Target};

/// The timeout of every wait here: a lost wake-up sleeps all of it.
const TIMEOUT: Duration = Duration::from_secs(5);
/// What a wait that was woken must stay under: far below `TIMEOUT`, far above a wake-up.
const PROMPT: Duration = Duration::from_secs(2);

/// Whether `fd` is readable within `timeout` (its counter is not read).
fn readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

/// Polls until `fd` is no longer readable (a waiter has reset the eventfd), failing after 5 s.
fn until_reset(fd: RawFd) {
    let deadline = Instant::now() + TIMEOUT;
    while readable(fd, Duration::ZERO) {
        assert!(
            Instant::now() < deadline,
            "the waiter never reset the eventfd"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Holds a `Batch` on `cq` while a NOP completes into its CQ, lets `wait` run on another thread
/// until it has reset the eventfd (and, on the code before the fix, fallen asleep), then drops
/// the batch without reaping. Returns what `wait` returned and how long after the drop.
fn wait_across_a_batch(
    cq: &Ring<TestBuf>,
    wq: &regio_adapters::WorkQueue<TestBuf>,
    wait: impl FnOnce(&mut Vec<Completion<TestBuf>>) -> usize + Send,
) -> (usize, Duration, Vec<Completion<TestBuf>>) {
    std::thread::scope(|s| {
        let mut batch = cq.batch().expect("nobody else owns the ring");
        batch.post(wq, Op::nop(7)).unwrap();
        batch.commit().unwrap();
        assert!(
            readable(cq.notify_fd(), TIMEOUT),
            "the NOP completes into the CQ"
        );
        let waiter = s.spawn(move || {
            let mut out = Vec::new();
            let n = wait(&mut out);
            (n, Instant::now(), out)
        });
        until_reset(cq.notify_fd());
        // Long enough for the waiter to look at the owned ring again and go to sleep.
        std::thread::sleep(Duration::from_millis(100));
        let released = Instant::now();
        drop(batch);
        let (n, returned, out) = waiter.join().unwrap();
        (n, returned.saturating_duration_since(released), out)
    })
}

#[test]
fn a_waiter_wakes_for_a_completion_that_landed_while_a_batch_owned_the_ring() {
    for sqpoll in [false, true] {
        let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, sqpoll)) else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let cq = adapter.ring(0).unwrap();
        let (n, took, out) =
            wait_across_a_batch(&cq, &wq, |out| cq.wait(out, 16, Some(TIMEOUT)).unwrap());
        assert_eq!(n, 1, "sqpoll {sqpoll}: the wait slept past the completion");
        assert!(took < PROMPT, "sqpoll {sqpoll}: woken only after {took:?}");
        assert_eq!((out[0].cookie, out[0].result), (7, 0));
    }
}

#[test]
fn a_cqset_waiter_wakes_for_a_completion_that_landed_while_a_batch_owned_the_ring() {
    for sqpoll in [false, true] {
        let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(2, sqpoll)) else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let cq = adapter.ring(0).unwrap();
        let set = CqSet::new(adapter.rings()).unwrap();
        let (n, took, out) =
            wait_across_a_batch(&cq, &wq, |out| set.wait(out, 16, Some(TIMEOUT)).unwrap());
        assert_eq!(n, 1, "sqpoll {sqpoll}: the wait slept past the completion");
        assert!(took < PROMPT, "sqpoll {sqpoll}: woken only after {took:?}");
        assert_eq!((out[0].cookie, out[0].result), (7, 0));
    }
}

/// A wait on a `Ring` or a `CqSet`, returning how many it reaped into `out`.
type WaitFn<'a> = dyn Fn(&mut Vec<Completion<TestBuf>>) -> usize + Sync + 'a;

/// A rejection completes in user space, where the kernel signals no eventfd: a waiter asleep
/// on the CQ must still wake for it.
#[test]
fn a_waiter_wakes_for_a_rejection_posted_by_another_thread() {
    for sqpoll in [false, true] {
        let Some(rig) = ReapRig::new(config(2, sqpoll)) else {
            return;
        };
        let waits: [&WaitFn; 2] = [
            &|out| rig.cq.wait(out, 16, Some(TIMEOUT)).unwrap(),
            &|out| rig.set.wait(out, 16, Some(TIMEOUT)).unwrap(),
        ];
        for (i, wait) in waits.into_iter().enumerate() {
            let (n, took, out) = std::thread::scope(|s| {
                let waiter = s.spawn(|| {
                    let mut out = Vec::new();
                    let n = wait(&mut out);
                    (n, Instant::now(), out)
                });
                // Long enough for the waiter to find the CQ empty and fall asleep.
                std::thread::sleep(Duration::from_millis(200));
                let posted = Instant::now();
                let bad = rig.region.forged_past_the_end();
                rig.wq.post(Op::read_fixed(bad, 0, 9)).unwrap();
                let (n, returned, out) = waiter.join().unwrap();
                (n, returned.saturating_duration_since(posted), out)
            });
            assert_eq!(n, 1, "sqpoll {sqpoll}, wait {i}: slept past the rejection");
            assert!(
                took < PROMPT,
                "sqpoll {sqpoll}, wait {i}: woken after {took:?}"
            );
            assert_eq!(out[0].cookie, 9);
            assert!(out[0].rejected().is_some(), "{:?}", out[0]);
        }
    }
}

/// Who waits for the refused post in [`refused_post`].
#[derive(Clone, Copy, Debug)]
enum Waiter {
    /// The thread that held the batch, after it let go, through `Ring::wait`.
    Owner,
    /// Another thread, asleep in `Ring::wait` since before the batch.
    Asleep,
    /// Another thread, asleep in `CqSet::wait` since before the batch.
    AsleepInSet,
}

/// A ring with a 4-entry SQ is owned by a batch (auto-submit off), which fills the SQ with
/// timeouts that do not fire during the test (so no CQE comes to wake anybody). Another thread
/// posts a NOP: the ring is owned, so the post goes to the inbox and the poster is told `Ok`.
/// The batch ends without a commit; its release submits the timeouts, and the NOP finds the SQ
/// full until the kernel has taken them (with SQPOLL, some time later). The waiter, using only
/// `wait`, must get the NOP's completion. Repeated, since with SQPOLL the refusal is a race.
fn refused_post(adapter: &Adapter<TestBuf>, waiter: Waiter, rounds: u64) {
    let wq = adapter.work_queue(0, Target::Fd(-1), 256, 256).unwrap();
    let cq = adapter.ring(0).unwrap();
    let set = CqSet::new([cq.clone()]).unwrap();
    for round in 0..rounds {
        let nop = 1_000_000 + round;
        let got_nop = |out: &[Completion<TestBuf>]| out.iter().any(|c| c.cookie == nop);
        let wait_for_nop = |use_set: bool| {
            let mut out = Vec::new();
            let deadline = Instant::now() + TIMEOUT;
            while !got_nop(&out) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                if use_set {
                    set.wait(&mut out, 16, Some(left)).unwrap();
                } else {
                    cq.wait(&mut out, 16, Some(left)).unwrap();
                }
            }
            out
        };
        let out = std::thread::scope(|s| {
            let asleep = match waiter {
                Waiter::Owner => None,
                Waiter::Asleep => Some(s.spawn(|| wait_for_nop(false))),
                Waiter::AsleepInSet => Some(s.spawn(|| wait_for_nop(true))),
            };
            if asleep.is_some() {
                // Long enough for the waiter to find the CQ empty and fall asleep.
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut batch = loop {
                // The waiter may be looking at the ring right now.
                if let Some(b) = cq.batch() {
                    break b;
                }
                std::thread::yield_now();
            };
            let mut filled = 0;
            loop {
                match batch.post(
                    &wq,
                    Op::timeout(Duration::from_secs(60), round * 10 + filled),
                ) {
                    Ok(()) => filled += 1,
                    Err(PostError::Full(_)) => break,
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            assert!(filled > 0, "round {round}: the batch found the SQ full");
            s.spawn(|| {
                wq.post(Op::nop(nop))
                    .expect("told Ok: the post went to the inbox")
            })
            .join()
            .unwrap();
            assert_eq!(
                cq.stats().inbox_depth,
                1,
                "round {round}: the NOP is in the inbox"
            );
            drop(batch);
            match asleep {
                Some(t) => t.join().unwrap(),
                None => wait_for_nop(false),
            }
        });
        assert!(
            got_nop(&out),
            "round {round} ({waiter:?}): the NOP told Ok was never pushed; got {out:?}, stats {:?}",
            cq.stats()
        );
    }
}

fn small_sq(sqpoll: bool) -> Config {
    config(1, sqpoll).sq_entries(4).cq_entries(1024)
}

#[test]
fn a_post_the_full_sq_refused_completes_through_wait_with_sqpoll() {
    for waiter in [Waiter::Owner, Waiter::Asleep, Waiter::AsleepInSet] {
        let Some(adapter) = common::adapter_or_skip::<TestBuf>(small_sq(true)) else {
            return;
        };
        refused_post(&adapter, waiter, 20);
    }
}

#[test]
fn a_post_the_full_sq_refused_completes_through_wait_without_sqpoll() {
    for waiter in [Waiter::Owner, Waiter::Asleep, Waiter::AsleepInSet] {
        let Some(adapter) = common::adapter_or_skip::<TestBuf>(small_sq(false)) else {
            return;
        };
        refused_post(&adapter, waiter, 20);
    }
}
