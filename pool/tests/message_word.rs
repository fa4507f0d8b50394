//! What a message carries in its one-word tag (generation, buffer count, size class) and what
//! its descriptor's owner stamp says, at the edges: the most size classes a pool may have,
//! scatter messages through raw round trips, generations counted over many cycles of one
//! element and across threads, and descriptors filled in, released and acquired again.

use std::time::Duration;

use regio_pool::{
    DescFlags, Descriptor, Error, FileSlot, Message, MessagePool, Opcode, PoolBuilder, RegionId,
};

/// Checks that `msg` is a fresh message of `class` holding `nbufs` buffers of `size` bytes,
/// whose descriptor is in its reset state and stamped with the message's handle.
fn assert_fresh(pool: &MessagePool, msg: &Message, class: usize, nbufs: usize, size: u32) {
    assert_eq!((msg.class(), msg.buf_count()), (class, nbufs));
    let keys: Vec<_> = msg.keys().collect();
    assert!(keys.iter().all(|&k| k.len == size && msg.owns(k)));
    let d = msg.descriptor();
    assert_eq!((d.opcode, d.flags), (Opcode::Nop, DescFlags::NONE));
    assert_eq!((d.file, d.offset, d.cookie), (None, 0, 0));
    assert_eq!(d.slices(), &keys[..]);
    assert_eq!(d.owner(), msg.handle());
    pool.validate(d).unwrap();
}

/// Checks that `pool` turns `desc`, of an earlier lifetime of its element, away as stale.
fn assert_stale(pool: &MessagePool, desc: &Descriptor) {
    assert!(matches!(
        pool.validate(desc),
        Err(Error::StaleHandle { .. })
    ));
}

/// Fills in every public field of `msg`'s descriptor and narrows its slices.
fn scribble(msg: &mut Message) {
    let d = msg.descriptor_mut();
    d.opcode = Opcode::WriteFixed;
    d.flags = DescFlags::FUA | DescFlags::DRAIN;
    d.file = Some(FileSlot(u32::MAX));
    d.offset = u64::MAX;
    d.cookie = u64::MAX;
    d.truncate(1);
}

/// 255 classes (the most a pool may have), each in its own region: every message reports its
/// class, its region and its size, and goes back to its own class, singly or through
/// `try_acquire_len` and raw round trips, from this thread or another.
#[test]
fn the_last_of_255_classes_is_reported_and_released_as_itself() {
    let size = |c: usize| 64 * (c as u32 + 1);
    let pool = (0..255)
        .fold(PoolBuilder::new().max_regions(256), |b, c| {
            b.class(size(c), 2)
        })
        .build()
        .unwrap();
    assert_eq!(pool.classes(), 255);
    for round in 0..2 {
        for c in 0..255 {
            let mut a = pool.try_acquire_class(c).unwrap();
            let b = pool.try_acquire_len(size(c) as usize - 63).unwrap();
            for m in [&a, &b] {
                assert_fresh(&pool, m, c, 1, size(c));
                assert_eq!(m.key().region, RegionId(c as u16));
                assert_eq!(m.handle().index >> 24, c as u32);
            }
            if round == 1 {
                scribble(&mut a);
            }
            let a = pool.from_raw(a.into_raw()).unwrap();
            assert_eq!((a.class(), a.buf_count()), (c, 1));
            assert_eq!(a.descriptor().owner(), a.handle());
            pool.release_raw(b.into_raw()).unwrap();
            if round == 1 {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        drop(a);
                        pool.flush_local();
                    });
                });
            }
        }
    }
    assert!((0..255).all(|c| pool.available(c) == 2));
    // One more region for the last class, the largest, which scatter messages take: region
    // 255, the top of the element index space.
    assert_eq!(pool.grow(254, 1).unwrap(), RegionId(255));
    let big = pool.try_acquire_len(3 * size(254) as usize).unwrap();
    assert_fresh(&pool, &big, 254, 3, size(254));
    let big = pool.from_raw(big.into_raw()).unwrap();
    assert_eq!((big.class(), big.buf_count()), (254, 3));
    drop(big);
    let held: Vec<_> = (0..3)
        .map(|_| pool.try_acquire_class(254).unwrap())
        .collect();
    assert!(held.iter().any(|m| m.handle().index >> 24 == 255));
    held.iter()
        .for_each(|m| assert_fresh(&pool, m, 254, 1, size(254)));
}

