//! Linked operations ([`Batch::post_chain`]): a chain is staged whole and contiguous, or refused
//! whole with every operation handed back; a failed member cancels the rest, each with its own
//! completion and buffer. Each test runs with SQPOLL, in interrupt mode, and in single-issuer
//! mode.

mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Region, TestBuf};
use regio_adapters::{
    Adapter, BufKey, ChainRefusal, Completion, Config, DescriptorError, Op, Ring, SqPoll, Target,
    WorkQueue,
};
use regio_testkit::TempFile;

/// The three ways a ring runs.
#[derive(Clone, Copy, Debug)]
enum Mode {
    SqPoll,
    Interrupt,
    SingleIssuer,
}

const MODES: [Mode; 3] = [Mode::SqPoll, Mode::Interrupt, Mode::SingleIssuer];

/// An adapter of one ring in `mode` (bound to this thread in single-issuer mode), with a
/// 64 KiB region; `None` (after a `SKIP:` line) where io_uring is disabled.
fn setup(mode: Mode) -> Option<(Adapter<TestBuf>, Arc<Region>, Ring<TestBuf>)> {
    let config: Config = match mode {
        Mode::SqPoll => common::config(1, true),
        Mode::Interrupt => common::config(1, false),
        Mode::SingleIssuer => common::config(1, false).single_issuer(true),
    };
    let adapter = common::adapter_or_skip::<TestBuf>(config)?;
    assert_eq!(adapter.sqpoll(), matches!(mode, Mode::SqPoll), "{mode:?}");
    let region = Region::new(&adapter, 1 << 16);
    let cq = adapter.ring(0).unwrap();
    if matches!(mode, Mode::SingleIssuer) {
        cq.bind_owner().unwrap();
    }
    Some((adapter, region, cq))
}

/// A work queue of depth 8 on a new temporary file of 4 KiB of `byte`.
fn file_queue(adapter: &Adapter<TestBuf>, byte: u8) -> (WorkQueue<TestBuf>, TempFile) {
    let file = common::scratch(byte);
    let wq = adapter
        .work_queue(0, Target::Fd(file.file().as_raw_fd()), 8, 8)
        .unwrap();
    (wq, file)
}

/// Posts `ops` as one chain in a batch of `cq` and commits it.
fn post_chain(cq: &Ring<TestBuf>, wq: &WorkQueue<TestBuf>, ops: Vec<Op<TestBuf>>) {
    let mut batch = cq.batch().expect("this thread alone posts");
    batch.post_chain(wq, ops).unwrap();
    batch.commit().unwrap();
}

/// `n` completions of `cq`, in the order they were reaped.
fn reap(cq: &Ring<TestBuf>, n: usize) -> Vec<Completion<TestBuf>> {
    common::collect(cq, n)
}

/// The cookies of `ops`.
fn cookies(ops: &[Op<TestBuf>]) -> Vec<u64> {
    ops.iter().map(Op::cookie).collect()
}

#[test]
fn a_write_linked_to_an_fsync_runs_in_order() {
    for mode in MODES {
        let Some((adapter, region, cq)) = setup(mode) else {
            return;
        };
        let (wq, file) = file_queue(&adapter, b'.');
        let buf = region.buf(0, 512);
        buf.write(&[b'w'; 512]);
        post_chain(&cq, &wq, vec![Op::write_fixed(buf, 1024, 1), Op::fsync(2)]);
        let c = reap(&cq, 2);
        let got: Vec<_> = c.iter().map(|c| (c.cookie, c.result)).collect();
        assert_eq!(
            got,
            [(1, 512), (2, 0)],
            "{mode:?}: the fsync follows the write"
        );
        assert!(
            c[0].buf.is_some(),
            "{mode:?}: the write's buffer comes back"
        );
        let contents = std::fs::read(file.path()).unwrap();
        assert!(common::only(&contents[1024..1536], b'w'), "{mode:?}");
        assert!(common::only(&contents[..1024], b'.'), "{mode:?}");
        assert_eq!(wq.credits(), (8, 8), "{mode:?}: every credit comes back");
    }
}

