//! Many threads acquire and release while asynchronous acquires are cancelled at random; at the
//! end every element is back.

mod common;

use std::task::Poll;
use std::time::Duration;

use common::poll_once;
use regio_pool::{Message, PoolBuilder};

/// xorshift64*: a small deterministic generator, seeded per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn threads_and_cancelled_futures_lose_nothing() {
    const THREADS: u64 = 4;
    const ROUNDS: usize = if cfg!(debug_assertions) {
        50_000
    } else {
        300_000
    };
    let pool = PoolBuilder::new()
        .class(256, 48)
        .class(1024, 16)
        .cache_size(8)
        .max_threads(3) // one thread runs without a cache, on the shared store
        .build()
        .unwrap();
    let capacity = [pool.capacity(0), pool.capacity(1)];
    // Joined explicitly: a scope's implicit join may return before the threads' thread-local
    // destructors (which flush their caches) have run.
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                    let mut held: Vec<Message> = Vec::new();
                    let mut pending = Vec::new();
                    for _ in 0..ROUNDS {
                        let class = (rng.below(4) == 0) as usize;
                        match rng.below(10) {
                            0..=2 => {
                                if let Ok(m) = pool.try_acquire_class(class) {
                                    held.push(m);
                                }
                            }
                            3..=5 => {
                                if !held.is_empty() {
                                    let i = rng.below(held.len() as u64) as usize;
                                    held.swap_remove(i);
                                }
                            }
                            6 => {
                                let mut fut = pool.acquire_class(class);
                                match poll_once(&mut fut) {
                                    Poll::Ready(m) => held.push(m),
                                    Poll::Pending if pending.len() < 3 => pending.push(fut),
                                    Poll::Pending => drop(fut),
                                }
                            }
                            7 => {
                                if !pending.is_empty() {
                                    let i = rng.below(pending.len() as u64) as usize;
                                    if rng.below(2) == 0 {
                                        // Cancelled, maybe after an element was granted to it.
                                        drop(pending.swap_remove(i));
                                    } else if let Poll::Ready(m) = poll_once(&mut pending[i]) {
                                        drop(pending.swap_remove(i));
                                        held.push(m);
                                    }
                                }
                            }
                            8 => {
                                if let Ok(m) =
                                    pool.acquire_class_blocking(class, Duration::from_micros(50))
                                {
                                    held.push(m);
                                }
                            }
                            _ => {
                                if held.len() > 12 {
                                    held.clear();
                                }
                            }
                        }
                    }
                    drop(pending);
                    drop(held);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    for (class, cap) in capacity.into_iter().enumerate() {
        assert_eq!(pool.available(class), cap, "class {class}");
    }
    assert_eq!(pool.users(), 1, "only the handle is still counted");
    let all: Vec<_> = (0..capacity[0])
        .map(|_| pool.try_acquire_class(0).unwrap())
        .collect();
    assert_eq!(all.len(), capacity[0]);
}
