//! Behaviour of the pool through its public API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{poll_once, Recorder};
use regio_pool::{
    Acquire, BufFeed, BufKey, BufRingSink, Descriptor, Error, Message, MessagePool, Opcode,
    PoolBuilder, RawMessage, RegionId, MAX_SG,
};
use regio_testkit::block_on;

fn pool(count: u32) -> MessagePool {
    PoolBuilder::new().class(4096, count).build().unwrap()
}

#[test]
fn acquire_release_restores_capacity() {
    let pool = pool(8);
    let msgs: Vec<_> = (0..8).map(|_| pool.try_acquire().unwrap()).collect();
    assert_eq!(pool.available(0), 0);
    let mut keys: Vec<_> = msgs.iter().map(|m| m.key().offset).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 8, "every message has its own buffer");
    drop(msgs);
    assert_eq!(pool.available(0), 8);
    assert_eq!(pool.capacity(0), 8);
}

/// Every acquire hands out a descriptor in its reset state, stamped with the new generation,
/// whatever the element's previous holders did with it: filled it in, lent it out raw, or headed
/// a scatter list with it.
#[test]
fn every_acquire_starts_from_a_reset_descriptor() {
    let pool = PoolBuilder::new()
        .class(4096, 4)
        .cache_size(4)
        .build()
        .unwrap();
    let fresh = |msg: &Message| {
        let d = msg.descriptor();
        assert_eq!(d.opcode, Opcode::Nop);
        assert_eq!(d.flags, regio_pool::DescFlags::NONE);
        assert_eq!((d.file, d.offset, d.cookie), (None, 0, 0));
        assert_eq!(d.slices(), &[msg.key()]);
        assert_eq!(d.owner(), msg.handle());
        pool.validate(d).unwrap();
    };
    // The magazine is LIFO: each acquire below gets the element just released.
    let mut msg = pool.try_acquire().unwrap();
    fresh(&msg);
    let first = msg.handle();
    let d = msg.descriptor_mut();
    d.opcode = Opcode::WriteFixed;
    d.flags = regio_pool::DescFlags::FUA;
    d.file = Some(regio_pool::FileSlot(3));
    d.offset = 7;
    d.cookie = 9;
    d.truncate(10);
    drop(msg);
    let msg = pool.try_acquire().unwrap();
    assert_eq!(msg.handle().index, first.index);
    assert_ne!(msg.handle().generation, first.generation);
    fresh(&msg);
    // Untouched, then through a raw round trip.
    drop(msg);
    let msg = pool.try_acquire().unwrap();
    fresh(&msg);
    let msg = pool.from_raw(msg.into_raw()).unwrap();
    fresh(&msg);
    drop(msg);
    let msg = pool.try_acquire().unwrap();
    fresh(&msg);
    // Heading a scatter message, then alone again.
    drop(msg);
    let big = pool.try_acquire_len(3 * 4096).unwrap();
    assert_eq!(big.descriptor().slices().len(), 3);
    let head = big.handle().index;
    drop(big);
    let msgs: Vec<_> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
    assert!(msgs.iter().any(|m| m.handle().index == head));
    msgs.iter().for_each(fresh);
}

#[test]
fn exhausted_pool_would_block_and_loses_nothing() {
    let pool = pool(2);
    let a = pool.try_acquire().unwrap();
    let b = pool.try_acquire().unwrap();
    let err = pool.try_acquire().unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(matches!(err, Error::Exhausted { class: 0 }));
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::WouldBlock
    );
    drop((a, b));
    assert_eq!(pool.available(0), 2);
    assert!(pool.try_acquire().is_ok());
}

#[test]
fn blocking_acquire_times_out_then_gets_a_release() {
    let pool = pool(1);
    let held = pool.try_acquire().unwrap();
    let start = Instant::now();
    let err = pool
        .acquire_blocking(Duration::from_millis(30))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { class: 0, .. }), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(30));
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        let got = pool.acquire_blocking(Duration::from_secs(10)).unwrap();
        assert_eq!(got.key().len, 4096);
    });
    assert_eq!(pool.available(0), 1);
}

