//! The provided-buffer feed against the ring's contract (see the `feed` module docs): never
//! more buffers than slots, each buffer id in the ring at most once, and the ring retired before
//! any of its buffers goes back to the pool.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use regio_pool::{BufFeed, BufRingSink, Error, MessagePool, PoolBuilder, Received};

/// A provided-buffer ring as the kernel sees it: a FIFO of `entries` slots that the producer
/// fills at the tail and the kernel consumes at the head.
#[derive(Default)]
struct KernelRing {
    ring: Mutex<VecDeque<(usize, u16)>>,
    /// Every push, as (address, bid).
    pushed: Mutex<Vec<(usize, u16)>>,
    /// What the pool's `available(0)` said when the ring was retired, once it was.
    retired_at: Mutex<Option<usize>>,
}

impl KernelRing {
    /// The kernel picks the next buffer: (address, bid).
    fn pick(&self) -> Option<(usize, u16)> {
        self.ring.lock().unwrap().pop_front()
    }
}

struct Sink {
    entries: u16,
    ring: Arc<KernelRing>,
    pool: MessagePool,
    /// What `retire` answers: whether the kernel let go.
    let_go: bool,
}

// SAFETY: the "ring" is a FIFO that no kernel reads; it checks the feed's side of the contract
// instead of relying on it.
unsafe impl BufRingSink for Sink {
    fn entries(&self) -> u16 {
        self.entries
    }

    unsafe fn push(&self, addr: NonNull<u8>, _len: u32, bid: u16) {
        let addr = addr.as_ptr() as usize;
        self.ring.pushed.lock().unwrap().push((addr, bid));
        let mut ring = self.ring.ring.lock().unwrap();
        assert!(
            ring.len() < usize::from(self.entries),
            "push of bid {bid} overwrites an entry the kernel has not consumed: {ring:?}"
        );
        assert!(
            ring.iter().all(|&(_, b)| b != bid),
            "bid {bid} is in the ring twice: {ring:?}"
        );
        ring.push_back((addr, bid));
    }

    fn retire(self: Box<Self>) -> bool {
        *self.ring.retired_at.lock().unwrap() = Some(self.pool.available(0));
        self.let_go
    }
}

fn pool(count: u32) -> MessagePool {
    PoolBuilder::new()
        .class(256, count)
        .cache_size(0)
        .build()
        .unwrap()
}

fn kernel_ring(pool: &MessagePool, entries: u16, let_go: bool) -> (Sink, Arc<KernelRing>) {
    let ring = Arc::new(KernelRing::default());
    let sink = Sink {
        entries,
        ring: Arc::clone(&ring),
        pool: pool.clone(),
        let_go,
    };
    (sink, ring)
}

/// Plays the kernel: picks the next buffer, writes `data` into it, and takes it from the feed.
fn receive(feed: &BufFeed, ring: &KernelRing, data: &[u8]) -> Option<Received> {
    let (addr, bid) = ring.pick()?;
    // SAFETY: the picked buffer is the ring's (no Received holds it) and longer than `data`.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
    // SAFETY: the kernel (this function) picked `bid` just now, and takes it once.
    Some(unsafe { feed.take(bid, data.len() as u32) }.unwrap())
}