/// Scatter messages of 2, 3 and 4 buffers keep their count and class through a filled-in
/// descriptor and raw round trips, validate with their own stamp, and leave every member fresh
/// for the single-buffer messages that follow, a waiter's on another thread among them (with
/// no thread cache, where the main thread would keep the free ones from the waiter).
#[test]
fn scatter_messages_keep_count_and_class_through_raw_round_trips() {
    let pool = PoolBuilder::new()
        .class(256, 4)
        .class(1024, 4)
        .cache_size(0)
        .build()
        .unwrap();
    for n in 2..=4 {
        let mut msg = pool.try_acquire_len(1024 * (n - 1) + 1).unwrap();
        assert_fresh(&pool, &msg, 1, n, 1024);
        let first = msg.handle();
        // The last one keeps its slices, which the next acquire of its head must cut to one.
        let slices = if n < 4 { 1 } else { n };
        if n < 4 {
            scribble(&mut msg);
        }
        let raw = msg.into_raw();
        let msg = pool.from_raw(raw).unwrap();
        assert_eq!((msg.class(), msg.buf_count()), (1, n));
        assert_eq!(msg.handle().generation, first.generation.wrapping_add(8));
        assert_eq!(msg.descriptor().owner(), msg.handle());
        assert_eq!(msg.descriptor().slices().len(), slices);
        pool.validate(msg.descriptor()).unwrap();
        let stale = msg.descriptor().clone();
        let raw_again = msg.into_raw();
        let singles = std::thread::scope(|s| {
            // All four buffers are held: this one waits for the release below, unless it
            // comes after it.
            let waiter = s.spawn(|| pool.acquire_class_blocking(1, Duration::from_secs(10)));
            pool.release_raw(raw_again).unwrap();
            let mut singles = vec![waiter.join().unwrap().unwrap()];
            singles.extend((1..4).map(|_| pool.try_acquire_class(1).unwrap()));
            singles
        });
        assert!(matches!(pool.from_raw(raw), Err(Error::StaleHandle { .. })));
        assert_stale(&pool, &stale);
        assert!(singles.iter().any(|m| m.handle().index == first.index));
        singles
            .iter()
            .for_each(|m| assert_fresh(&pool, m, 1, 1, 1024));
    }
}

/// One element cycled through acquire and release, raw round trips included, on this thread
/// and on others (which flush their caches before they exit), with and without a thread cache,
/// and with too few caches for the other threads: each lifetime's generation is 4 past the last
/// one's, the descriptor is fresh whatever the previous holder did, and the previous lifetime's
/// handle is stale.
#[test]
fn one_element_counts_its_lifetimes_across_threads() {
    for (cache, threads) in [(0, 64), (64, 64), (64, 1)] {
        let pool = PoolBuilder::new()
            .class(4096, 1)
            .cache_size(cache)
            .max_threads(threads)
            .build()
            .unwrap();
        let mut last = pool.try_acquire().unwrap().handle().generation;
        for i in 0..1000u32 {
            let mut msg = pool.try_acquire().unwrap();
            assert_fresh(&pool, &msg, 0, 1, 4096);
            assert_eq!(msg.handle().generation, last.wrapping_add(4));
            last = msg.handle().generation;
            let stale = msg.descriptor().clone();
            if i % 2 == 0 {
                scribble(&mut msg);
            }
            match i % 3 {
                0 => {
                    let msg = pool.from_raw(msg.into_raw()).unwrap();
                    assert_eq!(msg.descriptor().owner(), msg.handle());
                    last = msg.handle().generation;
                }
                1 => drop(msg),
                _ => std::thread::scope(|s| {
                    s.spawn(|| {
                        pool.release_raw(msg.into_raw()).unwrap();
                        pool.flush_local();
                    });
                    last = last.wrapping_add(8);
                }),
            }
            assert_eq!(pool.available(0), 1);
            assert_stale(&pool, &stale);
        }
    }
}
