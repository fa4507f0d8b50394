//! Operations and time: nops and raw submissions, sleeps, timeouts and intervals on the workers
//! and in block_on, files, and the three ring modes.

mod common;

use std::time::{Duration, Instant};

use regio_runtime::op::{submit, Op};
use regio_runtime::{fs::File, nop, spawn, time, RingMode};

#[test]
fn nops_and_raw_submissions_complete_on_workers_and_in_block_on() {
    let Some(rt) = common::runtime(2) else { return };
    rt.block_on(nop()).unwrap();
    let done = rt.block_on(submit(None, |_, cookie| Op::nop(cookie)));
    assert_eq!((done.result, done.buf.is_none()), (0, true));
    let sum = rt.block_on(rt.spawn(async {
        let mut n = 0;
        for _ in 0..100 {
            nop().await.unwrap();
            n += 1;
        }
        n
    }));
    assert_eq!(sum.unwrap(), 100);
    // A kernel timeout op, through the raw submission API: it completes with -ETIME.
    let timed = rt.block_on(rt.spawn(async {
        submit(None, |_, cookie| {
            Op::timeout(Duration::from_millis(1), cookie)
        })
        .await
        .result
    }));
    assert_eq!(timed.unwrap(), -libc::ETIME);
}

#[test]
fn sleeps_timeouts_and_intervals_keep_time() {
    let Some(rt) = common::runtime(2) else { return };
    // In block_on (the sleep runs as a task on a worker) and on a worker.
    let start = Instant::now();
    rt.block_on(time::sleep(Duration::from_millis(20)));
    assert!(start.elapsed() >= Duration::from_millis(20));
    let on_worker = rt.block_on(rt.spawn(async {
        let start = Instant::now();
        time::sleep(Duration::from_millis(20)).await;
        start.elapsed()
    }));
    let slept = on_worker.unwrap();
    assert!(
        slept >= Duration::from_millis(20) && slept < Duration::from_secs(2),
        "{slept:?}"
    );

    let (fast, slow) = rt
        .block_on(rt.spawn(async {
            let fast = time::timeout(Duration::from_secs(5), async { 7 }).await;
            let slow = time::timeout(
                Duration::from_millis(5),
                time::sleep(Duration::from_secs(60)),
            )
            .await;
            (fast, slow)
        }))
        .unwrap();
    assert_eq!(fast, Ok(7));
    let elapsed = slow.unwrap_err();
    assert_eq!(
        std::io::Error::from(elapsed).kind(),
        std::io::ErrorKind::TimedOut
    );

    let ticks = rt.block_on(rt.spawn(async {
        let mut every = time::interval(Duration::from_millis(3));
        let mut ticks = Vec::new();
        for _ in 0..4 {
            ticks.push(every.tick().await);
        }
        ticks
    }));
    let ticks = ticks.unwrap();
    // Ticks fall on the period's grid; a tick late by more than a period (a loaded machine)
    // skips the ones it missed.
    for pair in ticks.windows(2) {
        let gap = (pair[1] - pair[0]).as_nanos();
        assert!(gap > 0 && gap % 3_000_000 == 0, "{gap} ns between ticks");
    }
}

