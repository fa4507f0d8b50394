//! Send and recv on registered buffers, over real sockets, with pool messages as the buffers.
//!
//! Which SQE carries them depends on the kernel (`IORING_RECVSEND_FIXED_BUF` from Linux 7.2,
//! else `WRITE_FIXED`/`READ_FIXED` for flags 0 and the copying `SEND`/`RECV` for other flags; the
//! SQEs themselves are checked by the unit tests in `ops::net`). These tests check what the
//! caller sees on any kernel: the bytes, the lengths, the flags' effects and the buffers' return,
//! with the SQEs issued by the posting thread and by an SQPOLL thread.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::Duration;

use regio_adapters::{Adapter, BufKey, Op, Target, WorkQueue};
use regio_pool::{Message, MessagePool, Opcode};

const LEN: usize = 4096;

/// An adapter (one CQ, SQPOLL or not) with a message pool, a loopback TCP pair and a work
/// queue on each end.
struct Connected {
    /// Held for the test's length and read by nobody. As the first field it drops first,
    /// before its queues, as it did when the tests unpacked the struct.
    _adapter: Adapter<Message>,
    pool: MessagePool,
    client: TcpStream,
    server: TcpStream,
    cwq: WorkQueue<Message>,
    swq: WorkQueue<Message>,
}

/// `None` after a `SKIP:` line where io_uring is disabled.
fn connected(sqpoll: bool) -> Option<Connected> {
    let adapter = common::adapter_or_skip::<Message>(common::config(1, sqpoll))?;
    let pool = common::message_pool(&adapter, LEN as u32);
    let (client, server) = regio_testkit::loopback();
    let on = |fd| adapter.work_queue(0, Target::Fd(fd), 4, 4).unwrap();
    let (cwq, swq) = (on(client.as_raw_fd()), on(server.as_raw_fd()));
    Some(Connected {
        _adapter: adapter,
        pool,
        client,
        server,
        cwq,
        swq,
    })
}

/// Runs `test` on a fresh [`Connected`] without SQPOLL, then with it (skipped without io_uring).
fn with_and_without_sqpoll(test: fn(Connected)) {
    for sqpoll in [false, true] {
        if let Some(net) = connected(sqpoll) {
            test(net);
        }
    }
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Receives exactly `n` bytes on `wq` with `flags`, one pool message per receive.
fn recv_exactly(wq: &WorkQueue<Message>, pool: &MessagePool, n: usize, flags: i32) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        wq.post(Op::recv(pool.try_acquire().unwrap(), flags, 1))
            .unwrap();
        let c = common::wait_one(&wq.ring());
        assert!(c.result > 0, "{c:?}");
        let msg = c.buf.expect("the message comes back");
        got.extend_from_slice(&msg.as_slice()[..c.result as usize]);
    }
    assert_eq!(got.len(), n, "more bytes than were sent");
    got
}

#[test]
fn send_and_recv_with_flags_zero_move_pool_messages_over_loopback_tcp() {
    with_and_without_sqpoll(round_trips_with_flags_zero);
}

fn round_trips_with_flags_zero(mut net: Connected) {
    // Out through the work queue, in through the plain socket.
    let mut msg = net.pool.try_acquire().unwrap();
    msg.as_mut_slice().copy_from_slice(&pattern(1));
    net.cwq.post(Op::send(msg, 0, 7)).unwrap();
    let c = common::wait_one(&net.cwq.ring());
    assert_eq!((c.cookie, c.result), (7, LEN as i32), "{c:?}");
    drop(c);
    let mut data = vec![0u8; LEN];
    net.server.read_exact(&mut data).unwrap();
    assert_eq!(data, pattern(1));

    // Out through the plain socket, in through the work queue.
    net.client.write_all(&pattern(2)).unwrap();
    assert_eq!(recv_exactly(&net.swq, &net.pool, LEN, 0), pattern(2));

    // Work queue to work queue, both ways, several rounds on the same messages.
    for round in 0..4u8 {
        let mut msg = net.pool.try_acquire().unwrap();
        msg.as_mut_slice().copy_from_slice(&pattern(round + 3));
        let (from, to) = if round % 2 == 0 {
            (&net.cwq, &net.swq)
        } else {
            (&net.swq, &net.cwq)
        };
        from.post(Op::send(msg, 0, 8)).unwrap();
        assert_eq!(recv_exactly(to, &net.pool, LEN, 0), pattern(round + 3));
        assert_eq!(common::wait_one(&from.ring()).result, LEN as i32);
    }
    assert_eq!(
        net.pool.available(0),
        16,
        "every message went back to the pool"
    );
}

#[test]
fn descriptor_slices_inside_a_message_are_sent_and_received_in_place() {
    with_and_without_sqpoll(slices_in_place);
}

