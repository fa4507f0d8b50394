//! Resizing a completion queue: under load with every completion seen once (reads through a
//! fixed file among them), with operations in flight on the replaced ring, the new size in
//! effect, and a shrink below the in-flight count.

mod common;

use regio_testkit::TempFile;
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::config;
use regio_adapters::{Adapter, Completion, CqSet, Error, Op, PostError, Target, WorkQueue};
use regio_pool::{Message, MessagePool};

const BUFS: usize = 64;

/// An adapter with a pool attached, or `None` after a skip when io_uring is disabled here.
fn adapter_and_pool(rings: usize, sqpoll: bool) -> Option<(Adapter<Message>, MessagePool)> {
    let cfg = config(rings, sqpoll).cq_entries(128);
    let adapter = common::adapter_or_skip::<Message>(cfg)?;
    let pool = MessagePool::builder()
        .class(4096, BUFS as u32)
        .build()
        .unwrap();
    pool.attach(adapter.registrar()).unwrap();
    Some((adapter, pool))
}

/// Resizes `cq` to `entries`, retrying while the ring of an earlier resize drains.
fn resize(adapter: &Adapter<Message>, cq: usize, entries: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match adapter.resize_completion_queue(cq, entries) {
            Ok(()) => return,
            Err(Error::ResizeDraining { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("resize failed: {e}"),
        }
    }
}

fn resize_under_load(sqpoll: bool) {
    const POSTERS: u64 = 2;
    const PER_POSTER: u64 = 3000;
    let total = POSTERS * PER_POSTER;
    let Some((adapter, pool)) = adapter_and_pool(2, sqpoll) else {
        return;
    };
    let (file, path) = TempFile::pattern("adapters", 64 * 1024).keep();
    let set = Arc::new(CqSet::new(adapter.rings()).unwrap());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let reaped = Arc::new(AtomicU64::new(0));
    // Each poster gets its buffers back from the reapers, so a buffer parked in a reaper's
    // thread cache of the pool never starves it.
    let (returns, inboxes): (Vec<_>, Vec<_>) = (0..POSTERS).map(|_| mpsc::channel()).unzip();
    let reapers: Vec<_> = (0..2)
        .map(|_| {
            let (set, seen, reaped) = (Arc::clone(&set), Arc::clone(&seen), Arc::clone(&reaped));
            let returns: Vec<mpsc::Sender<Message>> = returns.clone();
            std::thread::spawn(move || {
                let mut out: Vec<Completion<Message>> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                // Relaxed: a countdown to stop on; nothing is published through it.
                while reaped.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                    set.wait(&mut out, 64, Some(Duration::from_millis(10)))
                        .unwrap();
                    let mut seen = seen.lock().unwrap();
                    for c in out.drain(..) {
                        assert_eq!(c.result, 4096, "read_fixed of a full block");
                        let msg = c.buf.expect("a read's final completion returns its buffer");
                        let offset = (c.cookie % 16) as usize * 4096;
                        assert_eq!(msg.as_slice()[0], (offset % 251) as u8);
                        assert!(seen.insert(c.cookie), "completion {} seen twice", c.cookie);
                        // Relaxed: a count of completions; the seen-set mutex orders the rest.
                        reaped.fetch_add(1, Ordering::Relaxed);
                        // A poster that is done has dropped its inbox; the buffer goes back to
                        // the pool then.
                        let _ = returns[(c.cookie / PER_POSTER) as usize].send(msg);
                    }
                }
            })
        })
        .collect();
    drop(returns);
    // Poster 1 reads through a fixed file, which each resize of its CQ carries to the new ring
    // while it posts.
    adapter
        .set_file(regio_adapters::FileSlot(0), file.as_raw_fd())
        .unwrap();
    let posters: Vec<_> = (0..POSTERS)
        .zip(inboxes)
        .map(|(t, inbox)| {
            let target = match t {
                1 => Target::Fixed(regio_adapters::FileSlot(0)),
                _ => Target::Fd(file.as_raw_fd()),
            };
            let wq = adapter.work_queue(t as usize % 2, target, 16, 16).unwrap();
            let mut own: Vec<Message> = (0..16).map(|_| pool.try_acquire().unwrap()).collect();
            std::thread::spawn(move || {
                for i in 0..PER_POSTER {
                    let cookie = t * PER_POSTER + i;
                    let msg = own.pop().unwrap_or_else(|| {
                        inbox
                            .recv_timeout(Duration::from_secs(20))
                            .expect("a buffer comes back")
                    });
                    let mut op = Op::read_fixed(msg, (cookie % 16) * 4096, cookie);
                    loop {
                        match wq.post(op) {
                            Ok(()) => break,
                            Err(PostError::Closed(_)) => panic!("work queue closed"),
                            Err(e) => {
                                op = e.into_inner();
                                std::thread::yield_now();
                            }
                        }
                    }
                }
                wq
            })
        })
        .collect();
    let sizes = [512, 1024, 256, 128, 2048];
    let mut resizes = 0;
    loop {
        for &entries in &sizes {
            resize(&adapter, resizes % 2, entries);
            resizes += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        if posters.iter().all(|p| p.is_finished()) {
            break;
        }
    }
    let wqs: Vec<_> = posters.into_iter().map(|p| p.join().unwrap()).collect();
    for r in reapers {
        r.join().unwrap();
    }
    // Relaxed: every reaper was joined, which orders its increments before this load.
    assert_eq!(reaped.load(Ordering::Relaxed), total, "completions lost");
    assert_eq!(seen.lock().unwrap().len() as u64, total);
    assert!(resizes >= sizes.len());
    for wq in &wqs {
        assert_eq!(wq.credits(), (16, 16), "every credit came back");
    }
    let stats = adapter.stats();
    assert_eq!(stats.completed, total);
    assert_eq!(stats.submitted, total);
    assert_eq!(
        pool.available(0),
        BUFS,
        "every buffer went back to the pool"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn resize_while_threads_post_and_reap_sqpoll() {
    resize_under_load(true);
}

#[test]
fn resize_while_threads_post_and_reap_interrupt_driven() {
    resize_under_load(false);
}

#[test]
fn a_receive_in_flight_completes_on_the_replaced_ring() {
    let Some((adapter, pool)) = adapter_and_pool(1, true) else {
        return;
    };
    let (mut client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 4, 4)
        .unwrap();
    let cq = wq.ring();
    let set = CqSet::new([cq.clone()]).unwrap();
    wq.post(Op::recv(pool.try_acquire().unwrap(), 0, 1))
        .unwrap();
    let old_fd = cq.ring_fd();
    adapter.resize_completion_queue(0, 1024).unwrap();
    assert_eq!(cq.entries(), 1024);
    assert_ne!(cq.ring_fd(), old_fd, "a new ring took over");
    match adapter.resize_completion_queue(0, 512) {
        Err(Error::ResizeDraining { in_flight: 1 }) => {}
        other => panic!("expected ResizeDraining, got {other:?}"),
    }
    // A post after the resize goes to the new ring; both complete through the same CQ, and
    // the CqSet made before the resize is woken by both (they share the eventfd).
    wq.post(Op::nop(2)).unwrap();
    client.write_all(b"across the resize").unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < 2 && Instant::now() < deadline {
        set.wait(&mut out, 8, Some(Duration::from_millis(100)))
            .unwrap();
    }
    let mut cookies: Vec<_> = out.iter().map(|c| c.cookie).collect();
    cookies.sort_unstable();
    assert_eq!(cookies, [1, 2]);
    let recv = out.iter_mut().find(|c| c.cookie == 1).unwrap();
    assert_eq!(recv.result, 17);
    let msg = recv.buf.take().unwrap();
    assert_eq!(&msg.as_slice()[..17], b"across the resize");
    drop(msg);
    // The old ring drained with that reap, so another resize may go ahead.
    adapter.resize_completion_queue(0, 512).unwrap();
    assert_eq!(cq.entries(), 512);
    assert_eq!(wq.credits(), (4, 4));
    assert_eq!(pool.available(0), BUFS);
}

/// Posts `n` nops on a fresh work queue of CQ 0 and reaps them all; returns the overflows the
/// CQ counted meanwhile.
fn burst_of_nops(adapter: &Adapter<Message>, n: u64) -> u64 {
    let before = adapter.stats().cq_overflows;
    let wq = adapter
        .work_queue(0, Target::Fd(-1), n as u32, n as u32)
        .unwrap();
    for i in 0..n {
        wq.post(Op::nop(i)).unwrap();
    }
    let cq = wq.ring();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (out.len() as u64) < n && Instant::now() < deadline {
        cq.wait(&mut out, 1024, Some(Duration::from_millis(100)))
            .unwrap();
    }
    let cookies: HashSet<_> = out.iter().map(|c| c.cookie).collect();
    assert_eq!(cookies.len() as u64, n, "every nop completed once");
    adapter.remove_work_queue(&wq);
    adapter.stats().cq_overflows - before
}

#[test]
fn a_larger_cq_holds_more_pending_completions_without_overflow() {
    // Interrupt-driven: every nop completes inside the submitting thread's io_uring_enter, so
    // all of them are pending before the first reap.
    let Some((adapter, _pool)) = adapter_and_pool(1, false) else {
        return;
    };
    assert_eq!(adapter.ring(0).unwrap().entries(), 128);
    assert!(
        burst_of_nops(&adapter, 400) > 0,
        "400 pending completions overflow a 128-entry CQ"
    );
    adapter.resize_completion_queue(0, 512).unwrap();
    assert_eq!(
        burst_of_nops(&adapter, 400),
        0,
        "a 512-entry CQ holds 400 pending completions"
    );
}

/// Posts `op`, waiting while the SQ is full (the SQPOLL thread empties it).
fn post_when_room(wq: &WorkQueue<Message>, mut op: Op<Message>) {
    loop {
        match wq.post(op) {
            Ok(()) => return,
            Err(PostError::Full(o)) => {
                op = o;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("post failed: {e}"),
        }
    }
}

#[test]
fn shrinking_below_the_operations_in_flight_is_refused() {
    const N: u64 = 100;
    let Some((adapter, _pool)) = adapter_and_pool(1, true) else {
        return;
    };
    adapter.resize_completion_queue(0, 256).unwrap();
    let wq = adapter
        .work_queue(0, Target::Fd(-1), 2 * N as u32, 2 * N as u32)
        .unwrap();
    let cq = wq.ring();
    for i in 0..N {
        post_when_room(&wq, Op::timeout(Duration::from_secs(30), i));
    }
    match adapter.resize_completion_queue(0, 64) {
        Err(e @ Error::CqTooSmall { .. }) => {
            assert!(
                e.to_string().contains("100 operations are in flight"),
                "{e}"
            );
        }
        other => panic!("expected CqTooSmall, got {other:?}"),
    }
    assert_eq!(cq.entries(), 256, "a refused resize changes nothing");
    assert!(matches!(
        adapter.resize_completion_queue(0, 32),
        Err(Error::Invalid(_))
    ));
    // Enough room: the timeouts stay on the old ring, and are cancelled there.
    adapter.resize_completion_queue(0, 128).unwrap();
    for i in 0..N {
        post_when_room(&wq, Op::cancel(i, N + i));
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (out.len() as u64) < 2 * N && Instant::now() < deadline {
        cq.wait(&mut out, 256, Some(Duration::from_millis(100)))
            .unwrap();
    }
    assert_eq!(out.len() as u64, 2 * N);
    for c in &out {
        let want = if c.cookie < N { -libc::ECANCELED } else { 0 };
        assert_eq!(c.result, want, "completion {}", c.cookie);
    }
    adapter.resize_completion_queue(0, 64).unwrap();
    assert_eq!(cq.entries(), 64);
}

#[test]
fn a_message_reaches_the_resized_ring() {
    let Some((adapter, _pool)) = adapter_and_pool(2, true) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 4, 4).unwrap();
    let target = adapter.ring(1).unwrap();
    // Built before the resize, posted after: the target's fd is read when the SQE is built.
    let early = Op::msg_ring(&target, 7, 0, 1);
    adapter.resize_completion_queue(1, 512).unwrap();
    wq.post(early).unwrap();
    wq.post(Op::msg_ring(&target, 8, 0, 2)).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages.len() < 2 && Instant::now() < deadline {
        target
            .wait(&mut messages, 8, Some(Duration::from_millis(100)))
            .unwrap();
    }
    let mut values: Vec<_> = messages.iter().map(|c| (c.wq, c.cookie)).collect();
    values.sort_unstable_by_key(|&(_, v)| v);
    assert_eq!(values, [(None, 7), (None, 8)]);
}

#[test]
fn a_resize_with_a_provided_buffer_ring_is_refused() {
    let Some((adapter, _pool)) = adapter_and_pool(1, true) else {
        return;
    };
    let provided = adapter.provided_ring(0, 1, 8).unwrap();
    assert!(matches!(
        adapter.resize_completion_queue(0, 512),
        Err(Error::Invalid(m)) if m.contains("provided-buffer")
    ));
    drop(provided);
    // Fixed files no longer stop a resize: they are carried (tests/files.rs).
    let file = std::fs::File::open("/dev/null").unwrap();
    adapter
        .set_file(regio_adapters::FileSlot(0), file.as_raw_fd())
        .unwrap();
    adapter.resize_completion_queue(0, 512).unwrap();
    assert_eq!(adapter.ring(0).unwrap().entries(), 512);
}
