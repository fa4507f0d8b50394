//! Tasks: spawn and join from outside and inside, spawn_local, cross-thread spawns and wakes,
//! panics, abort, block_on misuse, and the wake-up of a parked worker through its eventfd.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Gate;
use regio_runtime::{nop, spawn, spawn_local, time, JoinError};
use regio_testkit::within;

/// The text of a panic payload.
fn text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The message of a task's panic.
fn message(e: JoinError) -> String {
    assert!(e.is_panic(), "{e:?}");
    text(e.try_into_panic().unwrap())
}

#[test]
fn spawn_and_join_from_outside_and_from_inside() {
    let Some(rt) = common::runtime(2) else { return };
    // From outside: Runtime::spawn, joined in block_on and from a plain thread.
    let outside = rt.spawn(async { 1 + 1 });
    assert_eq!(rt.block_on(outside).unwrap(), 2);
    let other = rt.spawn(async { "elsewhere" });
    assert_eq!(regio_testkit::block_on(other).unwrap(), "elsewhere");
    // From inside block_on, and from inside a task on a worker.
    let nested = rt.block_on(async {
        let outer = spawn(async {
            let inner = spawn(async {
                nop().await.unwrap();
                20
            });
            let local = spawn_local(async {
                let not_send = Rc::new(1);
                nop().await.unwrap();
                *not_send
            });
            inner.await.unwrap() + local.await.unwrap()
        });
        outer.await.unwrap() + spawn(async { 100 }).await.unwrap()
    });
    assert_eq!(nested, 121);
    // block_on may nest outside the workers.
    assert_eq!(rt.block_on(async { rt.block_on(async { 3 }) }), 3);
}