/// Takes `pool`'s only element and queues two async waiters behind it, first then second.
fn held_and_two_waiters(pool: &MessagePool) -> (Message, Acquire<'_>, Acquire<'_>) {
    let held = pool.try_acquire().unwrap();
    let mut first = pool.acquire();
    let mut second = pool.acquire();
    assert!(poll_once(&mut first).is_pending());
    assert!(poll_once(&mut second).is_pending());
    (held, first, second)
}

#[test]
fn async_waiters_are_served_in_fifo_order() {
    let pool = pool(1);
    let (held, mut first, mut second) = held_and_two_waiters(&pool);
    drop(held);
    assert!(
        poll_once(&mut second).is_pending(),
        "the second waiter must not jump the queue"
    );
    let Poll::Ready(m) = poll_once(&mut first) else {
        panic!("the first waiter was granted the element");
    };
    drop(m);
    assert!(poll_once(&mut second).is_ready());
}

#[test]
fn dropped_future_passes_its_grant_on() {
    let pool = pool(1);
    let (held, first, mut second) = held_and_two_waiters(&pool);
    drop(held); // granted to `first`
    drop(first); // cancelled with a grant: it must go to `second`
    assert!(poll_once(&mut second).is_ready());
    assert_eq!(pool.available(0), 1);

    // A cancelled waiter with no grant and no successor: the element goes back to the store.
    let held = pool.try_acquire().unwrap();
    let mut lone = pool.acquire();
    assert!(poll_once(&mut lone).is_pending());
    drop(held);
    drop(lone);
    assert_eq!(pool.available(0), 1);
}

#[test]
fn a_release_on_another_thread_wakes_the_task() {
    let pool = pool(1);
    let held = pool.try_acquire().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            drop(held);
        });
        let m = block_on(pool.acquire());
        assert_eq!(m.buf_count(), 1);
    });
}

#[test]
fn raw_round_trip_detects_stale_and_double_release() {
    let pool = pool(2);
    let mut msg = pool.try_acquire().unwrap();
    msg.as_mut_slice()[0] = 42;
    let raw = msg.into_raw();
    assert_eq!(pool.available(0), 1, "a lent message stays out of the pool");
    let back = pool.from_raw(raw).unwrap();
    assert_eq!(back.as_slice()[0], 42);
    pool.validate(back.descriptor()).unwrap();
    assert!(matches!(pool.from_raw(raw), Err(Error::StaleHandle { .. })));
    let raw2 = back.into_raw();
    pool.release_raw(raw2).unwrap();
    let err = pool.release_raw(raw2).unwrap_err();
    assert!(matches!(err, Error::StaleHandle { .. }), "{err}");
    let forged = RawMessage::from_bits(u128::from(u64::MAX)).unwrap();
    assert!(pool.from_raw(forged).is_err());
    let forged_here = (u128::from(pool.id()) << 64) | u128::from(u64::MAX);
    let forged_here = RawMessage::from_bits(forged_here).unwrap();
    assert!(matches!(
        pool.from_raw(forged_here),
        Err(Error::StaleHandle { .. })
    ));
    assert_eq!(RawMessage::from_bits(raw2.to_bits()), Some(raw2));
    assert_eq!(RawMessage::from_bits(u128::MAX), None);
    assert_eq!(pool.available(0), 2);
}

/// Two pools built alike have elements with the same index and generation; a raw message still
/// names its own pool, and the other one refuses it without touching anything.
#[test]
fn a_raw_message_is_redeemed_only_by_its_own_pool() {
    let a = PoolBuilder::new()
        .class(4096, 4)
        .cache_size(0)
        .build()
        .unwrap();
    let b = PoolBuilder::new()
        .class(4096, 4)
        .cache_size(0)
        .build()
        .unwrap();
    let raw_a = a.try_acquire().unwrap().into_raw();
    let raw_b = b.try_acquire().unwrap().into_raw();
    assert_eq!(raw_a.pool(), a.id());
    let err = b.from_raw(raw_a).unwrap_err();
    assert!(
        matches!(err, Error::ForeignPool { expected, found } if expected == b.id() && found == a.id()),
        "{err}"
    );
    assert!(matches!(
        b.release_raw(raw_a),
        Err(Error::ForeignPool { .. })
    ));
    assert_eq!(b.available(0), 3, "the foreign raw message touched nothing");
    let back_b = b.from_raw(raw_b).unwrap();
    let back_a = a.from_raw(raw_a).unwrap();
    assert_eq!(back_a.handle().pool, a.id());
    assert_eq!(back_b.handle().pool, b.id());
    drop((back_a, back_b));
    assert_eq!(a.available(0), a.capacity(0));
    assert_eq!(b.available(0), b.capacity(0));
}

