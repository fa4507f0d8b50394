//! `send_zc_all`: a zero-copy send whose future resolves once the socket took the bytes, while
//! the kernel keeps the buffer until its notification; sends in a row arrive in order and
//! intact, every buffer goes back to the pool once the peer has read (acknowledged) the bytes,
//! a send dropped before the socket took it is cancelled, and a shutdown waits for the
//! notifications still due.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use regio_pool::MessagePool;
use regio_runtime::net::{TcpStream, UnixStream};
use regio_runtime::time;

const LIMIT: Duration = Duration::from_secs(60);

/// The buffers of the test pool's 64 KiB class.
const BIG: usize = 1;
const BIG_LEN: usize = 65536;

/// A 64 KiB pool buffer filled with the byte `i`.
fn numbered(pool: &MessagePool, i: usize) -> regio_pool::Message {
    let mut msg = pool.try_acquire_class(BIG).expect("a free 64 KiB buffer");
    msg.as_mut_slice()[..BIG_LEN].fill(i as u8);
    msg.descriptor_mut().truncate(BIG_LEN);
    msg
}

/// A loopback TCP pair: the client, whose receive buffer is as small as the kernel allows and
/// which reads nothing until the test says so, and the server as a runtime stream whose send
/// buffer is large, so that sends fill the client's window and then queue in the server's
/// socket, unsent and so unacknowledged.
fn pair_with_a_peer_that_does_not_read() -> (std::net::TcpStream, std::net::TcpStream) {
    let (client, server) = regio_testkit::loopback();
    common::set_socket_int(client.as_raw_fd(), libc::SO_RCVBUF, 4096);
    common::set_socket_int(server.as_raw_fd(), libc::SO_SNDBUF, 4 << 20);
    (client, server)
}

/// Reads `client` to its end and checks that it got `sends` buffers numbered 0.. in order (and
/// at most `partial` bytes of one more, numbered `sends`).
fn drain_in_order(mut client: std::net::TcpStream, sends: usize, partial: usize) {
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A window of a few KiB would take the bytes a few KiB at a time.
    common::set_socket_int(client.as_raw_fd(), libc::SO_RCVBUF, 1 << 20);
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert!(
        got.len() >= sends * BIG_LEN && got.len() <= sends * BIG_LEN + partial,
        "{} bytes for {sends} sends",
        got.len()
    );
    for (at, &b) in got.iter().enumerate() {
        assert_eq!(usize::from(b), at / BIG_LEN, "byte {at}: out of order");
    }
}

/// Sends the 8 buffers of the big class in a row to a peer that does not read: every future
/// resolves, while the kernel still holds the buffers whose bytes wait in the socket (the
/// peer's window closed before them, so no acknowledgement can have come).
async fn send_every_buffer_unread(stream: &TcpStream, pool: &MessagePool) {
    let count = pool.capacity(BIG);
    for i in 0..count {
        let sent = stream.send_zc_all(numbered(pool, i)).await.unwrap();
        assert_eq!(sent, BIG_LEN);
    }
    let held = count - pool.available(BIG);
    assert!(
        held >= count / 2,
        "only {held} of {count} buffers are still the kernel's: the futures waited for the \
         notifications, or the buffers went back before them"
    );
}

#[test]
fn sends_resolve_before_their_notifications_and_arrive_in_order() {
    common::with_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (client, server) = pair_with_a_peer_that_does_not_read();
        rt.block_on(rt.spawn(async move {
            let stream = TcpStream::from_std(server).unwrap();
            send_every_buffer_unread(&stream, &pool).await;
        }))
        .unwrap();
        // The stream is dropped: the socket closes once the last notification came.
        drain_in_order(client, 8, 0);
    });
}

#[test]
fn a_shutdown_waits_for_the_notifications_still_due() {
    regio_testkit::within(LIMIT, "the test", || {
        let Some(rt) = common::runtime(2) else {
            return;
        };
        let pool = rt.pool().clone();
        let (client, server) = pair_with_a_peer_that_does_not_read();
        rt.block_on(rt.spawn({
            let pool = pool.clone();
            async move {
                let stream = TcpStream::from_std(server).unwrap();
                send_every_buffer_unread(&stream, &pool).await;
            }
        }))
        .unwrap();
        let reader = std::thread::spawn(move || drain_in_order(client, 8, 0));
        rt.shutdown(Duration::from_secs(30));
        reader.join().unwrap();
        common::assert_pool_full(&pool);
    });
}

#[test]
fn a_send_dropped_before_the_socket_took_it_is_cancelled_and_gives_its_buffer_back() {
    common::with_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (client, server) = regio_testkit::loopback();
        common::set_socket_int(client.as_raw_fd(), libc::SO_RCVBUF, 4096);
        common::set_socket_int(server.as_raw_fd(), libc::SO_SNDBUF, 4096);
        let resolved = rt
            .block_on(rt.spawn(async move {
                let stream = TcpStream::from_std(server).unwrap();
                for i in 0..pool.capacity(BIG) {
                    let send = stream.send_zc_all(numbered(&pool, i));
                    match time::timeout(Duration::from_millis(20), send).await {
                        Ok(sent) => assert_eq!(sent.unwrap(), BIG_LEN),
                        Err(_) => return i,
                    }
                }
                panic!("every send to a peer that does not read fit in the socket buffers");
            }))
            .unwrap();
        // The cancelled send may have handed part of its bytes to the socket.
        drain_in_order(client, resolved, BIG_LEN - 1);
    });
}

#[test]
fn a_unix_socket_refuses_and_the_buffer_goes_back() {
    common::with_runtime(1, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = rt
            .block_on(rt.spawn(async move {
                let a = UnixStream::from_std(a).unwrap();
                a.send_zc_all(numbered(&pool, 1)).await.unwrap_err()
            }))
            .unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
    });
}

#[test]
fn off_the_workers_a_send_resolves_too_and_an_empty_one_at_once() {
    common::with_runtime(1, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (client, server) = regio_testkit::loopback();
        rt.block_on(async {
            let stream = TcpStream::from_std(server).unwrap();
            assert_eq!(
                stream.send_zc_all(numbered(&pool, 0)).await.unwrap(),
                BIG_LEN
            );
            let mut empty = numbered(&pool, 1);
            empty.descriptor_mut().truncate(0);
            assert_eq!(stream.send_zc_all(empty).await.unwrap(), 0);
        });
        drain_in_order(client, 1, 0);
    });
}
