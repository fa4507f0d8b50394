//! With SQPOLL and `Config::sqpoll_publish_every(8)` a [`Batch`](regio_adapters::Batch)
//! publishes its staged SQEs to the polling kernel thread every 8 posts, before its commit. In
//! its own test binary: it runs an SQPOLL thread of its own, which `sqpoll.rs` (counting the
//! process's SQPOLL threads) must not see.

mod common;

use std::time::Duration;

use common::TestBuf;
use regio_adapters::{Adapter, Config, Op, PostError, Ring, SqPoll, Target};

/// An adapter of `config` whose SQPOLL thread, once awake, polls for the whole test, and whose
/// batches publish every 8 posts; `None` where SQPOLL is refused (skipped).
fn publishing_every_8(config: Config) -> Option<Adapter<TestBuf>> {
    common::adapter_or_skip::<TestBuf>(
        config
            .sqpoll(Some(SqPoll {
                idle: Duration::from_secs(30),
                cpu: None,
            }))
            .sqpoll_fallback(false)
            .sqpoll_publish_every(8),
    )
}

/// The cookies of the next `n` completions of `ring`, sorted; each must have succeeded.
fn succeeded_cookies(ring: &Ring<TestBuf>, n: usize) -> Vec<u64> {
    let mut cookies: Vec<u64> = common::collect(ring, n)
        .iter()
        .map(|c| {
            assert_eq!(c.result, 0);
            c.cookie
        })
        .collect();
    cookies.sort_unstable();
    cookies
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

/// With SQPOLL and `sqpoll_publish_every(8)` a batch hands its posts to the polling kernel
/// thread 8 at a time, before its commit and with no system call: the 9th post publishes the first 8, which complete (the
/// kernel signals the CQ eventfd) while the batch is still open and has neither committed nor
/// reaped.
#[test]
fn a_batch_publishes_every_8_posts_to_a_polling_sqpoll_thread() {
    let Some(adapter) = publishing_every_8(Config::default().rings(1)) else {
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
    assert_eq!(succeeded_cookies(&ring, 9), (0..9).collect::<Vec<_>>());
    assert_eq!(wq.credits(), (16, 16), "every credit came back");
}

/// Publishing early frees SQ slots as the kernel thread takes the SQEs, so one batch may stage
/// many times the SQ's size without a commit: every post still lands, once, in order of
/// staging (a staging cursor that ran past its buffer would overwrite staged SQEs).
#[test]
fn a_batch_stages_past_the_sq_size_when_publishing_early() {
    let Some(adapter) =
        publishing_every_8(Config::default().rings(1).sq_entries(16).cq_entries(512))
    else {
        return;
    };
    const POSTS: u64 = 300;
    let wq = adapter
        .work_queue(0, Target::Fd(-1), POSTS as u32, POSTS as u32)
        .unwrap();
    let ring = wq.ring();
    let mut batch = ring.batch().expect("this thread alone posts");
    for cookie in 0..POSTS {
        let mut op = Op::nop(cookie);
        // A full SQ (the kernel thread has not taken the SQEs yet): commit, then again; bounded.
        let mut posted = false;
        for _ in 0..100_000 {
            match batch.post(&wq, op) {
                Ok(()) => {
                    posted = true;
                    break;
                }
                Err(PostError::Full(back)) => {
                    op = back;
                    batch.commit().unwrap();
                    std::thread::yield_now();
                }
                Err(e) => panic!("post {cookie}: {e}"),
            }
        }
        assert!(posted, "post {cookie} found no room");
    }
    batch.commit().unwrap();
    drop(batch);
    assert_eq!(
        succeeded_cookies(&ring, POSTS as usize),
        (0..POSTS).collect::<Vec<_>>()
    );
    assert_eq!(wq.credits(), (POSTS as u32, POSTS as u32));
}