type ErrorCheck = fn(&Error) -> bool;

#[test]
fn validate_accepts_own_slices_and_rejects_the_rest() {
    let pool = PoolBuilder::new().class(1024, 4).build().unwrap();
    let other_pool = PoolBuilder::new().class(1024, 4).build().unwrap();
    let mut a = pool.try_acquire().unwrap();
    let b = pool.try_acquire().unwrap();
    let own = a.key();

    a.descriptor_mut().opcode = Opcode::WriteFixed;
    pool.validate(a.descriptor()).unwrap();

    let sub = BufKey {
        offset: own.offset + 100,
        len: 200,
        ..own
    };
    a.descriptor_mut().set_slices(&[sub]).unwrap();
    pool.validate(a.descriptor()).unwrap();

    let cases: [(BufKey, ErrorCheck); 5] = [
        (b.key(), |e| matches!(e, Error::NotOwned { .. })),
        (
            BufKey {
                region: RegionId(9),
                ..own
            },
            |e| matches!(e, Error::UnknownRegion(RegionId(9))),
        ),
        (
            BufKey {
                offset: own.offset + 1000,
                len: 100,
                ..own
            },
            |e| matches!(e, Error::OutOfBounds { .. }),
        ),
        (
            BufKey {
                offset: 3 * 1024,
                len: 2048,
                ..own
            },
            |e| matches!(e, Error::OutOfBounds { .. }),
        ),
        (BufKey { len: 0, ..own }, |e| {
            matches!(e, Error::OutOfBounds { .. })
        }),
    ];
    for (key, expect) in cases {
        a.descriptor_mut().set_slices(&[key]).unwrap();
        let err = pool.validate(a.descriptor()).unwrap_err();
        assert!(expect(&err), "{key:?}: {err}");
    }

    a.descriptor_mut().set_slices(&[]).unwrap();
    assert!(matches!(
        pool.validate(a.descriptor()),
        Err(Error::NoBuffers(Opcode::WriteFixed))
    ));
    assert!(pool.validate(&Descriptor::new(Opcode::Nop)).is_ok());

    let foreign = other_pool.try_acquire().unwrap();
    assert!(matches!(
        pool.validate(foreign.descriptor()),
        Err(Error::ForeignPool { .. })
    ));

    // A descriptor kept past its message's release is stale.
    let mut kept = b.descriptor().clone();
    drop(b);
    assert!(matches!(
        pool.validate(&kept),
        Err(Error::StaleHandle { .. })
    ));
    // ... and stays stale when the element is acquired again.
    let _again: Vec<_> = (0..3).map(|_| pool.try_acquire().unwrap()).collect();
    assert!(pool.validate(&kept).is_err());
    kept.opcode = Opcode::Nop;
    assert!(pool.validate(&kept).is_err());
}

