//! Loom models of the pool's lock-free parts.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p regio-pool
//! --test loom`.
#![cfg(loom)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

use loom::sync::Arc;
use loom::thread;

use regio_pool::{MessagePool, PoolBuilder};
use regio_testkit::block_on;

fn tiny_pool(count: u32, cache: usize) -> Arc<MessagePool> {
    Arc::new(
        PoolBuilder::new()
            .class(64, count)
            .cache_size(cache)
            .max_threads(2)
            .max_regions(1)
            .max_waiters(2)
            .build()
            .unwrap(),
    )
}

/// A task waits for the only element while another thread releases it: the release either
/// lands in the store before the task looks, or is handed to the task and wakes it. A lost
/// wake-up would leave `block_on` parked forever, which loom reports as a deadlock.
#[test]
fn waiter_handoff_has_no_lost_wakeup() {
    loom::model(|| {
        let pool = tiny_pool(1, 0);
        let held = pool.try_acquire().unwrap();
        let releaser = thread::spawn(move || drop(held));
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || {
                let msg = block_on(pool.acquire());
                assert_eq!(msg.key().len, 64);
            })
        };
        releaser.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(pool.available(0), 1);
    });
}

/// A waiter is cancelled while the element may already have been granted to it: the grant goes
/// back, and a second waiter still gets served.
#[test]
fn cancelled_waiter_passes_the_element_on() {
    loom::model(|| {
        let pool = tiny_pool(1, 0);
        let held = pool.try_acquire().unwrap();
        let mut first = pool.acquire();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Future::poll(Pin::new(&mut first), &mut cx).is_pending());
        let second = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire())))
        };
        let releaser = thread::spawn(move || drop(held));
        drop(first);
        releaser.join().unwrap();
        second.join().unwrap();
        assert_eq!(pool.available(0), 1);
    });
}

/// A thread's cache overflows and flushes into the store while another thread releases into its
/// own cache and exits (flushing it) and a third waits: nothing is lost, the waiter is served,
/// and every element is back at the end.
#[test]
fn cache_flush_races_release() {
    loom::model(|| {
        let pool = tiny_pool(3, 1);
        let a = pool.try_acquire().unwrap();
        let b = pool.try_acquire().unwrap();
        let c = pool.try_acquire().unwrap();
        let flusher = thread::spawn(move || {
            drop(a); // into this thread's cache
            drop(b); // cache full: the older element is flushed to the store
        });
        let releaser = thread::spawn(move || drop(c)); // cached, flushed at thread exit
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire())))
        };
        flusher.join().unwrap();
        releaser.join().unwrap();
        waiter.join().unwrap();
        // A joined loom thread may not have run its thread-local destructors (which flush its
        // cache) yet; they run once it is scheduled again.
        while pool.users() != 1 {
            thread::yield_now();
        }
        assert_eq!(pool.available(0), 3);
    });
}

/// A thread fills its cache and acquires again while another thread may be waiting: the cached
/// element is handed over (or stays cached until the thread exits), never lost or given twice.
#[test]
fn acquiring_owner_shares_its_cache() {
    loom::model(|| {
        let pool = tiny_pool(2, 2);
        let owner = {
            let pool = pool.clone();
            thread::spawn(move || {
                // The waiter may take one first; whatever this thread got ends up in its cache.
                let (a, b) = (pool.try_acquire(), pool.try_acquire());
                drop((a, b));
                // An acquire from the cache shares the rest if someone waits now.
                drop(pool.try_acquire());
            })
        };
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire())))
        };
        owner.join().unwrap();
        waiter.join().unwrap();
        while pool.users() != 1 {
            thread::yield_now();
        }
        assert_eq!(pool.available(0), 2);
    });
}