#[test]
fn a_failed_member_cancels_the_rest_with_their_buffers() {
    for mode in MODES {
        let Some((adapter, region, cq)) = setup(mode) else {
            return;
        };
        let (wq, _file) = file_queue(&adapter, b'.');
        // A timeout that expires completes with -ETIME, which breaks a link.
        let ops = vec![
            Op::timeout(Duration::ZERO, 1),
            Op::read_fixed(region.buf(0, 512), 0, 2),
            Op::nop_carrying(region.buf(512, 64), 3),
        ];
        post_chain(&cq, &wq, ops);
        let mut c = reap(&cq, 3);
        c.sort_by_key(|c| c.cookie);
        let got: Vec<_> = c.iter().map(|c| (c.cookie, c.result)).collect();
        assert_eq!(
            got,
            [
                (1, -libc::ETIME),
                (2, -libc::ECANCELED),
                (3, -libc::ECANCELED)
            ],
            "{mode:?}"
        );
        assert!(
            c[1].buf.is_some() && c[2].buf.is_some(),
            "{mode:?}: buffers back"
        );
        assert_eq!(wq.credits(), (8, 8), "{mode:?}");
    }
}

/// With SQPOLL and `sqpoll_publish_every(8)` a batch publishes its staged SQEs every 8 posts,
/// but never inside a chain: a
/// chain that straddles the 8th SQE still breaks as one. A chain cut at a tail store would run
/// its later members on their own, and they would succeed; so where the chain straddles the 8th
/// SQE, the test waits until the kernel thread has taken the posts before the chain (they
/// completed) before it commits the rest.
#[test]
fn a_chain_across_the_8th_post_of_a_batch_stays_whole() {
    let config = Config::default()
        .rings(1)
        .sqpoll(Some(SqPoll {
            // Long enough that the thread, once awake, polls for the whole test.
            idle: Duration::from_secs(30),
            cpu: None,
        }))
        .sqpoll_publish_every(8);
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config) else {
        return;
    };
    if !adapter.sqpoll() {
        regio_testkit::skip("SQPOLL is not available here");
        return;
    }
    let cq = adapter.ring(0).unwrap();
    let wq = adapter.work_queue(0, Target::Fd(-1), 16, 16).unwrap();
    for before in 0..8u64 {
        let mut batch = cq.batch().expect("this thread alone posts");
        for k in 0..before {
            batch.post(&wq, Op::nop(100 + k)).unwrap();
        }
        let chain = vec![Op::timeout(Duration::ZERO, 1), Op::nop(2), Op::nop(3)];
        batch.post_chain(&wq, chain).unwrap();
        let mut done = Vec::new();
        if before + 3 > 8 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while done
                .iter()
                .filter(|c: &&Completion<TestBuf>| c.cookie >= 100)
                .count()
                < before as usize
                && Instant::now() < deadline
            {
                batch.reap(&mut done, 16).unwrap();
            }
        }
        batch.commit().unwrap();
        drop(batch);
        done.extend(reap(&cq, before as usize + 3 - done.len()));
        let mut got: Vec<_> = done
            .iter()
            .filter(|c| c.cookie < 100)
            .map(|c| (c.cookie, c.result))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [
                (1, -libc::ETIME),
                (2, -libc::ECANCELED),
                (3, -libc::ECANCELED)
            ],
            "{before} posts before the chain"
        );
    }
    assert_eq!(wq.credits(), (16, 16));
}

#[test]
fn a_hard_link_runs_the_rest_after_a_failure() {
    for mode in MODES {
        let Some((adapter, region, cq)) = setup(mode) else {
            return;
        };
        let (wq, _file) = file_queue(&adapter, b'h');
        let mut batch = cq.batch().unwrap();
        let ops = vec![
            Op::timeout(Duration::ZERO, 1),
            Op::read_fixed(region.buf(0, 512), 0, 2),
        ];
        batch.post_hard_chain(&wq, ops).unwrap();
        batch.commit().unwrap();
        drop(batch);
        let mut c = reap(&cq, 2);
        c.sort_by_key(|c| c.cookie);
        let got: Vec<_> = c.iter().map(|c| (c.cookie, c.result)).collect();
        assert_eq!(got, [(1, -libc::ETIME), (2, 512)], "{mode:?}");
        assert!(common::only(&c[1].buf.as_ref().unwrap().contents(), b'h'));
    }
}

#[test]
fn a_chain_beyond_the_credits_is_refused_whole() {
    for mode in MODES {
        let Some((adapter, _region, cq)) = setup(mode) else {
            return;
        };
        let (wq, _file) = file_queue(&adapter, b'.');
        let ops: Vec<_> = (0..9).map(Op::nop).collect();
        let mut batch = cq.batch().unwrap();
        // The batch holds reserved credits of `wq` from a post: the chain may still use them.
        batch.post(&wq, Op::nop(100)).unwrap();
        let e = batch.post_chain(&wq, ops).unwrap_err();
        assert_eq!(e.reason, ChainRefusal::NoCredit, "{mode:?}");
        assert_eq!(cookies(&e.ops), (0..9).collect::<Vec<_>>(), "{mode:?}");
        // Seven more fit beside the one posted.
        let ops: Vec<_> = (0..7).map(Op::nop).collect();
        batch.post_chain(&wq, ops).unwrap();
        batch.commit().unwrap();
        drop(batch);
        let c = reap(&cq, 8);
        assert!(c.iter().all(|c| c.result == 0), "{mode:?}: {c:?}");
        assert_eq!(wq.credits(), (8, 8), "{mode:?}");
    }
}