#[test]
fn scatter_messages_span_several_buffers() {
    let pool = PoolBuilder::new()
        .class(512, 8)
        .class(4096, 8)
        .build()
        .unwrap();
    let small = pool.try_acquire_len(100).unwrap();
    assert_eq!((small.class(), small.buf_count()), (0, 1));
    let one = pool.try_acquire_len(4096).unwrap();
    assert_eq!((one.class(), one.buf_count()), (1, 1));
    let mut big = pool.try_acquire_len(3 * 4096 + 1).unwrap();
    assert_eq!((big.class(), big.buf_count()), (1, 4));
    assert_eq!(big.capacity(), 4 * 4096);
    assert_eq!(big.descriptor().slices().len(), 4);
    assert_eq!(big.keys().collect::<Vec<_>>(), big.descriptor().slices());
    big.buf_mut(3)[0] = 9;
    assert_eq!(big.buf(3)[0], 9);
    assert_ne!(big.ptr_of(0), big.ptr_of(1));
    big.descriptor_mut().opcode = Opcode::Send;
    pool.validate(big.descriptor()).unwrap();
    // Another message's slice cannot be smuggled into this scatter list.
    let mut slices = big.keys().collect::<Vec<_>>();
    slices[2] = one.key();
    big.descriptor_mut().set_slices(&slices).unwrap();
    assert!(matches!(
        pool.validate(big.descriptor()),
        Err(Error::NotOwned { .. })
    ));

    // All-or-nothing: 3 of class 1 are free, 4 are needed.
    assert!(matches!(
        pool.try_acquire_len(4 * 4096),
        Err(Error::Exhausted { class: 1 })
    ));
    assert_eq!(pool.available(1), 3);
    assert!(matches!(
        pool.try_acquire_len((MAX_SG + 1) * 4096),
        Err(Error::TooManySlices { .. })
    ));
    drop((small, one, big));
    assert_eq!(pool.available(0), 8);
    assert_eq!(pool.available(1), 8);
}

#[test]
fn key_table_translates_and_grows() {
    let pool = pool(4);
    let msg = pool.try_acquire().unwrap();
    let table = pool.key_table();
    let key = table.translate_guarded(msg.as_ptr(), 4096).unwrap();
    assert_eq!(key, msg.key());
    let base = msg.as_ptr() as usize - msg.key().offset as usize;
    assert!(table.translate_guarded((base - 1) as *const u8, 1).is_err());
    assert!(matches!(
        table.translate_guarded(base as *const u8, 1 << 30),
        Err(Error::Unmapped { .. })
    ));
    let id = pool.grow(0, 4).unwrap();
    assert_eq!(id, RegionId(1));
    assert_eq!(table.regions(), 2);
    assert_eq!(pool.capacity(0), 8);
    let held: Vec<_> = (0..7).map(|_| pool.try_acquire().unwrap()).collect();
    let grown = held.iter().find(|m| m.key().region == id).unwrap();
    let mut reader = table.domain().register();
    assert_eq!(
        table.translate(&reader, grown.as_ptr(), 10).unwrap().region,
        id
    );
    reader.quiescent();
    drop(msg);
}