#[test]
fn a_thousand_sleeps_use_the_timer_map_not_the_ring() {
    let Some(rt) = common::runtime(1) else { return };
    let before = rt.stats()[0];
    rt.block_on(rt.spawn(async {
        let hs: Vec<_> = (0..1000u64)
            .map(|i| {
                spawn(time::sleep(
                    Duration::from_millis(50) + Duration::from_micros(i * 10),
                ))
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    }))
    .unwrap();
    let after = rt.stats()[0];
    assert_eq!(
        after.ops_submitted, before.ops_submitted,
        "a sleep must not become a kernel operation"
    );
    // A sleep whose deadline has passed by its first poll ends without a timer (a slow,
    // instrumented build may get there late); the others each fired one.
    let fired = after.timers_fired - before.timers_fired;
    assert!(fired > 0 && fired <= 1000, "{fired} timers fired");
}

#[test]
fn a_file_reads_writes_and_syncs_through_the_ring() {
    let Some(rt) = common::runtime(2) else { return };
    let pool = rt.pool().clone();
    let scratch = regio_testkit::TempFile::new("runtime-io");
    let file = std::sync::Arc::new(File::create(scratch.path()).unwrap());
    // On a worker.
    let written = rt.block_on(rt.spawn({
        let (file, pool) = (std::sync::Arc::clone(&file), pool.clone());
        async move {
            let mut msg = pool.acquire().await;
            msg.as_mut_slice()[..11].copy_from_slice(b"hello regio");
            msg.descriptor_mut().truncate(11);
            let (n, msg) = file.write_at(msg, 0).await;
            drop(msg);
            file.sync_all().await.unwrap();
            file.sync_data().await.unwrap();
            n.unwrap()
        }
    }));
    assert_eq!(written.unwrap(), 11);
    // In block_on: each operation goes to a worker as a task.
    let (read, msg) = rt.block_on(file.read_at(pool.try_acquire().unwrap(), 6));
    assert_eq!(read.unwrap(), 5);
    assert_eq!(&msg.as_slice()[..5], b"regio");
    drop(msg);
    // A read past the end reads nothing, and a file is bound to its first runtime.
    let (past, msg) = rt.block_on(file.read_at(pool.try_acquire().unwrap(), 1 << 20));
    assert_eq!(past.unwrap(), 0);
    drop(msg);
    if let Some(other) = common::runtime(1) {
        let other_pool = other.pool().clone();
        let (refused, _msg) = other.block_on(file.read_at(other_pool.try_acquire().unwrap(), 0));
        assert_eq!(
            refused.unwrap_err().kind(),
            std::io::ErrorKind::CrossesDevices
        );
    }
    drop(file);
    common::eventually_pool_full(&pool, "every buffer back");
}

#[test]
fn a_file_allocates_punches_zeroes_and_takes_advice_through_the_ring() {
    let Some(rt) = common::runtime(1) else { return };
    let path = std::env::temp_dir().join(format!("regio-runtime-falloc-{}", std::process::id()));
    std::fs::write(&path, vec![0xa5_u8; 1 << 16]).unwrap();
    let file = File::from_std(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
    );
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let (grown, punched, advised, bad) = rt.block_on(async {
        (
            file.fallocate(0, 0, 1 << 17).await,
            file.fallocate(punch, 4096, 8192).await,
            file.fadvise(libc::POSIX_FADV_WILLNEED, 0, 0).await,
            file.fallocate(punch, 0, 0).await,
        )
    });
    grown.unwrap();
    advised.unwrap();
    // A zero length is refused by the kernel, as fallocate(2) says.
    assert_eq!(bad.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len(), 1 << 17, "mode 0 extends the file");
    match punched {
        Ok(()) => {
            assert!(data[4096..12288].iter().all(|&b| b == 0));
            assert!(data[..4096].iter().all(|&b| b == 0xa5));
            assert!(data[12288..1 << 16].iter().all(|&b| b == 0xa5));
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            regio_testkit::skip("the temporary directory's file system cannot punch holes")
        }
        Err(e) => panic!("punching a hole failed: {e}"),
    }
    drop(file);
    std::fs::remove_file(path).unwrap();
}

/// Spawns, nops, sleeps and a file write in one runtime built with `mode`.
fn exercise(mode: RingMode) {
    let Some(rt) = common::build(common::builder(2).ring_mode(mode)) else {
        return;
    };
    let out = rt.block_on(async {
        let hs: Vec<_> = (0..16u64)
            .map(|i| {
                spawn(async move {
                    for _ in 0..20 {
                        nop().await.unwrap();
                    }
                    time::sleep(Duration::from_millis(i % 3)).await;
                    i
                })
            })
            .collect();
        let mut sum = 0;
        for h in hs {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(out, (0..16).sum::<u64>());
    let stats = rt.stats();
    assert!(
        stats.iter().map(|s| s.completions).sum::<u64>() >= 320,
        "{stats:?}"
    );
}

#[test]
fn the_sqpoll_ring_mode_runs_tasks_and_operations() {
    exercise(RingMode::SqPoll {
        idle: Duration::from_millis(10),
        cpu: None,
    });
}

#[test]
fn the_single_issuer_ring_mode_runs_tasks_and_operations() {
    exercise(RingMode::SingleIssuer);
}
