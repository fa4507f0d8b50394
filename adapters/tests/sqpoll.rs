//! The rings of an adapter share one SQPOLL kernel thread (IORING_SETUP_ATTACH_WQ). Alone in its
//! own test binary, so that no other test's rings are counted.

mod common;

use std::time::Duration;

use common::TestBuf;
use regio_adapters::{Config, Op, SqPoll, Target};

/// The SQPOLL threads of this process: io_uring names them `iou-sqp-<pid>`.
fn sqpoll_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("iou-sqp"))
        .count()
}

#[test]
fn four_rings_share_one_sqpoll_thread_and_it_sleeps_when_idle() {
    let before = sqpoll_threads();
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(Config {
        rings: 4,
        sqpoll: Some(SqPoll {
            idle: Duration::from_millis(10),
            cpu: None,
        }),
        sqpoll_fallback: false,
        ..Config::default()
    }) else {
        return;
    };
    assert!(adapter.sqpoll());
    // The thread starts with its creator's name and renames itself once it runs: give a loaded
    // machine up to 5 s for that, then a moment more for any second thread to show up too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sqpoll_threads() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        sqpoll_threads() - before,
        1,
        "one SQPOLL thread for four rings"
    );

    // Every ring is served by it; after an idle spell it sleeps, and a post wakes it with one
    // io_uring_enter(SQ_WAKEUP), counted in the stats.
    for cq in 0..4 {
        let wq = adapter.work_queue(cq, Target::Fd(-1), 4, 4).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        wq.post(Op::nop(cq as u64)).unwrap();
        let mut out = Vec::new();
        wq.completion_queue()
            .wait(&mut out, 1, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(out.len(), 1);
    }
    let s = adapter.stats();
    assert_eq!((s.submitted, s.completed), (4, 4));
    assert!(
        s.enters >= 1,
        "the sleeping SQPOLL thread needed a wake-up: {s:?}"
    );
}