#[test]
fn registrars_see_every_region_and_growth() {
    let pool = PoolBuilder::new()
        .class(4096, 4)
        .class(8192, 2)
        .build()
        .unwrap();
    let rec = Arc::new(Recorder::default());
    pool.attach(rec.clone()).unwrap();
    {
        let regs = rec.registered.lock().unwrap();
        assert_eq!(
            regs.iter().map(|r| r.0).collect::<Vec<_>>(),
            [RegionId(0), RegionId(1)]
        );
        assert!(regs.iter().all(|r| r.2 % regio_pool::page_size() == 0));
    }
    pool.grow(1, 2).unwrap();
    assert_eq!(rec.registered.lock().unwrap().len(), 3);

    // Relaxed: read by the registrar on this thread, during the call below.
    rec.refuse.store(true, Ordering::Relaxed);
    let err = pool.grow(0, 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Register {
                region: RegionId(3),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(pool.regions(), 3, "a refused region is not added");
    drop(pool);
    assert_eq!(rec.unregistered.lock().unwrap().len(), 3);
}

#[test]
fn a_refused_attach_undoes_its_registrations() {
    let pool = PoolBuilder::new()
        .class(4096, 1)
        .class(4096, 1)
        .class(4096, 1)
        .build()
        .unwrap();
    let rec = Arc::new(Recorder::refusing_from(2));
    // Relaxed: read by the registrar on this thread, during the call below.
    rec.refuse.store(true, Ordering::Relaxed);
    let err = pool.attach(rec.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Register {
                region: RegionId(2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(rec.registered.lock().unwrap().len(), 2);
    assert_eq!(
        *rec.unregistered.lock().unwrap(),
        [RegionId(0), RegionId(1)]
    );
    // Not attached: growth does not call it.
    // Relaxed: as above; the registrar would read it on this thread.
    rec.refuse.store(false, Ordering::Relaxed);
    pool.grow(0, 1).unwrap();
    assert_eq!(rec.registered.lock().unwrap().len(), 2);
}

#[test]
fn low_watermark_fires_once_until_rearmed() {
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let pool = PoolBuilder::new()
        .class(256, 16)
        .cache_size(0)
        .low_watermark(0, 4, move |ev| {
            assert_eq!(ev.class, 0);
            assert!(ev.available < 4);
            // Relaxed: the callback runs on this test's thread; the counter orders nothing.
            f.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let mut held: Vec<_> = (0..12).map(|_| pool.try_acquire().unwrap()).collect();
    // Relaxed (here and below): the callback ran on this thread, so program order suffices.
    assert_eq!(fired.load(Ordering::Relaxed), 0);
    held.push(pool.try_acquire().unwrap());
    assert_eq!(fired.load(Ordering::Relaxed), 1);
    held.push(pool.try_acquire().unwrap());
    assert_eq!(fired.load(Ordering::Relaxed), 1, "one event until re-armed");
    held.truncate(8);
    assert!(pool.arm_low_watermark(0));
    assert!(!pool.arm_low_watermark(5));
    let _more: Vec<_> = (0..6).map(|_| pool.try_acquire().unwrap()).collect();
    assert_eq!(fired.load(Ordering::Relaxed), 2);
}

/// The low-watermark callback runs once the pool's locks are free, so it may use the pool.
/// Here the event is claimed inside a growth that serves a waiter, where the growth lock and the
/// wait-list lock are held; from the callback a task queues behind another waiter, the pool
/// grows, and a message is acquired and released. Run on a thread under a watchdog, so that a
/// deadlock fails the test instead of hanging it.
#[test]
fn the_low_watermark_callback_may_acquire_release_and_grow() {
    let (done, finished) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        callback_uses_the_pool();
        done.send(()).unwrap();
    });
    match finished.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => runner.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(runner.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("deadlock: the scenario did not finish within 10 s")
        }
    }
}

fn callback_uses_the_pool() {
    // The callback reaches the pool through a `Weak`, so that it keeps no cycle alive.
    let cell: Arc<std::sync::OnceLock<MessagePool>> = Arc::default();
    let weak = Arc::downgrade(&cell);
    let calls = Arc::new(AtomicUsize::new(0));
    let used = Arc::new(AtomicUsize::new(0));
    let (c, u) = (calls.clone(), used.clone());
    let built = PoolBuilder::new()
        .class(256, 2)
        .cache_size(0)
        .low_watermark(0, 1, move |ev| {
            assert_eq!(
                ev,
                regio_pool::LowWatermark {
                    class: 0,
                    available: 0
                }
            );
            // Relaxed (both counters, here and below): everything runs on one thread.
            if c.fetch_add(1, Ordering::Relaxed) == 0 {
                return; // the first event comes from setting the scene
            }
            let cell = weak.upgrade().unwrap();
            let pool = cell.get().unwrap();
            // Another waiter is queued, so this one queues behind it (the wait-list lock).
            let mut mine = pool.acquire();
            assert!(poll_once(&mut mine).is_pending());
            // Growth (the growth lock) serves both waiters (the wait-list lock again).
            pool.grow(0, 2).unwrap();
            let Poll::Ready(m) = poll_once(&mut mine) else {
                panic!("the growth must serve the callback's waiter");
            };
            drop(m);
            u.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let pool = cell.get_or_init(|| built);

    let held = [pool.try_acquire().unwrap(), pool.try_acquire().unwrap()];
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let (mut first, mut second) = (pool.acquire(), pool.acquire());
    assert!(poll_once(&mut first).is_pending());
    assert!(poll_once(&mut second).is_pending());
    assert!(pool.arm_low_watermark(0));
    // The growth hands its one element to `first`, which takes the store below the limit while
    // the growth and wait-list locks are held.
    pool.grow(0, 1).unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert_eq!(
        used.load(Ordering::Relaxed),
        1,
        "the callback ran to its end"
    );
    let (Poll::Ready(a), Poll::Ready(b)) = (poll_once(&mut first), poll_once(&mut second)) else {
        panic!("both waiters were served");
    };
    assert_eq!(pool.capacity(0), 5);
    assert_eq!(pool.available(0), 1, "the callback's message came back");
    drop((held, a, b));
    assert_eq!(pool.available(0), 5);
}

#[derive(Default)]
struct Ring(std::sync::Mutex<Vec<(usize, u32, u16)>>);

struct Sink(Arc<Ring>);

// SAFETY: a ring of 16 slots that only records pushes: no kernel ever writes into it.
unsafe impl BufRingSink for Sink {
    fn entries(&self) -> u16 {
        16
    }

    unsafe fn push(&self, addr: std::ptr::NonNull<u8>, len: u32, bid: u16) {
        self.0
             .0
            .lock()
            .unwrap()
            .push((addr.as_ptr() as usize, len, bid));
    }

    fn retire(self: Box<Self>) -> bool {
        true
    }
}

#[test]
fn feed_lends_buffers_and_takes_them_back() {
    let pool = pool(8);
    let ring = Arc::new(Ring::default());
    let feed = BufFeed::new(&pool, 0, 4, Sink(ring.clone())).unwrap();
    assert_eq!(feed.count(), 4);
    assert_eq!(pool.available(0), 4);
    let pushed = ring.0.lock().unwrap().clone();
    assert_eq!(pushed.iter().map(|p| p.2).collect::<Vec<_>>(), [0, 1, 2, 3]);

    // The kernel wrote 5 bytes into buffer 2.
    let addr = pushed[2].0 as *mut u8;
    // SAFETY: the buffer is in the ring, lent to the "kernel" that this test plays.
    unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), addr, 5) };
    // SAFETY: this test plays the kernel, which "picked" bid 2.
    let got = unsafe { feed.take(2, 5) }.unwrap();
    assert_eq!(got.bid(), 2);
    assert_eq!(got.data(), b"hello");
    pool.validate(got.descriptor()).unwrap();
    // SAFETY: bid 2 is held by `got`, not in the ring.
    let twice = unsafe { feed.take(2, 5) };
    assert!(matches!(twice, Err(Error::NotInRing { bid: 2 })));
    // SAFETY: the feed has no bid 99.
    let unknown = unsafe { feed.take(99, 5) };
    assert!(matches!(unknown, Err(Error::NotInRing { bid: 99 })));
    drop(got);
    assert_eq!(
        ring.0.lock().unwrap().last().unwrap().2,
        2,
        "back in the ring"
    );
    // SAFETY: the "kernel" picked bid 2 again.
    assert!(unsafe { feed.take(2, 1) }.is_ok());

    drop(feed);
    assert_eq!(pool.available(0), 8);
    assert!(matches!(
        BufFeed::new(&pool, 0, 9, Sink(ring)),
        Err(Error::Exhausted { .. })
    ));
    assert_eq!(pool.available(0), 8);
}

#[test]
fn caches_flow_back_when_threads_exit() {
    let pool = PoolBuilder::new()
        .class(64, 256)
        .cache_size(32)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let held: Vec<_> = (0..40).map(|_| pool.try_acquire().unwrap()).collect();
                    drop(held);
                })
            })
            .collect();
        // Explicit joins wait for the thread-local destructors that flush the caches.
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_eq!(pool.available(0), 256);
    assert_eq!(pool.users(), 1, "only the handle is left");
    let m = pool.try_acquire().unwrap();
    drop(m);
    pool.flush_local();
    assert_eq!(pool.users(), 1);
}

