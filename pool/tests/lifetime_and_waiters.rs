//! The pool's lifetime and its waiters under hostile use, through the public API only: leaks,
//! early frees, wrong counts, hangs and lost buffers while batches cross threads through the
//! depot (whose batches stay counted as users), short-lived threads, thread-local handles,
//! cache-less threads and waiters.
//!
//! A pool is seen to be freed when its `Inner` drops the registrars it holds: the test keeps an
//! `Arc` of a [`Recorder`] and checks its strong count (1: only the test's) and the unregister
//! calls.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{poll_once, Recorder};
use regio_pool::{Error, Message, MessagePool, PoolBuilder};

/// A pool of one class of `count` buffers, `cache` per thread, `threads` cache slots, with a
/// recorder attached.
fn pool(count: u32, cache: usize, threads: usize) -> (MessagePool, Arc<Recorder>) {
    common::recorded(
        PoolBuilder::new()
            .class(64, count)
            .cache_size(cache)
            .max_threads(threads),
    )
}

/// Whether the pool `rec` was attached to has been freed.
fn freed(rec: &Arc<Recorder>) -> bool {
    Arc::strong_count(rec) == 1
}

/// After everything went back to `pool`: once this thread's cache is flushed, only the handle
/// counts as a user and all `capacity` buffers are free; dropping the handle frees the pool.
fn all_back_then_freed(pool: MessagePool, rec: &Arc<Recorder>, capacity: usize) {
    pool.flush_local();
    assert_eq!(pool.users(), 1, "only the handle is left");
    assert_eq!(pool.available(0), capacity, "no buffer was lost");
    drop(pool);
    assert!(freed(rec));
}

/// The last handle drops on this thread while another thread, with a cache, still holds
/// messages; that thread then drops them all, which overflows its magazine into the depot (a
/// batch counted as users, with no handle left to take it). The pool must stay alive while the
/// thread's cache holds elements, and be freed when the thread exits.
#[test]
fn last_handle_gone_then_a_cache_overflows_into_the_depot() {
    let (pool, rec) = pool(256, 8, 4);
    let msgs: Vec<Message> = (0..200).map(|_| pool.try_acquire().unwrap()).collect();
    let (to_b, from_a) = std::sync::mpsc::channel::<Vec<Message>>();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let b = std::thread::spawn(move || {
        let msgs = from_a.recv().unwrap();
        // Touch a message first so that this thread claims a cache slot through the release.
        drop(msgs);
        dropped_tx.send(()).unwrap();
        exit_rx.recv().unwrap();
    });
    drop(pool);
    assert!(!freed(&rec), "messages are alive");
    to_b.send(msgs).unwrap();
    dropped_rx.recv().unwrap();
    assert!(
        !freed(&rec),
        "the other thread's cache holds elements, so the pool lives"
    );
    exit_tx.send(()).unwrap();
    b.join().unwrap();
    assert!(
        freed(&rec),
        "the cache owner's exit emptied the depot and freed the pool"
    );
    assert_eq!(rec.unregistered.lock().unwrap().len(), 1);
}

/// Many short-lived threads, more than the pool has cache slots, each receive messages and
/// drop them (some with a cache slot, whose magazines overflow into the depot, some without),
/// while the last handle is dropped at a random point among them. The pool must be freed once
/// every thread has exited, never before the last message drops (ASan sees the latter).
#[test]
fn short_lived_threads_beyond_the_slots_free_the_pool_after_the_last_handle() {
    for round in 0..30 {
        let (pool, rec) = pool(512, 16, 3);
        let mut batches: Vec<Vec<Message>> = Vec::new();
        for _ in 0..8 {
            batches.push((0..60).map(|_| pool.try_acquire().unwrap()).collect());
        }
        let start = Arc::new(Barrier::new(9));
        let handles: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    for m in batch {
                        drop(m);
                    }
                })
            })
            .collect();
        start.wait();
        if round % 2 == 0 {
            drop(pool);
            for h in handles {
                h.join().unwrap();
            }
        } else {
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(
                pool.users(),
                1,
                "threads' exits flushed caches and the depot"
            );
            assert_eq!(pool.available(0), 512);
            drop(pool);
        }
        assert!(freed(&rec), "round {round}: the pool was freed");
    }
}

