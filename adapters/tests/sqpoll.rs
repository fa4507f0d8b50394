//! The rings of an adapter share one SQPOLL kernel thread (IORING_SETUP_ATTACH_WQ). Alone in its
//! own test binary, so that no other test's rings or threads are counted.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::TestBuf;
use regio_adapters::{Config, Op, SqPoll, Target};

/// The ids of this process's threads.
fn threads() -> HashSet<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|t| t.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The name of thread `tid` of this process, if it still exists.
fn thread_name(tid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()
}

/// Polls `done` every millisecond until it holds, failing with `what` after 5 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn four_rings_share_one_sqpoll_thread_and_it_sleeps_when_idle() {
    let before = threads();
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(
        Config::default()
            .rings(4)
            .sqpoll(Some(SqPoll {
                idle: Duration::from_millis(10),
                cpu: None,
            }))
            .sqpoll_fallback(false),
    ) else {
        return;
    };
    assert!(adapter.sqpoll());
    // io_uring_setup creates its kernel threads before it returns. Each starts with its
    // creator's name and renames itself (`iou-sqp-<pid>` for an SQPOLL thread) once it runs.
    let creator = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let new: Vec<String> = threads().difference(&before).cloned().collect();
    wait_until("every new thread has named itself", || {
        new.iter()
            .all(|t| thread_name(t).is_none_or(|n| n != creator))
    });
    let sqpoll: Vec<String> = new
        .iter()
        .filter_map(|t| thread_name(t).filter(|n| n.starts_with("iou-sqp")))
        .collect();
    assert_eq!(
        sqpoll.len(),
        1,
        "one SQPOLL thread for four rings: {sqpoll:?}"
    );

    // Every ring is served by it. After an idle spell it sets NEED_WAKEUP on each of its rings
    // and sleeps; a post then wakes it with one io_uring_enter(SQ_WAKEUP), counted in the stats.
    for cq in 0..4 {
        let wq = adapter.work_queue(cq, Target::Fd(-1), 4, 4).unwrap();
        let queue = wq.ring();
        wait_until("the SQPOLL thread sleeps", || {
            queue.sqpoll_sleeping() == Some(true)
        });
        let enters = queue.stats().enters;
        wq.post(Op::nop(cq as u64)).unwrap();
        assert_eq!(
            queue.stats().enters - enters,
            1,
            "a post to the sleeping SQPOLL thread wakes it with one enter"
        );
        let mut out = Vec::new();
        queue
            .wait(&mut out, 1, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!((out.len(), out[0].cookie, out[0].result), (1, cq as u64, 0));
    }
    let s = adapter.stats();
    assert_eq!((s.submitted, s.completed, s.enters), (4, 4, 4), "{s:?}");
}