/// Posts `msg` on `wq` as `opcode` with `cookie`, on its bytes `bytes` alone.
fn post_slice(
    wq: &WorkQueue<Message>,
    mut msg: Message,
    opcode: Opcode,
    cookie: u64,
    bytes: Range<u32>,
) {
    let whole = msg.key();
    let key = BufKey {
        offset: whole.offset + bytes.start,
        len: bytes.end - bytes.start,
        ..whole
    };
    let d = msg.descriptor_mut();
    d.opcode = opcode;
    d.cookie = cookie;
    d.set_slices(&[key]).unwrap();
    wq.post_message(msg).unwrap();
}

fn slices_in_place(net: Connected) {
    // The receive is posted first, into bytes 1000..1100 of a message that is 0xaa elsewhere.
    let mut rx = net.pool.try_acquire().unwrap();
    rx.as_mut_slice().fill(0xaa);
    post_slice(&net.swq, rx, Opcode::Recv, 21, 1000..1100);

    // The send takes bytes 3000..3100 of a message holding the pattern.
    let mut tx = net.pool.try_acquire().unwrap();
    tx.as_mut_slice().copy_from_slice(&pattern(9));
    post_slice(&net.cwq, tx, Opcode::Send, 22, 3000..3100);

    let sent = common::wait_one(&net.cwq.ring());
    assert_eq!((sent.cookie, sent.result), (22, 100), "{sent:?}");
    let got = common::wait_one(&net.swq.ring());
    assert_eq!((got.cookie, got.result), (21, 100), "{got:?}");
    let rx = got.buf.as_ref().unwrap().as_slice();
    assert_eq!(rx[1000..1100], pattern(9)[3000..3100]);
    assert!(rx[..1000].iter().chain(&rx[1100..]).all(|b| *b == 0xaa));
}

#[test]
fn flags_are_honoured() {
    with_and_without_sqpoll(flags_honoured);
}

fn flags_honoured(mut net: Connected) {
    let scq = net.swq.ring();

    // MSG_PEEK leaves the bytes in the socket: the next receive sees them again.
    net.client.write_all(b"peekaboo").unwrap();
    net.swq
        .post(Op::recv(net.pool.try_acquire().unwrap(), libc::MSG_PEEK, 1))
        .unwrap();
    let c = common::wait_one(&scq);
    assert_eq!(c.result, 8, "{c:?}");
    assert_eq!(&c.buf.as_ref().unwrap().as_slice()[..8], b"peekaboo");
    drop(c);
    assert_eq!(recv_exactly(&net.swq, &net.pool, 8, 0), b"peekaboo");

    // MSG_WAITALL holds the receive until the whole message is there.
    let mut rx = net.pool.try_acquire().unwrap();
    let whole = rx.key();
    rx.descriptor_mut()
        .set_slices(&[BufKey { len: 8, ..whole }])
        .unwrap();
    net.swq.post(Op::recv(rx, libc::MSG_WAITALL, 2)).unwrap();
    net.client.write_all(b"half").unwrap();
    let mut early = Vec::new();
    scq.wait(&mut early, 1, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(early.is_empty(), "half the bytes completed it: {early:?}");
    net.client.write_all(b"full").unwrap();
    let c = common::wait_one(&scq);
    assert_eq!(c.result, 8, "{c:?}");
    assert_eq!(&c.buf.as_ref().unwrap().as_slice()[..8], b"halffull");
    drop(c);

    // A send with flags reaches the peer like any other.
    let mut msg = net.pool.try_acquire().unwrap();
    msg.as_mut_slice().copy_from_slice(&pattern(5));
    net.cwq.post(Op::send(msg, libc::MSG_NOSIGNAL, 3)).unwrap();
    assert_eq!(common::wait_one(&net.cwq.ring()).result, LEN as i32);
    let mut data = vec![0u8; LEN];
    net.server.read_exact(&mut data).unwrap();
    assert_eq!(data, pattern(5));
    assert_eq!(net.pool.available(0), 16);
}

#[test]
fn a_send_to_a_closed_peer_completes_with_epipe_with_or_without_flags() {
    for sqpoll in [false, true] {
        epipe(sqpoll);
    }
}

fn epipe(sqpoll: bool) {
    // Rust programs (this test binary too) ignore SIGPIPE, so the send with flags 0, a
    // fixed-buffer write on kernels without fixed-buffer SEND, shows only its -EPIPE.
    let Some(adapter) = common::adapter_or_skip::<Message>(common::config(1, sqpoll)) else {
        return;
    };
    let pool = common::message_pool(&adapter, LEN as u32);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(b);
    let wq = adapter
        .work_queue(0, Target::Fd(a.as_raw_fd()), 4, 4)
        .unwrap();
    for flags in [0, libc::MSG_NOSIGNAL] {
        wq.post(Op::send(pool.try_acquire().unwrap(), flags, 1))
            .unwrap();
        let c = common::wait_one(&wq.ring());
        assert_eq!(c.result, -libc::EPIPE, "flags {flags}: {c:?}");
        assert!(c.buf.is_some(), "the message comes back with the error");
    }
}
