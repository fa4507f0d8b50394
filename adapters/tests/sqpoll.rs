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

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable_within(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Empties the eventfd `fd` if it holds a count.
fn drain_eventfd(fd: std::os::fd::RawFd) {
    if readable_within(fd, 0) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a local `u64`; the eventfd is readable, so it does not
        // block.
        let n = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
        assert_eq!(n, 8);
    }
}

/// With SQPOLL a batch hands its posts to the polling kernel thread 8 at a time, before its
/// commit and with no system call: the 9th post publishes the first 8, which complete (the
/// kernel signals the CQ eventfd) while the batch is still open and has neither committed nor
/// reaped.
#[test]
fn a_batch_publishes_every_8_posts_to_a_polling_sqpoll_thread() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(
        Config::default()
            .rings(1)
            .sqpoll(Some(SqPoll {
                // Long enough that the thread, once awake, polls for the whole test.
                idle: Duration::from_secs(30),
                cpu: None,
            }))
            .sqpoll_fallback(false),
    ) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 16, 16).unwrap();
    let ring = wq.ring();
    // Wake the thread: a post outside a batch is submitted at once.
    wq.post(Op::nop(100)).unwrap();
    assert_eq!(common::collect(&ring, 1)[0].cookie, 100);
    assert_eq!(ring.sqpoll_sleeping(), Some(false));
    drain_eventfd(ring.notify_fd());
    let enters = ring.stats().enters;

    let mut batch = ring.batch().expect("this thread alone posts");
    for cookie in 0..9 {
        batch.post(&wq, Op::nop(cookie)).unwrap();
    }
    assert!(
        readable_within(ring.notify_fd(), 20_000),
        "the first 8 posts complete before the commit"
    );
    batch.commit().unwrap();
    drop(batch);
    assert_eq!(
        ring.stats().enters,
        enters,
        "the polling thread needed no wake-up"
    );
    let mut cookies: Vec<u64> = common::collect(&ring, 9)
        .iter()
        .map(|c| {
            assert_eq!(c.result, 0);
            c.cookie
        })
        .collect();
    cookies.sort_unstable();
    assert_eq!(cookies, (0..9).collect::<Vec<_>>());
    assert_eq!(wq.credits(), (16, 16), "every credit came back");
}
