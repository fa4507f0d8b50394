//! Work queues, completion queues and CQ sets: routing, exactly-once reaping, table changes
//! under load, a full SQ and an overflowing CQ (more of those in `overflow_under_load.rs`),
//! corrupted descriptors.

mod common;

use regio_testkit::TempFile;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, Region, TestBuf};
use regio_adapters::{
    BufKey, Completion, CqSet, DescriptorError, Op, PostError, RegionId, Target, WorkQueue,
};

/// Posts `op`, reaping from `cq` while the queue is out of credit or the SQ is full.
fn post_retry(wq: &WorkQueue<TestBuf>, mut op: Op<TestBuf>, sink: &mut Vec<Completion<TestBuf>>) {
    let cq = wq.ring();
    loop {
        match wq.post(op) {
            Ok(()) => return,
            Err(PostError::Closed(_)) => panic!("queue closed"),
            Err(e) => {
                op = e.into_inner();
                cq.reap(sink, 64).unwrap();
                std::thread::yield_now();
            }
        }
    }
}

#[test]
fn many_work_queues_on_one_cq_each_completion_routed_to_its_own() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let wqs: Vec<_> = (0..16)
        .map(|_| adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap())
        .collect();
    let cq = adapter.ring(0).unwrap();
    let mut out = Vec::new();
    for round in 0..40u64 {
        for (i, wq) in wqs.iter().enumerate() {
            post_retry(wq, Op::nop(i as u64 * 1000 + round), &mut out);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < 16 * 40 && Instant::now() < deadline {
        cq.wait(&mut out, 256, Some(Duration::from_millis(100)))
            .unwrap();
    }
    assert_eq!(out.len(), 16 * 40);
    let mut seen = HashSet::new();
    for c in &out {
        let owner = (c.cookie / 1000) as usize;
        assert_eq!(
            c.wq,
            Some(wqs[owner].id()),
            "completion routed to the wrong queue"
        );
        assert_eq!(c.result, 0);
        assert!(seen.insert(c.cookie), "completion seen twice");
    }
    for wq in &wqs {
        assert_eq!(wq.credits(), (8, 8));
    }
}

fn cqset_exactly_once(reapers: usize) {
    const POSTERS: usize = 2;
    const PER_POSTER: u64 = 4000;
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(4, true)) else {
        return;
    };
    let set = Arc::new(CqSet::new(adapter.rings()).unwrap());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let done = Arc::new(AtomicU64::new(0));
    let total = POSTERS as u64 * PER_POSTER;
    let reaper_threads: Vec<_> = (0..reapers)
        .map(|_| {
            let (set, seen, done) = (Arc::clone(&set), Arc::clone(&seen), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut out = Vec::new();
                // Relaxed: `done` only counts; the `seen` mutex orders the cookies themselves.
                while done.load(Ordering::Relaxed) < total {
                    out.clear();
                    set.wait(&mut out, 128, Some(Duration::from_millis(20)))
                        .unwrap();
                    let mut s = seen.lock().unwrap();
                    for c in &out {
                        assert!(s.insert(c.cookie), "cookie {} reaped twice", c.cookie);
                    }
                    // Relaxed: see the loop condition.
                    done.fetch_add(out.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let posters: Vec<_> = (0..POSTERS)
        .map(|p| {
            let wqs: Vec<_> = (0..4)
                .map(|cq| adapter.work_queue(cq, Target::Fd(-1), 32, 32).unwrap())
                .collect();
            std::thread::spawn(move || {
                for i in 0..PER_POSTER {
                    let wq = &wqs[(i % 4) as usize];
                    let mut op = Op::nop(p as u64 * PER_POSTER + i);
                    loop {
                        match wq.post(op) {
                            Ok(()) => break,
                            Err(e) => {
                                op = e.into_inner();
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    for r in reaper_threads {
        r.join().unwrap();
    }
    assert_eq!(seen.lock().unwrap().len() as u64, total);
    // Relaxed: every reaper was joined.
    assert_eq!(done.load(Ordering::Relaxed), total);
}

#[test]
fn cqset_reaped_by_one_thread_sees_each_completion_once() {
    cqset_exactly_once(1);
}

#[test]
fn cqset_reaped_by_three_threads_sees_each_completion_once() {
    cqset_exactly_once(3);
}

#[test]
fn work_queues_added_and_removed_while_others_post() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(2, true)) else {
        return;
    };
    let adapter = Arc::new(adapter);
    let set = Arc::new(CqSet::new(adapter.rings()).unwrap());
    // `stop` ends the posters; `all_posted` tells the reaper that `posted` is final.
    let stop = Arc::new(AtomicBool::new(false));
    let all_posted = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let reaped = Arc::new(AtomicU64::new(0));
    let reaper = {
        let (set, all_posted, reaped, posted) = (
            Arc::clone(&set),
            Arc::clone(&all_posted),
            Arc::clone(&reaped),
            Arc::clone(&posted),
        );
        std::thread::spawn(move || {
            let mut out = Vec::new();
            // A reap that stalls gives up after 20 s without a completion, and the count
            // assertion below says what is missing.
            let mut last_progress = Instant::now();
            while last_progress.elapsed() < Duration::from_secs(20) {
                out.clear();
                set.wait(&mut out, 256, Some(Duration::from_millis(10)))
                    .unwrap();
                if !out.is_empty() {
                    last_progress = Instant::now();
                }
                // Relaxed: a count only this thread writes.
                reaped.fetch_add(out.len() as u64, Ordering::Relaxed);
                // Acquire: pairs with the Release store made after every poster was joined,
                // so the Relaxed load of `posted` below reads its final value.
                if all_posted.load(Ordering::Acquire)
                    && reaped.load(Ordering::Relaxed) == posted.load(Ordering::Relaxed)
                {
                    return;
                }
            }
        })
    };
    let steady: Vec<_> = (0..2)
        .map(|t| {
            let wq = adapter.work_queue(t % 2, Target::Fd(-1), 16, 16).unwrap();
            let (stop, posted) = (Arc::clone(&stop), Arc::clone(&posted));
            std::thread::spawn(move || {
                let mut i = 0u64;
                // Relaxed: the flag only ends the loop; the join orders the rest.
                while !stop.load(Ordering::Relaxed) {
                    if wq.post(Op::nop(i)).is_ok() {
                        // Relaxed: read only after the join or after `all_posted` (Acquire).
                        posted.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut churned = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let wq = adapter
            .work_queue(churned % 2, Target::Fd(-1), 4, 4)
            .unwrap();
        for k in 0..4 {
            if wq.post(Op::nop(k)).is_ok() {
                // Relaxed: see the posters above.
                posted.fetch_add(1, Ordering::Relaxed);
            }
        }
        adapter.resize_work_queue(&wq, 8, 8);
        adapter.remove_work_queue(&wq);
        assert!(matches!(wq.post(Op::nop(99)), Err(PostError::Closed(_))));
        churned += 1;
    }
    // Relaxed: see the posters' loop.
    stop.store(true, Ordering::Relaxed);
    for s in steady {
        s.join().unwrap();
    }
    // Release: every post (and its count) is done; the reaper may stop once it caught up.
    all_posted.store(true, Ordering::Release);
    reaper.join().unwrap();
    assert!(churned > 10, "only {churned} add/remove rounds");
    let stats = adapter.stats();
    // Relaxed (here and below): every thread was joined.
    assert_eq!(
        reaped.load(Ordering::Relaxed),
        posted.load(Ordering::Relaxed),
        "completions missing after {churned} add/remove rounds; {stats:?}"
    );
    println!("{churned} add/remove rounds; {stats:?}");
    assert_eq!(stats.completed, posted.load(Ordering::Relaxed));
}

#[test]
fn a_full_sq_hands_the_operation_back() {
    let mut cfg = config(1, false);
    cfg.sq_entries = 8;
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(cfg) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    let cq = wq.ring();
    let mut batch = cq.batch().expect("nobody else owns the ring");
    for i in 0..8 {
        batch.post(&wq, Op::nop(i)).unwrap();
    }
    let back = match batch.post(&wq, Op::nop(8)) {
        Err(PostError::Full(op)) => op,
        other => panic!("expected Full, got {other:?}"),
    };
    assert_eq!(back.cookie(), 8);
    batch.commit().unwrap();
    // The batch reserves credits in blocks and gives back what it did not use at the commit.
    assert_eq!(wq.credits().0, 56, "the refused post's credit came back");
    batch.post(&wq, back).unwrap();
    drop(batch);
    let mut out = Vec::new();
    while out.len() < 9 {
        cq.wait(&mut out, 64, Some(Duration::from_secs(5))).unwrap();
    }
    let mut cookies: Vec<_> = out.iter().map(|c| c.cookie).collect();
    cookies.sort();
    assert_eq!(cookies, (0..9).collect::<Vec<_>>());
    assert!(adapter.stats().sq_full >= 1);
}

#[test]
fn an_overflowing_cq_is_reported_and_loses_nothing() {
    let Some(adapter) = common::tiny_cq_adapter::<TestBuf>(config(1, false)) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
    let cq = wq.ring();
    {
        let mut batch = cq.batch().unwrap();
        for round in 0..4u64 {
            for i in 0..8 {
                batch.post(&wq, Op::nop(round * 8 + i)).unwrap();
            }
            batch.commit().unwrap();
        }
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < 32 && Instant::now() < deadline {
        cq.reap(&mut out, 64).unwrap();
    }
    assert_eq!(out.len(), 32, "a completion was lost");
    let unique: HashSet<_> = out.iter().map(|c| c.cookie).collect();
    assert_eq!(unique.len(), 32);
    assert!(adapter.stats().cq_overflows >= 1, "overflow not reported");
}

#[test]
fn a_corrupted_descriptor_is_rejected_on_its_own_queue_only() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let region = Region::new(&adapter, 8192);
    let (file, path) = TempFile::pattern("adapters", 8192).keep();
    use std::os::fd::AsRawFd;
    let bad = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
        .unwrap();
    let good = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
        .unwrap();
    let forged = [
        (
            BufKey {
                region: RegionId(9),
                offset: 0,
                len: 512,
            },
            region.generation,
        ),
        (
            BufKey {
                region: region.id,
                offset: 8000,
                len: 512,
            },
            region.generation,
        ),
        (
            BufKey {
                region: region.id,
                offset: 0,
                len: 512,
            },
            region.generation + 1_000_000,
        ),
    ];
    for (i, (key, generation)) in forged.into_iter().enumerate() {
        let buf = region.buf(0, 512).forged(key, generation);
        bad.post(Op::read_fixed(buf, 0, 100 + i as u64)).unwrap();
        good.post(Op::read_fixed(
            region.buf(512 * i as u32, 512),
            0,
            200 + i as u64,
        ))
        .unwrap();
    }
    let cq = bad.ring();
    let mut out = Vec::new();
    while out.len() < 6 {
        cq.wait(&mut out, 64, Some(Duration::from_secs(5))).unwrap();
    }
    for c in &out {
        if c.cookie >= 200 {
            assert_eq!(c.wq, Some(good.id()));
            assert_eq!((c.result, c.rejected()), (512, None));
        } else {
            assert_eq!(c.wq, Some(bad.id()));
            assert!(c.buf.is_some(), "the rejected buffer comes back");
            let expected = match c.cookie {
                100 => matches!(c.rejected(), Some(&DescriptorError::UnknownRegion(9))),
                101 => matches!(c.rejected(), Some(&DescriptorError::OutOfBounds { .. })),
                _ => matches!(c.rejected(), Some(&DescriptorError::StaleGeneration { .. })),
            };
            assert!(expected, "{c:?}");
            assert!(c.result < 0);
        }
    }
    let s = adapter.stats();
    assert_eq!(
        (s.rejected, s.submitted),
        (3, 3),
        "rejected posts never reach the kernel"
    );
    assert_eq!(bad.credits(), (8, 8));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn an_unregistered_region_is_rejected_afterwards() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(2, true)) else {
        return;
    };
    let region = Region::new(&adapter, 4096);
    let (file, path) = TempFile::pattern("adapters", 4096).keep();
    use std::os::fd::AsRawFd;
    let wq = adapter
        .work_queue(1, Target::Fd(file.as_raw_fd()), 4, 4)
        .unwrap();
    let cq = wq.ring();
    wq.post(Op::read_fixed(region.buf(0, 4096), 0, 1)).unwrap();
    let mut out = Vec::new();
    cq.wait(&mut out, 4, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        out[0].result, 4096,
        "ring 1 sees the region registered on ring 0"
    );
    if adapter.buffer_cloning() {
        println!("buffers were cloned with IORING_REGISTER_CLONE_BUFFERS");
    } else {
        regio_testkit::skip("the kernel lacks IORING_REGISTER_CLONE_BUFFERS (Linux 6.12)");
    }
    adapter.unregister_region(region.id).unwrap();
    wq.post(Op::read_fixed(region.buf(0, 4096), 0, 2)).unwrap();
    out.clear();
    cq.wait(&mut out, 4, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(out[0].rejected(), Some(&DescriptorError::UnknownRegion(0)));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_post_left_in_the_inbox_by_a_full_sq_is_pushed_by_the_next_reap() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, false)) else {
        return;
    };
    let sq = config(1, false).sq_entries as u64;
    let wq = adapter
        .work_queue(0, Target::Fd(-1), 2 * sq as u32, 8)
        .unwrap();
    let cq = wq.ring();
    let mut batch = cq.batch().expect("nobody else owns the ring");
    for i in 0..sq {
        batch.post(&wq, Op::nop(i)).unwrap();
    }
    // The batch owns the ring and its SQ is full: this post waits in the inbox.
    wq.post(Op::nop(sq)).unwrap();
    assert_eq!(cq.stats().inbox_depth, 1);
    let mut out = Vec::new();
    batch.reap(&mut out, 64).unwrap();
    assert_eq!(
        cq.stats().inbox_depth,
        0,
        "the reap submitted the full SQ, then pushed the waiting post"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < sq as usize + 1 && Instant::now() < deadline {
        batch.reap(&mut out, 64).unwrap();
    }
    let mut cookies: Vec<u64> = out.iter().map(|c| c.cookie).collect();
    cookies.sort_unstable();
    assert_eq!(
        cookies,
        (0..=sq).collect::<Vec<_>>(),
        "every post completed once"
    );
}

#[test]
fn a_file_slot_outside_the_table_is_refused_and_touches_nothing() {
    let mut cfg = config(1, false);
    cfg.max_files = 4;
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(cfg) else {
        return;
    };
    // A work queue on a slot past Config::max_files is refused when it is created.
    let err = adapter
        .work_queue(0, Target::Fixed(regio_adapters::FileSlot(4)), 8, 8)
        .unwrap_err();
    assert!(
        matches!(err, regio_adapters::Error::Invalid(_)),
        "got {err:?}"
    );
    // A splice whose output slot is past the table completes with BadFileSlot, on its own queue.
    let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let out_slot = Target::Fixed(regio_adapters::FileSlot(9));
    wq.post(Op::splice(-1, out_slot, -1, 16, 7)).unwrap();
    let cq = wq.ring();
    let mut out = Vec::new();
    while out.is_empty() {
        cq.wait(&mut out, 8, Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!((out[0].cookie, out[0].wq), (7, Some(wq.id())));
    assert!(
        matches!(out[0].rejected(), Some(&DescriptorError::BadFileSlot(9))),
        "got {:?}",
        out[0].rejected()
    );
    assert_eq!(adapter.stats().rejected, 1);
    assert_eq!(adapter.stats().submitted, 0, "nothing reached the kernel");
    assert_eq!(wq.credits(), (8, 8), "the rejection gave its credit back");
}

#[test]
fn a_batch_never_exceeds_a_depth_and_gives_back_what_it_reserved() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, false)) else {
        return;
    };
    // More work queues than a batch keeps reservations for, with depths below and above the
    // reservation block.
    let depths = [3u32, 1, 20, 5, 2, 40];
    let wqs: Vec<_> = depths
        .iter()
        .map(|&d| adapter.work_queue(0, Target::Fd(-1), d, 1).unwrap())
        .collect();
    let cq = wqs[0].ring();
    let mut batch = cq.batch().expect("nobody else owns the ring");
    let mut posted = vec![0u32; wqs.len()];
    // Round-robin until every queue refuses: each takes exactly its depth.
    let mut refused = vec![false; wqs.len()];
    let mut cookie = 0;
    while refused.iter().any(|r| !r) {
        for (i, wq) in wqs.iter().enumerate() {
            if refused[i] {
                continue;
            }
            match batch.post(wq, Op::nop(cookie)) {
                Ok(()) => posted[i] += 1,
                Err(PostError::NoCredit(_)) => refused[i] = true,
                Err(e) => panic!("unexpected {e:?}"),
            }
            cookie += 1;
        }
        if posted.iter().sum::<u32>() % 16 == 0 {
            batch.commit().unwrap();
        }
    }
    assert_eq!(posted, depths);
    batch.commit().unwrap();
    for wq in &wqs {
        assert_eq!(wq.credits().0, 0, "all of the depth is in flight");
    }
    let mut out = Vec::new();
    let total: u32 = depths.iter().sum();
    while out.len() < total as usize {
        batch.reap(&mut out, 256).unwrap();
    }
    drop(batch);
    for (wq, d) in wqs.iter().zip(depths) {
        assert_eq!(wq.credits().0, d, "every credit came back");
    }
    // A batch that reserved a block and used one credit gives the rest back when it ends.
    let mut batch = cq.batch().unwrap();
    batch.post(&wqs[5], Op::nop(1)).unwrap();
    drop(batch);
    assert_eq!(wqs[5].credits().0, 39);
}

#[test]
fn reap_each_hands_over_what_reap_would_and_returns_the_credits() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, false)) else {
        return;
    };
    let region = Region::new(&adapter, 4096);
    let wq = adapter.work_queue(0, Target::Fd(-1), 3, 1).unwrap();
    let cq = wq.ring();
    let mut seen = Vec::new();
    for round in 0..3u64 {
        // Three NOPs and a rejected read fill the queue's send and receive depths; a round
        // can post them again only if the last one's credits came back.
        for i in 0..3 {
            wq.post(Op::nop(round * 10 + i)).unwrap();
        }
        let bad = BufKey {
            region: RegionId(9),
            offset: 0,
            len: 512,
        };
        let buf = region.buf(0, 512).forged(bad, region.generation);
        wq.post(Op::read_fixed(buf, 0, round * 10 + 9)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < 4 && Instant::now() < deadline {
            got += if round == 1 {
                let mut batch = cq.batch().expect("nobody else owns the ring");
                batch.reap_each(64, |c| seen.push(c)).unwrap()
            } else {
                cq.reap_each(64, |c| seen.push(c)).unwrap()
            };
        }
        assert_eq!(got, 4, "round {round}: every post completed");
    }
    let mut cookies: Vec<u64> = seen.iter().map(|c| c.cookie).collect();
    cookies.sort_unstable();
    assert_eq!(cookies, [0, 1, 2, 9, 10, 11, 12, 19, 20, 21, 22, 29]);
    for c in &seen {
        assert_eq!(c.wq, Some(wq.id()));
        if c.cookie % 10 == 9 {
            assert_eq!(c.rejected(), Some(&DescriptorError::UnknownRegion(9)));
            assert!(c.buf.is_some(), "a rejected read's buffer comes back");
        } else {
            assert_eq!((c.result, c.rejected()), (0, None));
        }
    }
}

#[test]
fn a_batch_refuses_another_cqs_work_queue_and_a_removed_one_while_it_holds_their_credits() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(2, false)) else {
        return;
    };
    let here = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let there = adapter.work_queue(1, Target::Fd(-1), 8, 8).unwrap();
    let cq = here.ring();
    let mut batch = cq.batch().expect("nobody else owns the ring");
    // Another CQ's queue is refused before this batch holds any reservation, and after it holds
    // one for this CQ's queue (a post that finds its credit there skips nothing it must check).
    assert!(matches!(
        batch.post(&there, Op::nop(1)),
        Err(PostError::Closed(_))
    ));
    batch.post(&here, Op::nop(2)).unwrap();
    assert!(matches!(
        batch.post(&there, Op::nop(3)),
        Err(PostError::Closed(_))
    ));
    assert_eq!(there.credits(), (8, 8), "the refused posts took no credit");
    // A queue removed while the batch holds reserved credits of it is refused from then on.
    adapter.remove_work_queue(&here);
    match batch.post(&here, Op::nop(4)) {
        Err(PostError::Closed(op)) => assert_eq!(op.cookie(), 4),
        other => panic!("expected Closed, got {other:?}"),
    }
    batch.commit().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.is_empty() && Instant::now() < deadline {
        batch.reap(&mut out, 8).unwrap();
    }
    assert_eq!(
        out.iter().map(|c| c.cookie).collect::<Vec<_>>(),
        [2],
        "only the post made before the removal ran"
    );
}
