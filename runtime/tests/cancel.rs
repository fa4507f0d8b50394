//! Cancellation and shutdown: dropped and aborted operations give every buffer back to the pool
//! and leave no descriptor open; explicit cancels return the real result and the buffer;
//! shutdown with operations in flight and sleeping tasks is prompt; a runtime dropped from one
//! of its own tasks shuts down by itself.
//!
//! The tests count the process's open descriptors, so they run one at a time (`common::serial`).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regio_runtime::op::{submit, Build, Message, Op, Submit};
use regio_runtime::{fs::File, nop, spawn, time};

/// A nop that carries `msg` (its descriptor's opcode is `Nop`): the message comes back with the
/// completion.
fn nop_with(msg: Message) -> Submit<impl Build> {
    submit(Some(msg), |msg, cookie| {
        let mut msg = msg.expect("made with a message");
        msg.descriptor_mut().cookie = cookie;
        Op::from_message(msg).expect("a fresh message's descriptor is a valid nop")
    })
}

#[test]
fn thousands_of_timeouts_and_aborts_leak_no_buffer_and_no_descriptor() {
    let _serial = common::serial();
    const TASKS: usize = 4000;
    let fds_before_runtime = common::open_fds();
    let Some(rt) = common::runtime(2) else { return };
    let pool = rt.pool().clone();
    let fds = common::open_fds();
    regio_testkit::within(Duration::from_secs(120), "the cancellation stress", {
        let pool = pool.clone();
        move || {
            rt.block_on(async {
                let handles: Vec<_> = (0..TASKS)
                    .map(|i| {
                        let pool = pool.clone();
                        let short = Duration::from_micros((i % 7) as u64 * 15);
                        spawn(async move {
                            match i % 5 {
                                0 => drop(time::timeout(short, nop()).await),
                                1 => drop(
                                    time::timeout(short, time::sleep(Duration::from_micros(100)))
                                        .await,
                                ),
                                2 => {
                                    let msg = pool.acquire().await;
                                    drop(time::timeout(short, nop_with(msg)).await);
                                }
                                3 => {
                                    // A kernel timeout that never fires in time: always
                                    // cancelled in the kernel.
                                    let long = submit(None, |_, cookie| {
                                        Op::timeout(Duration::from_secs(60), cookie)
                                    });
                                    drop(time::timeout(short, long).await);
                                }
                                _ => {
                                    // Dropped before its first poll, after it, and awaited.
                                    let msg = pool.acquire().await;
                                    drop(nop_with(msg));
                                    let msg = pool.acquire().await;
                                    let mut started = nop_with(msg);
                                    let _ = futures_poll_once(&mut started).await;
                                    drop(started);
                                    let msg = pool.acquire().await;
                                    let done = nop_with(msg).await;
                                    assert_eq!(done.result, 0);
                                    assert!(done.buf.is_some(), "the buffer comes back");
                                }
                            }
                        })
                    })
                    .collect();
                for h in handles.iter().step_by(3) {
                    h.abort();
                }
                for h in handles {
                    if let Err(e) = h.await {
                        assert!(e.is_cancelled(), "{e}");
                    }
                }
            });
            common::eventually_pool_full(&pool, "every buffer back in the pool");
            assert_eq!(common::open_fds(), fds, "descriptors leaked");
            let stats = rt.stats();
            assert!(stats.iter().map(|s| s.ops_submitted).sum::<u64>() > 0);
            drop(rt);
        }
    });
    common::assert_pool_full(&pool);
    drop(pool);
    assert_eq!(
        common::open_fds(),
        fds_before_runtime,
        "the runtime left descriptors open"
    );
}

/// Polls `future` once and returns whether it was ready.
async fn futures_poll_once<F: std::future::Future + Unpin>(future: &mut F) -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx).is_ready())
    })
    .await
}

