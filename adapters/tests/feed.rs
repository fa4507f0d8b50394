//! A pool feed on a real provided-buffer ring under a real multishot receive: the ring never
//! holds more buffers than slots, and no buffer of a dropped feed reaches the pool while the
//! kernel may still write into it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use regio_adapters::{Adapter, Op, ProvidedRing, Target, WorkQueue};
use regio_pool::{BufFeed, Message, MessagePool};

/// A pool of 8 messages of 64 bytes, without per-thread caches.
fn pool() -> MessagePool {
    MessagePool::builder()
        .class(64, 8)
        .cache_size(0)
        .build()
        .unwrap()
}

/// A provided ring of `entries` slots as group `bgid` on CQ 0, or `None` after a skip.
fn provided(adapter: &Adapter<Message>, bgid: u16, entries: u16) -> Option<ProvidedRing<Message>> {
    match adapter.provided_ring(0, bgid, entries) {
        Ok(r) => Some(r),
        Err(regio_adapters::Error::Unsupported { what, since }) => {
            regio_testkit::skip(&format!("{what} needs Linux {since}"));
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// An adapter of one CQ and a provided ring on it (as [`provided`]), or `None` after a skip.
fn adapter_with_provided_ring(
    bgid: u16,
    entries: u16,
) -> Option<(Adapter<Message>, ProvidedRing<Message>)> {
    let adapter = common::adapter_or_skip::<Message>(common::config(1, false))?;
    let ring = provided(&adapter, bgid, entries)?;
    Some((adapter, ring))
}

/// A loopback pair (client, server) with a multishot receive on group `bgid` armed on the server.
fn armed_receive(
    adapter: &Adapter<Message>,
    bgid: u16,
) -> (TcpStream, TcpStream, WorkQueue<Message>) {
    let (client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 4, 4)
        .unwrap();
    wq.post(Op::recv_multishot(bgid, 1)).unwrap();
    (client, server, wq)
}

/// Fills every message of `pool` that is free with a pattern; a write the kernel makes later
/// shows up in [`assert_untouched`].
fn fill_free(pool: &MessagePool) -> Vec<Message> {
    let mut all: Vec<Message> = std::iter::from_fn(|| pool.try_acquire().ok()).collect();
    for msg in &mut all {
        msg.as_mut_slice().fill(b'.');
    }
    all
}

fn assert_untouched(msgs: &[Message]) {
    for msg in msgs {
        assert!(
            msg.as_slice().iter().all(|&b| b == b'.'),
            "the kernel wrote into {:?}, handed out by the pool: {:?}",
            msg.handle(),
            String::from_utf8_lossy(&msg.as_slice()[..8])
        );
    }
}

/// With 4 buffers on 2 slots the kernel picked bids 2, 3, 2: the third receive landed in the
/// buffer of the first, still held. The feed refuses that; with 2 buffers, a third receive
/// finds the ring empty and held buffers keep their bytes.
#[test]
fn a_feed_never_lends_more_buffers_than_its_ring_has_slots() {
    let Some((adapter, small)) = adapter_with_provided_ring(3, 2) else {
        return;
    };
    let pool = pool();
    let err = BufFeed::new(&pool, 0, 4, small).unwrap_err();
    assert!(
        matches!(
            err,
            regio_pool::Error::FeedTooLarge {
                count: 4,
                entries: 2
            }
        ),
        "{err}"
    );
    assert_eq!(pool.available(0), 8);

    let feed = BufFeed::new(&pool, 0, 2, provided(&adapter, 4, 2).unwrap()).unwrap();
    let (mut client, _server, wq) = armed_receive(&adapter, 4);
    let cq = wq.ring();
    let mut held = Vec::new();
    for word in ["first", "second"] {
        client.write_all(word.as_bytes()).unwrap();
        let c = common::wait_one(&cq);
        assert!(c.result > 0 && !c.is_final(), "{c:?}");
        let bid = c.buffer_id().expect("a provided buffer");
        // SAFETY: the kernel picked `bid` for this completion, taken once.
        held.push(unsafe { feed.take(bid, c.result as u32) }.unwrap());
    }
    client.write_all(b"third").unwrap();
    let c = common::wait_one(&cq);
    assert_eq!(c.result, -libc::ENOBUFS, "the ring is empty: {c:?}");
    assert!(c.is_final());
    assert_eq!(held[0].data(), b"first");
    assert_eq!(held[1].data(), b"second");
    drop((held, feed));
    assert_eq!(pool.available(0), 8);
}

/// A feed dropped under an armed multishot receive: its ring is unregistered before its buffers
/// return, so the receive finds no buffer and the pool's messages keep their bytes.
#[test]
fn a_dropped_feed_is_unregistered_before_its_buffers_return() {
    let Some((adapter, ring)) = adapter_with_provided_ring(5, 4) else {
        return;
    };
    let pool = pool();
    let feed = BufFeed::new(&pool, 0, 4, ring).unwrap();
    let (mut client, _server, wq) = armed_receive(&adapter, 5);
    let cq = wq.ring();
    drop(feed);
    let mine = fill_free(&pool);
    assert_eq!(mine.len(), 8, "the feed's buffers are back");
    client.write_all(b"late data").unwrap();
    let c = common::wait_one(&cq);
    assert_eq!(c.result, -libc::ENOBUFS, "the group is gone: {c:?}");
    assert_untouched(&mine);
}

/// In single-issuer mode only the owner may unregister: a feed dropped on another thread cannot
/// retire its ring, which stays armed under the receive. Its buffers must stay out of the pool,
/// or the next receive writes into a message someone else holds.
#[test]
fn a_ring_the_kernel_keeps_keeps_its_buffers_out_of_the_pool() {
    let config = common::config(1, false).single_issuer(true);
    let Some(adapter) = common::adapter_or_skip::<Message>(config) else {
        return;
    };
    let cq = adapter.ring(0).unwrap();
    cq.bind_owner().unwrap();
    let pool = pool();
    let Some(ring) = provided(&adapter, 9, 4) else {
        return;
    };
    let feed = BufFeed::new(&pool, 0, 4, ring).unwrap();
    let (mut client, _server, _wq) = armed_receive(&adapter, 9);
    std::thread::spawn(move || drop(feed)).join().unwrap();
    let mine = fill_free(&pool);
    client.write_all(b"XYZ").unwrap();
    let c = common::wait_one(&cq);
    assert_eq!(c.result, 3, "the ring is still registered: {c:?}");
    assert!(c.buffer_id().is_some());
    assert_untouched(&mine);
    assert_eq!(mine.len(), 4, "the ring's four buffers stay lent");
}