#[test]
fn a_chain_beyond_the_sq_room_is_refused_whole() {
    for mode in MODES {
        let Some((adapter, _region, cq)) = setup(mode) else {
            return;
        };
        // The test config's SQ holds 64 SQEs.
        let big = adapter.work_queue(0, Target::Fd(-1), 128, 128).unwrap();
        let mut batch = cq.batch().unwrap();
        let e = batch
            .post_chain(&big, (0..65).map(Op::nop).collect())
            .unwrap_err();
        assert_eq!(
            e.reason,
            ChainRefusal::TooLong {
                len: 65,
                sq_entries: 64
            },
            "{mode:?}"
        );
        assert_eq!(e.ops.len(), 65);
        for k in 0..60 {
            batch.post(&big, Op::nop(1000 + k)).unwrap();
        }
        let e = batch
            .post_chain(&big, (0..5).map(Op::nop).collect())
            .unwrap_err();
        assert_eq!(e.reason, ChainRefusal::Full, "{mode:?}");
        assert_eq!(cookies(&e.ops), (0..5).collect::<Vec<_>>(), "{mode:?}");
        assert_eq!(
            big.credits().0,
            128 - 60,
            "{mode:?}: the chain's credits went back"
        );
        batch.commit().unwrap();
        // After the commit the kernel takes the SQEs and makes room (SQPOLL: in its own time).
        let mut ops = e.ops;
        let mut tries = 0;
        while let Err(e) = batch.post_chain(&big, ops) {
            assert_eq!(e.reason, ChainRefusal::Full, "{mode:?}");
            ops = e.ops;
            tries += 1;
            assert!(tries < 100_000, "{mode:?}: the SQ never drained");
            std::thread::yield_now();
        }
        batch.commit().unwrap();
        drop(batch);
        let c = reap(&cq, 65);
        assert!(c.iter().all(|c| c.result == 0), "{mode:?}");
        assert_eq!(big.credits(), (128, 128), "{mode:?}");
    }
}

#[test]
fn a_chain_with_one_bad_descriptor_is_refused_whole() {
    for mode in MODES {
        let Some((adapter, region, cq)) = setup(mode) else {
            return;
        };
        let (wq, _file) = file_queue(&adapter, b'.');
        let forged = region.buf(0, 64).forged(
            BufKey {
                region: region.id,
                offset: 1 << 20,
                len: 64,
            },
            region.generation,
        );
        let ops = vec![
            Op::write_fixed(region.buf(0, 64), 0, 1),
            Op::read_fixed(forged, 0, 2),
            Op::fsync(3),
        ];
        let mut batch = cq.batch().unwrap();
        let e = batch.post_chain(&wq, ops).unwrap_err();
        assert!(
            matches!(
                e.reason,
                ChainRefusal::Descriptor {
                    index: 1,
                    error: DescriptorError::OutOfBounds { .. }
                }
            ),
            "{mode:?}: {:?}",
            e.reason
        );
        assert_eq!(cookies(&e.ops), [1, 2, 3]);
        assert!(e.ops.iter().take(2).all(|op| op.name().contains("fixed")));
        assert_eq!(wq.credits(), (8, 8), "{mode:?}: no credit kept");
        // A cancel cannot be linked.
        let e = batch
            .post_chain(&wq, vec![Op::nop(1), Op::cancel(1, 2)])
            .unwrap_err();
        assert_eq!(
            e.reason,
            ChainRefusal::Unlinkable {
                index: 1,
                op: "async_cancel"
            }
        );
        assert_eq!(cookies(&e.ops), [1, 2]);
        // Nothing of either chain was posted: the next operation is the only completion.
        batch.post(&wq, Op::nop(9)).unwrap();
        batch.commit().unwrap();
        drop(batch);
        let c = reap(&cq, 1);
        assert_eq!((c[0].cookie, c[0].result), (9, 0), "{mode:?}");
        let mut more = Vec::new();
        assert_eq!(cq.reap(&mut more, 16).unwrap(), 0, "{mode:?}: {more:?}");
    }
}