#[test]
fn ten_thousand_cross_thread_spawns_and_wakes_finish_in_time() {
    const TASKS: usize = 10_000;
    let Some(rt) = common::runtime(2) else { return };
    let rt = Arc::new(rt);
    let finished = within(Duration::from_secs(120), "10k spawns and wakes", {
        let rt = Arc::clone(&rt);
        move || {
            // Load: tasks that keep both workers busy with nops the whole time.
            let stop = Arc::new(AtomicBool::new(false));
            let load: Vec<_> = (0..4)
                .map(|_| {
                    let stop = Arc::clone(&stop);
                    rt.spawn(async move {
                        let mut n = 0u64;
                        // Relaxed: a stop flag; the join orders the rest.
                        while !stop.load(Ordering::Relaxed) {
                            nop().await.unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let done = Arc::new(AtomicUsize::new(0));
            let waiting = Arc::new(AtomicUsize::new(0));
            let gates: Vec<_> = (0..TASKS).map(|_| Arc::new(Gate::default())).collect();
            let handles: Vec<_> = gates
                .iter()
                .map(|gate| {
                    let (gate, done, waiting) =
                        (Arc::clone(gate), Arc::clone(&done), Arc::clone(&waiting));
                    rt.spawn(async move {
                        // Relaxed: a count this thread only waits on.
                        waiting.fetch_add(1, Ordering::Relaxed);
                        gate.passed().await;
                        // Relaxed: a count read after every task was joined.
                        done.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            // Open the gates once the tasks wait at them, so that the wakes cross threads.
            // Relaxed: a count to wait on.
            common::eventually("every task waits", || {
                waiting.load(Ordering::Relaxed) == TASKS
            });
            // Every wake comes from another thread: half from this one, half from a task.
            let (ours, theirs) = gates.split_at(TASKS / 2);
            let theirs: Vec<_> = theirs.to_vec();
            let opener = rt.spawn(async move {
                for gate in theirs {
                    gate.open();
                }
            });
            for gate in ours {
                gate.open();
            }
            regio_testkit::block_on(opener).unwrap();
            for h in handles {
                regio_testkit::block_on(h).unwrap();
            }
            // Relaxed: see the load tasks.
            stop.store(true, Ordering::Relaxed);
            let nops: u64 = load
                .into_iter()
                .map(|h| regio_testkit::block_on(h).unwrap())
                .sum();
            // Relaxed: every task was joined above.
            (done.load(Ordering::Relaxed), nops)
        }
    });
    assert_eq!(finished.0, TASKS);
    assert!(finished.1 > 0, "the load tasks ran");
    let stats = rt.stats();
    let spawned: u64 = stats.iter().map(|s| s.inbox_spawns).sum();
    let remote_wakes: u64 = stats.iter().map(|s| s.remote_wakes).sum();
    assert!(spawned >= TASKS as u64, "{stats:?}");
    assert!(remote_wakes > 0, "{stats:?}");
}

#[test]
fn a_panicking_task_gives_a_join_error_and_its_worker_goes_on() {
    let Some(rt) = common::runtime(1) else { return };
    let boom = rt.spawn(async {
        nop().await.unwrap();
        panic!("boom in a task");
    });
    let err = rt.block_on(boom).unwrap_err();
    assert!(err.to_string().contains("boom in a task"), "{err}");
    assert_eq!(message(err), "boom in a task");
    // The one worker survived: it runs the next task, with I/O.
    let after = rt.spawn(async {
        nop().await.unwrap();
        time::sleep(Duration::from_millis(1)).await;
        "alive"
    });
    assert_eq!(rt.block_on(after).unwrap(), "alive");
}

#[test]
fn abort_cancels_a_waiting_task_and_spares_a_finished_one() {
    let Some(rt) = common::runtime(2) else { return };
    let sleeper = rt.spawn(async {
        time::sleep(Duration::from_secs(60)).await;
        1
    });
    let started = Instant::now();
    sleeper.abort();
    let err = rt.block_on(sleeper).unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let quick = rt.spawn(async { 7 });
    common::eventually("the quick task finished", || quick.is_finished());
    quick.abort();
    assert_eq!(rt.block_on(quick).unwrap(), 7);

    // A task aborted from inside another task, and one that aborts itself through its handle.
    let out = rt.block_on(async {
        let victim = spawn(async { std::future::pending::<()>().await });
        victim.abort();
        victim.await.unwrap_err().is_cancelled()
    });
    assert!(out);
}

#[test]
fn block_on_inside_a_worker_panics_with_a_clear_message() {
    let Some(rt) = common::runtime(1) else { return };
    let rt = Arc::new(rt);
    let inner = Arc::clone(&rt);
    let task = rt.spawn(async move { inner.block_on(async { 1 }) });
    let err = rt.block_on(task).unwrap_err();
    let msg = message(err);
    assert!(
        msg.contains("cannot block_on inside a regio worker"),
        "{msg}"
    );
    // The worker is fine afterwards.
    assert_eq!(rt.block_on(rt.spawn(async { 2 })).unwrap(), 2);
}

#[test]
fn spawn_functions_off_a_runtime_panic_with_a_clear_message() {
    let spawned = catch_unwind(|| drop(spawn(async {})));
    let msg = text(spawned.unwrap_err());
    assert!(msg.contains("outside a regio runtime"), "{msg}");
    let local = catch_unwind(|| drop(spawn_local(async {})));
    let msg = text(local.unwrap_err());
    assert!(msg.contains("off a regio worker thread"), "{msg}");
    // Inside block_on (not a worker) spawn works and spawn_local still refuses.
    let Some(rt) = common::runtime(1) else { return };
    let refused = rt.block_on(async {
        catch_unwind(AssertUnwindSafe(|| drop(spawn_local(async {})))).is_err()
    });
    assert!(refused);
}

#[test]
fn a_parked_worker_wakes_for_a_remote_spawn_through_its_eventfd() {
    let Some(rt) = common::runtime(1) else { return };
    // Let the worker go idle and park.
    common::eventually("the worker parked", || rt.stats()[0].parks > 0);
    std::thread::sleep(Duration::from_millis(20));
    let before = rt.stats()[0];
    let started = Instant::now();
    assert_eq!(rt.block_on(rt.spawn(async { 5 })).unwrap(), 5);
    let after = rt.stats()[0];
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the spawn waited {:?}: the worker did not wake",
        started.elapsed()
    );
    assert!(
        after.wakeup_signals > before.wakeup_signals,
        "the spawn rang the parked worker's eventfd: {before:?} -> {after:?}"
    );
    assert!(after.inbox_spawns > before.inbox_spawns);
}

#[test]
fn stats_count_what_the_workers_do() {
    let Some(rt) = common::runtime(2) else { return };
    rt.block_on(async {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                spawn(async {
                    for _ in 0..10 {
                        nop().await.unwrap();
                    }
                    time::sleep(Duration::from_millis(2)).await;
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    let stats = rt.stats();
    assert_eq!(stats.len(), 2);
    let sum = |f: fn(&regio_runtime::WorkerStats) -> u64| stats.iter().map(f).sum::<u64>();
    assert!(sum(|s| s.tasks_polled) >= 8 * 11, "{stats:?}");
    assert!(sum(|s| s.ops_submitted) >= 80, "{stats:?}");
    assert!(sum(|s| s.completions) >= 80, "{stats:?}");
    assert!(sum(|s| s.reaps) > 0, "{stats:?}");
    assert!(sum(|s| s.timers_fired) >= 8, "{stats:?}");
    assert_eq!(stats[1].worker, 1);
    common::eventually("every task gone", || {
        rt.stats().iter().all(|s| s.live_tasks == 0)
    });
}