#[test]
fn shutdown_with_operations_in_flight_and_a_sleeping_task_is_prompt() {
    let _serial = common::serial();
    let fds_before = common::open_fds();
    let Some(rt) = common::runtime(2) else { return };
    let pool = rt.pool().clone();
    let (reader, writer) = common::pipe();
    let file = Arc::new(File::from_std(reader));
    // A read that waits for data that never comes, a kernel timeout of a minute, a task asleep
    // for a minute, and a task waiting on the read.
    let read = rt.spawn({
        let (file, pool) = (Arc::clone(&file), pool.clone());
        async move {
            let msg = pool.acquire().await;
            file.read_at(msg, 0).await.0.map(drop)
        }
    });
    let kernel_timeout = rt.spawn(async {
        submit(None, |_, cookie| {
            Op::timeout(Duration::from_secs(60), cookie)
        })
        .await
        .result
    });
    let sleeper = rt.spawn(async { time::sleep(Duration::from_secs(60)).await });
    common::eventually("the operations are in the kernel", || {
        rt.stats().iter().map(|s| s.ops_submitted).sum::<u64>() >= 2
    });
    std::thread::sleep(Duration::from_millis(10));
    let started = Instant::now();
    rt.shutdown(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    for err in [
        regio_testkit::block_on(read).map(drop).unwrap_err(),
        regio_testkit::block_on(kernel_timeout)
            .map(drop)
            .unwrap_err(),
        regio_testkit::block_on(sleeper).unwrap_err(),
    ] {
        assert!(err.is_cancelled(), "{err:?}");
    }
    common::assert_pool_full(&pool);
    drop((file, writer, pool));
    assert_eq!(common::open_fds(), fds_before, "descriptors leaked");
}

#[test]
fn an_explicit_cancel_returns_the_real_result_and_the_buffer() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let pool = rt.pool().clone();
    let (reader, mut writer) = common::pipe();
    let file = Arc::new(File::from_std(reader));
    let (cancelled, unstarted, raced) = rt
        .block_on(rt.spawn({
            let (file, pool) = (Arc::clone(&file), pool.clone());
            async move {
                // In the kernel, waiting for data: cancelled, with its buffer.
                let mut read = file.read_at(pool.acquire().await, 0).into_submit();
                assert!(!futures_poll_once(&mut read).await);
                time::sleep(Duration::from_millis(5)).await;
                let cancelled = read.cancel().await;
                // Never polled: cancelled at once, with its buffer.
                let unstarted = file
                    .read_at(pool.acquire().await, 0)
                    .into_submit()
                    .cancel()
                    .await;
                // Data already there: the read wins the race, and the cancel reports its result.
                let mut read = file.read_at(pool.acquire().await, 0).into_submit();
                assert!(!futures_poll_once(&mut read).await);
                (cancelled, unstarted, read)
            }
        }))
        .unwrap();
    assert_eq!(cancelled.result, -libc::ECANCELED);
    assert!(cancelled.buf.is_some());
    assert_eq!(unstarted.result, -libc::ECANCELED);
    assert!(unstarted.buf.is_some());
    drop((cancelled, unstarted));
    writer.write_all(b"raced").unwrap();
    // The third read was started on the worker: finish it there.
    let raced = rt.block_on(rt.spawn(async move {
        time::sleep(Duration::from_millis(20)).await;
        raced.cancel().await
    }));
    // It moved to another task on the same (only) worker: still its worker.
    let raced = raced.unwrap();
    assert!(
        raced.result == 5 || raced.result == -libc::ECANCELED,
        "{}",
        raced.result
    );
    assert!(raced.buf.is_some());
    drop(raced);
    common::eventually_pool_full(&pool, "every buffer back in the pool");
}

#[test]
fn a_read_dropped_then_completed_gives_its_buffer_back() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let pool = rt.pool().clone();
    let (reader, mut writer) = common::pipe();
    let file = Arc::new(File::from_std(reader));
    let timed_out = rt.block_on(rt.spawn({
        let (file, pool) = (Arc::clone(&file), pool.clone());
        async move {
            let msg = pool.acquire().await;
            time::timeout(Duration::from_millis(5), file.read_at(msg, 0))
                .await
                .is_err()
        }
    }));
    assert!(timed_out.unwrap());
    // Data arrives after the drop: whether the cancel or the data got there first, the buffer
    // comes back to the pool with the read's final completion.
    writer.write_all(b"late").unwrap();
    common::eventually_pool_full(&pool, "the dropped read's buffer is back");
}

#[test]
fn a_runtime_dropped_from_its_own_task_shuts_down_by_itself() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(2) else { return };
    // The other tests of this binary wait for `common::serial`: these are the only workers.
    assert_eq!(common::worker_threads(), 2);
    let sleeper = rt.spawn(async { time::sleep(Duration::from_secs(60)).await });
    let slot: Arc<Mutex<Option<regio_runtime::Runtime>>> = Arc::new(Mutex::new(None));
    let dropper = rt.spawn({
        let slot = Arc::clone(&slot);
        async move {
            loop {
                let taken = slot.lock().unwrap().take();
                if let Some(rt) = taken {
                    // Returns at once: the workers finish the shutdown themselves.
                    drop(rt);
                    return "dropped";
                }
                time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    *slot.lock().unwrap() = Some(rt);
    assert_eq!(
        regio_testkit::within(Duration::from_secs(10), "the dropping task", || {
            regio_testkit::block_on(dropper)
        })
        .unwrap(),
        "dropped"
    );
    let err = regio_testkit::within(Duration::from_secs(10), "the sleeper", || {
        regio_testkit::block_on(sleeper)
    })
    .unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    common::eventually("the worker threads exited", || {
        common::worker_threads() == 0
    });
}

#[test]
// The task hands its started operation out on purpose, unawaited.
#[allow(clippy::async_yields_async)]
fn an_operation_dropped_on_another_thread_is_cancelled_by_its_worker() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let pool = rt.pool().clone();
    let (reader, writer) = common::pipe();
    let file = Arc::new(File::from_std(reader));
    // Started on the worker (its first poll there), then handed to this thread.
    let read = rt
        .block_on(rt.spawn({
            let (file, pool) = (Arc::clone(&file), pool.clone());
            async move {
                let mut read = file.read_at(pool.acquire().await, 0).into_submit();
                assert!(!futures_poll_once(&mut read).await);
                read
            }
        }))
        .unwrap();
    assert_eq!(
        pool.available(0),
        pool.capacity(0) - 1,
        "the read holds a buffer"
    );
    let submitted = rt.stats()[0].ops_submitted;
    // Polled here it refuses (it belongs to its worker); dropped here, it is mailed back.
    let mut read = read;
    let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        regio_testkit::block_on(futures_poll_once(&mut read))
    }));
    assert!(moved.is_err(), "polling on another thread must panic");
    drop(read);
    common::eventually("the worker posted the cancel", || {
        rt.stats()[0].ops_submitted > submitted
    });
    common::eventually_pool_full(&pool, "the read's buffer is back");
    drop((file, writer));
}