/// One thread acquires and another releases, many times the pool's size: the releasing thread's
/// cache keeps filling depot bins and the acquiring thread's keeps refilling from them, which
/// moves no count, and both threads' exits empty their caches and the depot. The count still
/// comes out exact, and the pool is freed once the last user goes.
#[test]
fn users_stay_exact_when_one_thread_acquires_and_another_releases() {
    let (pool, rec) = common::recorded(PoolBuilder::new().class(64, 256).cache_size(8));
    let (to_releaser, released) = std::sync::mpsc::sync_channel::<Message>(16);
    std::thread::scope(|s| {
        let releaser = s.spawn(move || released.into_iter().for_each(drop));
        let acquirer = s.spawn(|| {
            // At most the channel, the two caches and the depot's bins hold elements: far
            // fewer than 256, so an acquire never finds the pool exhausted.
            for _ in 0..20_000 {
                to_releaser.send(pool.try_acquire().unwrap()).unwrap();
            }
            drop(to_releaser);
        });
        acquirer.join().unwrap();
        releaser.join().unwrap();
    });
    assert_eq!(pool.available(0), 256);
    assert_eq!(pool.users(), 1, "only the handle is left");
    // On a thread of its own, whose exit flushes its cache (and the depot).
    let last = std::thread::spawn(move || {
        let msg = pool.try_acquire().unwrap();
        drop(pool);
        drop(msg);
    });
    last.join().unwrap();
    assert_eq!(
        rec.unregistered.lock().unwrap().len(),
        1,
        "the last user freed it"
    );
}