/// One thread acquires and another releases, through the depot, in many rounds; a third thread
/// without a cache slot (the pool has two) acquires and releases on the shared side meanwhile.
/// After every thread has exited and the handle's thread flushed, the count must be exactly the
/// handle, every buffer must be available again, and dropping the handle frees the pool.
#[test]
fn cross_thread_flow_with_a_cacheless_thread_keeps_the_count_exact() {
    let (pool, rec) = pool(256, 32, 2);
    let pool = Arc::new(pool);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Message>>(4);
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(5);
    std::thread::scope(|s| {
        let mut joins = Vec::new();
        let p = &pool;
        let stop2 = stop.clone();
        joins.push(s.spawn(move || {
            for _ in 0..3000 {
                if Instant::now() > deadline {
                    break;
                }
                let mut v = Vec::new();
                for _ in 0..40 {
                    match p.try_acquire() {
                        Ok(m) => v.push(m),
                        Err(_) => break,
                    }
                }
                if tx.send(v).is_err() {
                    break;
                }
            }
            // Relaxed: the flag only ends the loops; the scope's joins order the rest.
            stop2.store(true, Ordering::Relaxed);
        }));
        joins.push(s.spawn(move || {
            while let Ok(v) = rx.recv() {
                drop(v);
            }
        }));
        let stop3 = stop.clone();
        joins.push(s.spawn(move || {
            // Spawned last: both cache slots are likely taken, so this one mostly has none.
            let mut held = Vec::new();
            // Relaxed: the flag only ends the loops; the scope's joins order the rest.
            while !stop3.load(Ordering::Relaxed) {
                if let Ok(m) = p.try_acquire() {
                    held.push(m);
                }
                if held.len() > 5 {
                    held.clear();
                }
            }
        }));
        // Joined, not just scoped: a join waits for the thread-local destructors that
        // flush the thread's cache.
        for j in joins {
            j.join().unwrap();
        }
    });
    all_back_then_freed(Arc::into_inner(pool).unwrap(), &rec, 256);
}

/// Elements released on a thread that never acquired: it claims a cache slot through its
/// releases, fills its magazine and overflows into the depot. Another thread, also with a
/// cache, then refills from that depot. While they are alive the count must account for them
/// exactly (handle + held + cached + depot = capacity - stack, which the flushes reveal), and
/// when they exit nothing is lost.
#[test]
fn release_only_thread_feeds_the_depot_and_nothing_is_lost() {
    let (pool, rec) = pool(128, 16, 8);
    let msgs: Vec<Message> = (0..128).map(|_| pool.try_acquire().unwrap()).collect();
    assert_eq!(pool.users(), 1 + 128);
    std::thread::scope(|s| {
        s.spawn(|| drop(msgs)).join().unwrap();
    });
    // That thread's exit flushed its magazine and the depot onto the stack.
    assert_eq!(pool.users(), 1);
    assert_eq!(pool.available(0), 128);
    // And again, with a consumer thread refilling from the depot while the releaser lives.
    let msgs: Vec<Message> = (0..128).map(|_| pool.try_acquire().unwrap()).collect();
    pool.flush_local();
    assert_eq!(pool.users(), 1 + 128);
    let ready = Barrier::new(2);
    std::thread::scope(|s| {
        let mut joins = Vec::new();
        let ready = &ready;
        let pool = &pool;
        joins.push(s.spawn(move || {
            drop(msgs);
            ready.wait();
            ready.wait();
        }));
        joins.push(s.spawn(move || {
            ready.wait();
            // Everything not in the releaser's magazine is in the depot or on the stack.
            let got: Vec<Message> = std::iter::from_fn(|| pool.try_acquire().ok()).collect();
            assert_eq!(got.len(), 128 - 16, "all but the releaser's magazine");
            drop(got);
            ready.wait();
        }));
        // Joined, not just scoped: a join waits for the thread-local destructors that
        // flush the thread's cache.
        for j in joins {
            j.join().unwrap();
        }
    });
    all_back_then_freed(pool, &rec, 128);
}

