//! Property tests: random sequences of acquire, release, raw round trips and translations
//! against a simple model.

use proptest::prelude::*;
use regio_pool::{BufKey, Message, MessagePool, PoolBuilder};

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    AcquireLen(usize),
    Release(usize),
    RawRoundTrip(usize),
    Translate { msg: usize, off: u32, len: u32 },
    Grow(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize).prop_map(Op::Acquire),
        1 => (1..20_000usize).prop_map(Op::AcquireLen),
        4 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::RawRoundTrip),
        2 => (any::<usize>(), 0..8192u32, 1..8192u32)
            .prop_map(|(msg, off, len)| Op::Translate { msg, off, len }),
        1 => (0..2usize).prop_map(Op::Grow),
    ]
}

fn held_in(held: &[Message], class: usize) -> usize {
    held.iter()
        .filter(|m| m.class() == class)
        .map(Message::buf_count)
        .sum()
}

fn check_counts(pool: &MessagePool, held: &[Message]) {
    for class in 0..pool.classes() {
        assert_eq!(
            pool.available(class) + held_in(held, class),
            pool.capacity(class),
            "class {class}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn acquire_release_translate(ops in prop::collection::vec(op(), 1..120)) {
        let pool = PoolBuilder::new()
            .class(512, 6)
            .class(4096, 6)
            .cache_size(4)
            .max_regions(8)
            .build()
            .unwrap();
        let mut held: Vec<Message> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire(class) => match pool.try_acquire_class(class) {
                    Ok(m) => held.push(m),
                    Err(e) => {
                        prop_assert!(e.is_would_block());
                        prop_assert_eq!(pool.available(class), 0);
                    }
                },
                Op::AcquireLen(len) => match pool.try_acquire_len(len) {
                    Ok(m) => {
                        prop_assert!(m.capacity() >= len);
                        pool.validate(m.descriptor()).unwrap();
                        held.push(m);
                    }
                    Err(e) => {
                        let too_long = len > regio_pool::MAX_SG * 4096
                            && matches!(e, regio_pool::Error::TooManySlices { .. });
                        prop_assert!(e.is_would_block() || too_long, "{}", e);
                    }
                },
                Op::Release(i) if !held.is_empty() => {
                    let m = held.swap_remove(i % held.len());
                    let stale = m.descriptor().clone();
                    drop(m);
                    prop_assert!(pool.validate(&stale).is_err());
                }
                Op::RawRoundTrip(i) if !held.is_empty() => {
                    let i = i % held.len();
                    let key = held[i].key();
                    let raw = held.swap_remove(i).into_raw();
                    let back = pool.from_raw(raw).unwrap();
                    prop_assert_eq!(back.key(), key);
                    prop_assert!(pool.from_raw(raw).is_err());
                    held.push(back);
                }
                Op::Translate { msg, off, len } if !held.is_empty() => {
                    let m = &held[msg % held.len()];
                    let own = m.key();
                    let off = off % own.len;
                    let len = len.min(own.len - off);
                    // SAFETY: `off < own.len`, so the pointer stays inside the buffer.
                    let ptr = unsafe { m.as_ptr().add(off as usize) };
                    let key = pool.key_table().translate_guarded(ptr, len as usize).unwrap();
                    prop_assert_eq!(key, BufKey { region: own.region, offset: own.offset + off, len });
                    let huge = pool.key_table().translate_guarded(ptr, 1 << 31);
                    prop_assert!(huge.is_err());
                }
                Op::Grow(class) => {
                    let before = pool.capacity(class);
                    match pool.grow(class, 3) {
                        Ok(_) => prop_assert_eq!(pool.capacity(class), before + 3),
                        Err(e) => {
                            let too_many = matches!(e, regio_pool::Error::TooManyRegions { .. });
                            prop_assert!(too_many, "{}", e);
                        }
                    }
                }
                _ => {}
            }
            check_counts(&pool, &held);
        }
        drop(held);
        for class in 0..pool.classes() {
            prop_assert_eq!(pool.available(class), pool.capacity(class));
        }
    }
}