/// The batches in the depot's bins count as users, and a handle's drop empties the depot: a
/// pool whose last handle goes while its depot holds batches is freed at once.
#[test]
fn dropping_the_last_handle_empties_the_depot() {
    let (pool, rec) = common::recorded(PoolBuilder::new().class(64, 256).cache_size(8));
    let held: Vec<_> = (0..64).map(|_| pool.try_acquire().unwrap()).collect();
    // The cache keeps 8 of them: 56 overflow, in batches of 4, into the depot's bins (and
    // onto the stack once those are full).
    drop(held);
    assert_eq!(pool.available(0), 256);
    assert!(pool.users() > 1 + 8, "the depot's batches are counted");
    drop(pool);
    assert_eq!(
        rec.unregistered.lock().unwrap().len(),
        1,
        "the handle's drop emptied the cache and the depot, and freed the pool"
    );
}

/// A thread without a cache takes from the depot once the stack is empty: the element it takes
/// stays counted, the rest of the batch goes onto the stack uncounted, so the count stays
/// exact.
#[test]
fn a_take_from_the_depot_without_a_cache_keeps_the_count_exact() {
    let pool = PoolBuilder::new()
        .class(64, 64)
        .cache_size(8)
        .max_threads(1)
        .build()
        .unwrap();
    // This thread has the only cache. Taking all 64 empties the stack; releasing them fills
    // the cache (8) and sends the rest to the depot's bin and the stack.
    let held: Vec<_> = (0..64).map(|_| pool.try_acquire().unwrap()).collect();
    drop(held);
    let cached = 8;
    std::thread::scope(|s| {
        s.spawn(|| {
            // No cache here: every acquire goes to the shared side, the stack first, then the
            // depot's batch.
            let taken: Vec<_> = (0..64 - cached)
                .map(|_| pool.try_acquire().unwrap())
                .collect();
            assert!(
                pool.try_acquire().is_err(),
                "the rest sits in the other cache"
            );
            assert_eq!(pool.users(), 1 + 64, "the handle, 56 messages and 8 cached");
            drop(taken);
            assert_eq!(
                pool.users(),
                1 + cached,
                "releases without a cache go to the stack"
            );
        });
    });
    pool.flush_local();
    assert_eq!(pool.users(), 1);
    assert_eq!(pool.available(0), 64);
}

#[test]
fn the_pool_outlives_its_handle_while_messages_live() {
    let pool = pool(2);
    let mut msg = pool.try_acquire().unwrap();
    drop(pool);
    msg.as_mut_slice()[4095] = 1;
    assert_eq!(msg.as_slice()[4095], 1);
    drop(msg); // the last user frees the pool
}

#[cfg(debug_assertions)]
#[test]
fn released_buffers_are_poisoned_in_debug_builds() {
    let pool = PoolBuilder::new().class(64, 1).build().unwrap();
    let mut msg = pool.try_acquire().unwrap();
    msg.as_mut_slice().fill(7);
    let ptr = msg.as_ptr();
    drop(msg);
    // SAFETY: the region is still mapped (the pool lives) and no message holds the buffer.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, 64) };
    assert!(bytes.iter().all(|&b| b == regio_pool::POISON));
}