/// Async waiters queued on one handle while another thread releases (the releases bypass the
/// caches and go to the waiters) and then drops a second handle of the pool (whose drop flushes
/// that thread's cache and empties the depot), with a third thread's cache holding elements
/// the whole time. Every waiter must be served, the count must come out exact once everything
/// is back, and dropping the last handle frees the pool.
#[test]
fn waiters_granted_by_a_handle_drop_that_empties_the_depot() {
    let (pool, rec) = pool(64, 8, 4);
    let second = pool.clone();
    // Fill the depot: take all, release them on a cache thread that stays alive.
    let msgs: Vec<Message> = (0..64).map(|_| pool.try_acquire().unwrap()).collect();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let keeper = std::thread::spawn(move || {
        // Keep the first 8 so the rest overflow into the depot: hold all, then drop.
        drop(msgs);
        done_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    });
    done_rx.recv().unwrap();
    // The keeper's magazine holds 8; the rest (56) are in the depot's bins or on the stack.
    let mut taken: Vec<Message> = std::iter::from_fn(|| pool.try_acquire().ok()).collect();
    assert_eq!(taken.len(), 56);
    pool.flush_local();
    // Now queue waiters for more than is free, then release on another cache thread.
    let mut waiters: Vec<_> = (0..4).map(|_| pool.acquire()).collect();
    for w in &mut waiters {
        assert!(poll_once(w).is_pending());
    }
    let release = taken.split_off(40);
    std::thread::scope(|s| {
        let mut joins = Vec::new();
        joins.push(s.spawn(move || {
            drop(release);
            // This handle's drop empties the depot: whatever batch sits there goes to waiters.
            drop(second);
        }));
        // Joined, not just scoped: a join waits for the thread-local destructors that
        // flush the thread's cache.
        for j in joins {
            j.join().unwrap();
        }
    });
    let mut got = Vec::new();
    for w in &mut waiters {
        match poll_once(w) {
            std::task::Poll::Ready(m) => got.push(m),
            std::task::Poll::Pending => {}
        }
    }
    assert_eq!(got.len(), 4, "16 released, 4 waiters: all are served");
    drop(waiters);
    drop(got);
    drop(taken);
    go_tx.send(()).unwrap();
    keeper.join().unwrap();
    all_back_then_freed(pool, &rec, 64);
}