/// Four buffers on a ring of two slots would have the kernel hand out bids 2, 3, 2, 3: one
/// buffer twice, under a `Received` that still holds it. The feed refuses them.
#[test]
fn a_feed_never_holds_more_buffers_than_its_ring_has_slots() {
    let pool = pool(8);
    let (too_small, ring) = kernel_ring(&pool, 2, true);
    let err = BufFeed::new(&pool, 0, 4, too_small).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FeedTooLarge {
                count: 4,
                entries: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at least 4 entries"), "{err}");
    assert!(ring.pushed.lock().unwrap().is_empty(), "nothing was pushed");
    assert_eq!(pool.available(0), 8, "nothing was kept");

    let (fits, ring) = kernel_ring(&pool, 2, true);
    let feed = BufFeed::new(&pool, 0, 2, fits).unwrap();
    let first = receive(&feed, &ring, b"first").unwrap();
    let second = receive(&feed, &ring, b"second").unwrap();
    assert!(
        ring.pick().is_none(),
        "both buffers are held: the ring is empty"
    );
    drop(second);
    let third = receive(&feed, &ring, b"third").unwrap();
    assert_eq!(first.data(), b"first", "a held buffer never changes");
    assert_eq!(third.data(), b"third");
    drop((first, third));
    drop(feed);
    assert_eq!(pool.available(0), 8);
}

/// The kernel may write into a buffer of the ring until the ring is unregistered, so no buffer
/// of a dropped feed may reach the pool before its ring is retired.
#[test]
fn dropping_a_feed_retires_its_ring_before_any_buffer_goes_back() {
    let pool = pool(8);
    let (sink, ring) = kernel_ring(&pool, 4, true);
    let feed = BufFeed::new(&pool, 0, 4, sink).unwrap();
    assert_eq!(pool.available(0), 4);
    drop(feed);
    assert_eq!(
        *ring.retired_at.lock().unwrap(),
        Some(4),
        "when the ring was retired, its buffers were all still out of the pool"
    );
    assert_eq!(pool.available(0), 8, "and then they came back");

    // A Received keeps the ring until it drops; its buffer goes back into the ring first.
    let (sink, ring) = kernel_ring(&pool, 4, true);
    let feed = BufFeed::new(&pool, 0, 4, sink).unwrap();
    let held = receive(&feed, &ring, b"late").unwrap();
    drop(feed);
    assert_eq!(*ring.retired_at.lock().unwrap(), None, "still in use");
    drop(held);
    assert_eq!(*ring.retired_at.lock().unwrap(), Some(4));
    assert_eq!(pool.available(0), 8);
}

/// A ring the kernel did not let go of keeps its buffers: they are never handed out again.
#[test]
fn the_buffers_of_a_ring_the_kernel_keeps_never_go_back_to_the_pool() {
    let pool = pool(8);
    let (sink, ring) = kernel_ring(&pool, 4, false);
    let feed = BufFeed::new(&pool, 0, 4, sink).unwrap();
    let lent: Vec<usize> = ring.pushed.lock().unwrap().iter().map(|p| p.0).collect();
    drop(feed);
    assert_eq!(*ring.retired_at.lock().unwrap(), Some(4));
    assert_eq!(pool.available(0), 4, "the four lent buffers stay lent");
    let all: Vec<_> = std::iter::from_fn(|| pool.try_acquire().ok()).collect();
    assert_eq!(all.len(), 4);
    for msg in &all {
        assert!(
            !lent.contains(&(msg.as_ptr() as usize)),
            "a buffer the kernel may still write to was handed out again"
        );
    }
}

/// A buffer id the kernel never reported is refused (when the feed can tell), and a take with
/// a length past the buffer covers only the buffer.
#[test]
fn take_checks_what_it_can() {
    let pool = pool(4);
    let (sink, ring) = kernel_ring(&pool, 2, true);
    let feed = BufFeed::new(&pool, 0, 2, sink).unwrap();
    let (_, bid) = ring.pick().unwrap();
    // SAFETY: the kernel (this test) picked `bid`.
    let mut got = unsafe { feed.take(bid, u32::MAX) }.unwrap();
    assert_eq!(got.data().len(), 256, "cut to the buffer");
    got.data_mut().fill(7);
    assert!(got.as_slice().iter().all(|&b| b == 7));
    // SAFETY: `bid` is held by `got`, not in the ring.
    let again = unsafe { feed.take(bid, 1) };
    assert!(matches!(again, Err(Error::NotInRing { .. })));
    // SAFETY: the feed has ids 0 and 1 only.
    let past = unsafe { feed.take(2, 1) };
    assert!(matches!(past, Err(Error::NotInRing { bid: 2 })));
    // SAFETY: as above.
    let far = unsafe { feed.take(u16::MAX, 1) };
    assert!(matches!(far, Err(Error::NotInRing { .. })));
    assert!(matches!(
        BufFeed::new(&pool, 9, 1, kernel_ring(&pool, 1, true).0),
        Err(Error::NoSuchClass {
            class: 9,
            classes: 1
        })
    ));
}