#[test]
fn a_chain_on_a_removed_queue_is_refused() {
    let Some((adapter, _region, cq)) = setup(Mode::Interrupt) else {
        return;
    };
    let (wq, _file) = file_queue(&adapter, b'.');
    adapter.remove_work_queue(&wq);
    let mut batch = cq.batch().unwrap();
    let e = batch
        .post_chain(&wq, vec![Op::nop(1), Op::nop(2)])
        .unwrap_err();
    assert_eq!(e.reason, ChainRefusal::Closed);
    assert_eq!(cookies(&e.ops), [1, 2]);
    assert!(
        batch.post_chain(&wq, Vec::new()).is_ok(),
        "an empty chain posts nothing"
    );
}

/// On an SQPOLL adapter of two rings, the kernel thread serves both and submits at most 8 SQEs
/// of a ring per pass, ending a link chain where a pass ends: chains are refused there, whole.
#[test]
fn a_chain_on_an_sqpoll_thread_shared_by_two_rings_is_refused() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(common::config(2, true)) else {
        return;
    };
    if !adapter.sqpoll() {
        regio_testkit::skip("the kernel refused SQPOLL");
        return;
    }
    let cq = adapter.ring(0).unwrap();
    let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let mut batch = cq.batch().unwrap();
    let e = batch
        .post_chain(&wq, vec![Op::nop(1), Op::nop(2)])
        .unwrap_err();
    assert_eq!(e.reason, ChainRefusal::SharedSqThread);
    assert_eq!(cookies(&e.ops), [1, 2]);
}

/// Chains whose head fails, posted while another thread posts NOPs to the same ring: a NOP that
/// slipped into a chain would be cancelled, and a member left out of one would run. Between two
/// chains of a batch the test waits until the other thread has posted, so that its posts wait
/// in the ring's inbox while the second chain is staged.
#[test]
fn chains_stay_contiguous_while_another_thread_posts() {
    const CHAINS: u64 = 60;
    const NOPS: u64 = 400;
    for mode in MODES {
        let Some((adapter, _region, cq)) = setup(mode) else {
            return;
        };
        let chains = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let other = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let poster = {
            let (other, progress) = (other.clone(), Arc::clone(&progress));
            std::thread::spawn(move || {
                let mut k = 0;
                let mut tries = 0u64;
                while k < NOPS {
                    tries += 1;
                    assert!(tries < 10_000_000, "the other poster never got credit");
                    match other.post(Op::nop(1_000_000 + k)) {
                        Ok(()) => {
                            k += 1;
                            // Relaxed: a progress count, read only to decide when to go on.
                            progress.store(k, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::yield_now(),
                    }
                }
            })
        };
        let chain = |n: u64| -> Vec<Op<TestBuf>> {
            vec![
                Op::timeout(Duration::ZERO, n * 4),
                Op::nop(n * 4 + 1),
                Op::nop(n * 4 + 2),
                Op::nop(n * 4 + 3),
            ]
        };
        let mut done = Vec::new();
        let mut posted = 0;
        let mut rounds = 0u64;
        // Until both are done: reaping gives the other poster its credits back (and, in
        // single-issuer mode, pushes its posts from the inbox).
        while posted < CHAINS || !poster.is_finished() {
            rounds += 1;
            assert!(
                rounds < 10_000_000,
                "{mode:?}: the posts never went through"
            );
            cq.reap(&mut done, 256).unwrap();
            if posted == CHAINS {
                std::thread::yield_now();
                continue;
            }
            let Some(mut batch) = cq.batch() else {
                std::thread::yield_now();
                continue;
            };
            if batch.post_chain(&chains, chain(posted)).is_ok() {
                posted += 1;
                // Relaxed: as above.
                let seen = progress.load(Ordering::Relaxed);
                for _ in 0..10_000 {
                    if progress.load(Ordering::Relaxed) != seen || poster.is_finished() {
                        break;
                    }
                    std::thread::yield_now();
                }
                if posted < CHAINS && batch.post_chain(&chains, chain(posted)).is_ok() {
                    posted += 1;
                }
            }
            batch.commit().unwrap();
        }
        poster.join().unwrap();
        let total = (CHAINS * 4 + NOPS) as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while done.len() < total && std::time::Instant::now() < deadline {
            cq.wait(&mut done, 256, Some(Duration::from_millis(100)))
                .unwrap();
        }
        assert_eq!(done.len(), total, "{mode:?}");
        for c in &done {
            let want = if c.cookie >= 1_000_000 {
                0
            } else if c.cookie % 4 == 0 {
                -libc::ETIME
            } else {
                -libc::ECANCELED
            };
            assert_eq!(c.result, want, "{mode:?}: {c:?}");
        }
    }
}