/// The low-watermark callback acquires and releases on the pool (through its own handle clone
/// kept in a slot the test empties at the end) while refills come from the depot; growth
/// happens from the callback too. The count must come out exact.
#[test]
fn low_watermark_callback_acquiring_during_depot_refills_keeps_the_count() {
    let slot: Arc<Mutex<Option<MessagePool>>> = Arc::new(Mutex::new(None));
    let fired = Arc::new(AtomicUsize::new(0));
    let (s2, f2) = (slot.clone(), fired.clone());
    let pool = PoolBuilder::new()
        .class(64, 64)
        .cache_size(8)
        .max_threads(4)
        .low_watermark(0, 16, move |_ev| {
            // Relaxed: a count, read after every thread was joined.
            f2.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = s2.lock().unwrap().as_ref() {
                let m = p.try_acquire();
                drop(m);
                if p.regions() < 4 {
                    let _ = p.grow(0, 16);
                }
                p.arm_low_watermark(0);
            }
        })
        .build()
        .unwrap();
    let rec = Arc::new(Recorder::default());
    pool.attach(rec.clone()).unwrap();
    *slot.lock().unwrap() = Some(pool.clone());
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Message>>(2);
    std::thread::scope(|s| {
        let mut joins = Vec::new();
        let p = &pool;
        joins.push(s.spawn(move || {
            for _ in 0..500 {
                let v: Vec<Message> = std::iter::from_fn(|| p.try_acquire().ok())
                    .take(30)
                    .collect();
                if tx.send(v).is_err() {
                    break;
                }
            }
        }));
        joins.push(s.spawn(move || {
            while let Ok(v) = rx.recv() {
                drop(v);
            }
        }));
        // Joined, not just scoped: a join waits for the thread-local destructors that
        // flush the thread's cache.
        for j in joins {
            j.join().unwrap();
        }
    });
    // Relaxed: a count, read after every thread was joined.
    assert!(fired.load(Ordering::Relaxed) > 0, "the watermark fired");
    let cap = pool.capacity(0);
    // The callback's clone is a user: drop it, then flush this thread.
    drop(slot.lock().unwrap().take());
    all_back_then_freed(pool, &rec, cap);
}