#[test]
fn bad_configurations_are_errors() {
    assert!(matches!(PoolBuilder::new().build(), Err(Error::Config(_))));
    assert!(matches!(
        PoolBuilder::new().class(64, 1).cache_size(129).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        PoolBuilder::new().class(64, 0).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        PoolBuilder::new()
            .class(64, 1)
            .low_watermark(3, 1, |_| {})
            .build(),
        Err(Error::Config(_))
    ));
    let pool = PoolBuilder::new()
        .class(64, 1)
        .max_regions(1)
        .build()
        .unwrap();
    assert!(matches!(
        pool.grow(0, 1),
        Err(Error::TooManyRegions { max: 1 })
    ));
}

#[test]
fn growth_serves_waiting_tasks() {
    let pool = PoolBuilder::new().class(4096, 1).build().unwrap();
    let _held = pool.try_acquire().unwrap();
    let mut waiting = pool.acquire();
    assert!(poll_once(&mut waiting).is_pending());
    pool.grow(0, 2).unwrap();
    let Poll::Ready(m) = poll_once(&mut waiting) else {
        panic!("growth must serve the waiter");
    };
    assert_eq!(m.key().region, RegionId(1));
}

#[test]
fn translation_goes_on_while_the_pool_grows() {
    let pool = PoolBuilder::new()
        .class(4096, 4)
        .max_regions(16)
        .build()
        .unwrap();
    let msg = pool.try_acquire().unwrap();
    let (addr, key) = (msg.as_ptr() as usize, msg.key());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let table = pool.key_table();
                    let mut reader = table.domain().register();
                    let mut rounds = 0u64;
                    // Acquire: pairs with the Release store after the last growth, so the
                    // final check below sees every region.
                    while !done.load(Ordering::Acquire) || rounds == 0 {
                        let got = table.translate(&reader, addr as *const u8, 4096).unwrap();
                        assert_eq!(got, key, "a region's keys never change as the table grows");
                        reader.quiescent();
                        rounds += 1;
                    }
                    // After the last growth, every region is visible.
                    assert_eq!(table.regions(), 11);
                })
            })
            .collect();
        for _ in 0..10 {
            pool.grow(0, 2).unwrap();
        }
        // Release: publishes the growths above to readers that see the flag.
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap();
        }
    });
    assert_eq!(pool.capacity(0), 24);
    let grown: Vec<_> = (0..23).map(|_| pool.try_acquire().unwrap()).collect();
    for m in &grown {
        let key = pool.key_table().translate_guarded(m.as_ptr(), 1).unwrap();
        assert_eq!(key.region, m.key().region);
    }
}

#[test]
fn an_acquiring_thread_hands_its_cache_to_waiters() {
    let pool = PoolBuilder::new()
        .class(64, 8)
        .cache_size(8)
        .build()
        .unwrap();
    let mut held: Vec<_> = (0..8).map(|_| pool.try_acquire().unwrap()).collect();
    held.truncate(1); // the other 7 sit in this thread's cache
    assert_eq!(pool.available(0), 7);
    let served = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // The timeout ends the test's threads even if the hand-over never happens.
            if let Ok(m) = pool.acquire_blocking(Duration::from_secs(10)) {
                // Relaxed: a flag that only ends the loop below; the scope's join orders the rest.
                served.store(true, Ordering::Relaxed);
                drop(m);
            }
        });
        // This thread never releases here; it only acquires. Once the other thread waits, an
        // acquire hands the rest of the cache over.
        let start = Instant::now();
        // Relaxed: see the store above.
        while !served.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
            if let Ok(m) = pool.try_acquire() {
                held.push(m);
            }
        }
    });
    assert!(
        // Relaxed: the scope joined the waiter's thread, which ordered its store before this.
        served.load(Ordering::Relaxed),
        "the waiter got an element this thread had cached"
    );
}