/// A lost wake-up, found by attack: a thread without a cache slot takes from the depot once the
/// stack is empty (`take_shared`'s depot path): it claims the bin (BUSY), converts the batch,
/// empties the bin, and only then pushes the rest of the batch onto the stack. A blocking waiter
/// whose recheck (under the wait-list lock) runs while the bin is BUSY, or between the bin's
/// emptying and the push, sees neither the bin nor the stack and queues. The take used to push
/// with no look at the waiters afterwards, so the waiter slept although the stack held free
/// elements; it now serves them after the push, as a release does.
///
/// Setup per round: the only cache owner (max_threads 1) takes every element and releases
/// them, so its magazine overflows one batch into the single depot bin and the stack is empty.
/// Then two cache-less threads race: X takes (from the depot, pushing the rest on the stack)
/// and W waits with `acquire_blocking`. Two takers for a batch of 64: W must always be served;
/// a timeout while the pool has free elements on the shared side is the lost wake-up.
#[test]
fn a_cacheless_take_that_splits_a_depot_batch_wakes_waiters() {
    const CACHE: usize = 128;
    // The cache owner's magazine holds CACHE, the overflow of the last release moves CACHE/2
    // into the bin.
    let total = CACHE as u32 + 1;
    let pool = PoolBuilder::new()
        .class(64, total)
        .cache_size(CACHE)
        .max_threads(1)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rounds = AtomicUsize::new(0);
    let lost: Mutex<Option<String>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    // Three parties per round: the owner (this test's scope thread), X and W.
    let start = Barrier::new(3);
    let end = Barrier::new(3);
    // X and W only: X holds its message until W is done.
    let mid = Barrier::new(2);
    std::thread::scope(|s| {
        let (pool, start, mid, end) = (&pool, &start, &mid, &end);
        let (stop, lost, rounds) = (&stop, &lost, &rounds);
        // The owner: claims the only cache slot first, then sets up each round.
        s.spawn(move || {
            for round in 0..2_000_000usize {
                if Instant::now() > deadline || lost.lock().unwrap().is_some() {
                    // Relaxed: the barrier between the store and the loads orders the flag.
                    stop.store(true, Ordering::Relaxed);
                }
                let all: Vec<Message> = std::iter::from_fn(|| pool.try_acquire().ok()).collect();
                if all.len() != total as usize {
                    *lost.lock().unwrap() =
                        Some(format!("round {round}: {} of {total} back", all.len()));
                    // Relaxed: the barrier between the store and the loads orders the flag.
                    stop.store(true, Ordering::Relaxed);
                }
                drop(all);
                // Now: magazine CACHE/2 + 1, depot CACHE/2, stack 0.
                start.wait();
                // Relaxed: the barrier between the store and the loads orders the flag.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                end.wait();
                // Relaxed: a count for the messages, with no data behind it.
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Make sure the owner thread has the slot before X and W touch the pool.
        std::thread::sleep(Duration::from_millis(50));
        s.spawn(move || loop {
            start.wait();
            // Relaxed: the barrier between the store and the loads orders the flag.
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let m = pool.try_acquire();
            // Hold it until the waiter is done: a release here would serve the waiter and
            // hide a lost wake-up.
            mid.wait();
            drop(m);
            end.wait();
        });
        s.spawn(move || loop {
            start.wait();
            // Relaxed: the barrier between the store and the loads orders the flag.
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match pool.acquire_blocking(Duration::from_millis(500)) {
                Ok(m) => drop(m),
                Err(Error::Timeout { .. }) => {
                    // The owner's magazine holds CACHE/2 + 1, which a thread without a cache
                    // cannot reach; anything this cache-less thread can take now was on the
                    // shared side while it slept.
                    let free = pool.available(0);
                    let takeable = pool.try_acquire().is_ok();
                    *lost.lock().unwrap() = Some(format!(
                        "a waiter timed out after 500 ms with {free} elements free \
                         ({} in the owner's magazine), and a try_acquire right after \
                         succeeded: {takeable} (after {} rounds)",
                        CACHE / 2 + 1,
                        // Relaxed: a count for the messages, with no data behind it.
                        rounds.load(Ordering::Relaxed)
                    ));
                }
                Err(e) => panic!("{e}"),
            }
            mid.wait();
            end.wait();
        });
    });
    let lost = lost.into_inner().unwrap();
    assert!(lost.is_none(), "{}", lost.unwrap());
    eprintln!(
        "{} rounds without a lost wake-up",
        // Relaxed: a count for the messages, with no data behind it.
        rounds.load(Ordering::Relaxed)
    );
}

/// Scatter messages (several buffers each, from `try_acquire_len`) acquired on one thread and
/// dropped on another with a cache: each member goes back on its own through the releasing
/// thread's magazine and overflows into the depot. After the releaser exits and this thread
/// flushes, the count must be the handle alone and every buffer must be back; the handle's drop
/// frees the pool.
#[test]
fn scatter_messages_released_across_threads_keep_the_count_exact() {
    let (pool, rec) = pool(256, 8, 4);
    for _ in 0..20 {
        let msgs: Vec<Message> = (0..60)
            .map(|_| pool.try_acquire_len(64 * 4).unwrap())
            .collect();
        assert!(msgs.iter().all(|m| m.buf_count() == 4));
        std::thread::spawn(move || drop(msgs)).join().unwrap();
        pool.flush_local();
        assert_eq!(pool.users(), 1, "only the handle is left");
        assert_eq!(pool.available(0), 256, "no buffer was lost");
    }
    drop(pool);
    assert!(freed(&rec));
}

thread_local! {
    static KEPT: std::cell::RefCell<Option<(MessagePool, Vec<Message>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The last handle and some messages live in a thread-local of a thread that also has a cache
/// slot with elements (and batches in the depot); at thread exit the thread-local destructors
/// run in an unspecified order relative to the pool's own per-thread cache list. Whatever the
/// order, the pool must be freed once the thread is joined, with no access after the free
/// (ASan).
#[test]
fn last_handle_in_a_thread_local_is_freed_at_thread_exit() {
    for round in 0..20 {
        let (pool, rec) = pool(256, 16, 2);
        std::thread::spawn(move || {
            let held: Vec<Message> = (0..200).map(|_| pool.try_acquire().unwrap()).collect();
            let keep: Vec<Message> = (0..50).map(|_| pool.try_acquire().unwrap()).collect();
            // Dropped here: the magazine fills and the depot gets batches.
            drop(held);
            if round % 2 == 0 {
                KEPT.with(|k| *k.borrow_mut() = Some((pool, keep)));
            } else {
                KEPT.with(|k| *k.borrow_mut() = Some((pool.clone(), keep)));
                drop(pool);
            }
        })
        .join()
        .unwrap();
        assert!(
            freed(&rec),
            "round {round}: the pool was freed at thread exit"
        );
    }
}

/// Thread T1 caches 4 of a pool's 8 buffers; T2 takes the other 4 and has a thread queue a
/// blocking wait (1.5 s at most) for a fifth; then T1 runs `acquire` while that waiter waits.
/// Returns what `acquire` gave, the waiter's outcome, and how long T2 waited for it after
/// telling T1 to go.
fn acquire_with_four_cached_while_another_waits<R: Send>(
    acquire: impl FnOnce(&MessagePool) -> R + Send,
) -> (R, Result<(), String>, Duration) {
    let (pool, _rec) = pool(8, 8, 4);
    let (t1_cached_tx, t1_cached_rx) = std::sync::mpsc::channel::<()>();
    let (t2_waiting_tx, t2_waiting_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let pool = &pool;
        let t1 = s.spawn(move || {
            // The refill takes a batch of 4 into this cache; dropping them caches all 4 here.
            let four: Vec<Message> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
            drop(four);
            t1_cached_tx.send(()).unwrap();
            t2_waiting_rx.recv().unwrap();
            acquire(pool)
        });
        let t2 = s.spawn(move || {
            t1_cached_rx.recv().unwrap();
            let mine: Vec<Message> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
            assert!(pool.try_acquire().is_err(), "the rest is in T1's cache");
            std::thread::scope(|s2| {
                let w = s2.spawn(|| {
                    pool.acquire_blocking(Duration::from_millis(1500))
                        .map(drop)
                        .map_err(|e| e.to_string())
                });
                // Time for the waiter to queue; a late queue makes T1 take from its own cache,
                // and T1's exit then serves the waiter, which the callers accept as well.
                std::thread::sleep(Duration::from_millis(100));
                t2_waiting_tx.send(()).unwrap();
                let started = Instant::now();
                let served = w.join().unwrap();
                drop(mine);
                (served, started.elapsed())
            })
        });
        let got = t1.join().unwrap();
        let (served, waited) = t2.join().unwrap();
        (got, served, waited)
    })
}

/// The pool's docs: "While tasks wait for a class, releases skip the caches and go to the
/// oldest waiter, and a thread that releases or acquires while others wait also hands over
/// what it has cached." A blocking acquire by a thread with 4 free elements cached, while
/// another thread waits: its cache goes to the waiters, so both are served at once. (It used
/// to queue behind the waiter with the cache untouched, and both timed out.)
#[test]
fn a_blocking_acquire_while_others_wait_hands_over_its_cache() {
    let (got, served, waited) = acquire_with_four_cached_while_another_waits(|pool| {
        pool.acquire_blocking(Duration::from_millis(500))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    assert!(
        got.is_ok() && served.is_ok(),
        "T1 (4 free elements in its own cache): {got:?}; the waiter: {served:?} after {waited:?}"
    );
}

/// The async side: a task whose thread has 4 free elements cached polls `acquire` while
/// another thread waits. The cache goes to the waiter first and the rest to the store, where
/// the task's own look finds one: the first poll is ready, and the waiter is served at once.
/// (The future used to queue behind the waiter and stay pending while its own thread held free
/// elements.)
#[test]
fn an_async_acquire_while_others_wait_hands_over_its_cache() {
    let (ready, served, waited) = acquire_with_four_cached_while_another_waits(|pool| {
        let mut acquire = pool.acquire();
        matches!(poll_once(&mut acquire), std::task::Poll::Ready(_))
    });
    assert!(ready, "T1's first poll found its own cached elements");
    assert!(served.is_ok(), "the waiter was served: {served:?}");
    assert!(
        waited < Duration::from_secs(1),
        "the waiter was served from T1's cache, not at its timeout: {waited:?}"
    );
}
