//! `send_zc_all`: a zero-copy send whose future resolves once the socket took the bytes, while
//! the kernel keeps the buffer until its notification; sends in a row arrive in order and
//! intact, every buffer goes back to the pool once the peer has read (acknowledged) the bytes,
//! a send dropped before the socket took it is cancelled, and a shutdown waits for the
//! notifications still due.

mod common;

use std::future::Future;
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
    pair_with_buffers(4 << 20)
}

/// A loopback TCP pair whose client's receive buffer is as small as the kernel allows, and
/// whose server's send buffer is `send_buffer` bytes (4096: a send of a big buffer waits for
/// room).
fn pair_with_buffers(send_buffer: i32) -> (std::net::TcpStream, std::net::TcpStream) {
    let (client, server) = regio_testkit::loopback();
    common::set_socket_int(client.as_raw_fd(), libc::SO_RCVBUF, 4096);
    common::set_socket_int(server.as_raw_fd(), libc::SO_SNDBUF, send_buffer);
    (client, server)
}

/// Everything `client` reads until its end (within a generous read timeout), through a
/// receive buffer widened again (a window of a few KiB would take the bytes a few KiB at a
/// time).
fn read_to_end(mut client: std::net::TcpStream) -> Vec<u8> {
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    common::set_socket_int(client.as_raw_fd(), libc::SO_RCVBUF, 1 << 20);
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    got
}

/// Reads `client` to its end and checks that it got `sends` buffers numbered 0.. in order (and
/// at most `partial` bytes of one more, numbered `sends`).
fn drain_in_order(client: std::net::TcpStream, sends: usize, partial: usize) {
    let got = read_to_end(client);
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

/// Runs `sends` on a task of `rt`, on the stream of a connection whose peer does not read
/// (the stream is dropped after: its socket closes once the last notification came), with
/// the runtime's pool; returns the peer and what `sends` returned.
fn to_a_peer_that_does_not_read<F, T>(
    rt: &regio_runtime::Runtime,
    sends: impl FnOnce(TcpStream, MessagePool) -> F + Send + 'static,
) -> (std::net::TcpStream, T)
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let pool = rt.pool().clone();
    let (client, server) = pair_with_a_peer_that_does_not_read();
    let done = rt
        .block_on(rt.spawn(async move { sends(TcpStream::from_std(server).unwrap(), pool).await }))
        .unwrap();
    (client, done)
}

/// [`send_every_buffer_unread`] on `rt`, to a peer that does not read; returns the peer.
fn sent_unread(rt: &regio_runtime::Runtime) -> std::net::TcpStream {
    to_a_peer_that_does_not_read(rt, |stream, pool| async move {
        send_every_buffer_unread(&stream, &pool).await;
    })
    .0
}

#[test]
fn sends_resolve_before_their_notifications_and_arrive_in_order() {
    common::with_runtime(2, LIMIT, |rt| {
        drain_in_order(sent_unread(rt), 8, 0);
    });
}

#[test]
fn a_shutdown_waits_for_the_notifications_still_due() {
    common::with_owned_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let client = sent_unread(&rt);
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
        let (client, server) = pair_with_buffers(4096);
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
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_one_send_fails(libc::EOPNOTSUPP, |pool| async move {
        let a = UnixStream::from_std(a).unwrap();
        a.send_zc_all(numbered(&pool, 1)).await.unwrap_err()
    });
}

/// Runs `send` (given the pool) on a task of a fresh runtime, and asserts that the error of
/// the one send it makes is `errno`, and that the buffer came back.
fn assert_one_send_fails<F>(errno: i32, send: impl FnOnce(MessagePool) -> F + Send + 'static)
where
    F: Future<Output = std::io::Error> + Send + 'static,
{
    common::with_runtime(1, LIMIT, move |rt| {
        let err = rt.block_on(rt.spawn(send(rt.pool().clone()))).unwrap();
        assert_eq!(err.raw_os_error(), Some(errno), "{err}");
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

/// Every free buffer of the big class, acquired and scribbled over (then released).
fn scribble_every_free_buffer(pool: &MessagePool) {
    let mut taken = Vec::new();
    while let Ok(mut msg) = pool.try_acquire_class(BIG) {
        msg.as_mut_slice()[..BIG_LEN].fill(0xee);
        taken.push(msg);
    }
}

/// A buffer whose send resolved but whose notification has not come is not in the pool: after
/// each send, every buffer the pool hands out is scribbled over, and the peer still reads
/// exactly what was sent (a buffer back too early would carry the scribble).
#[test]
fn a_buffer_the_kernel_still_reads_is_never_handed_out_again() {
    common::with_runtime(2, LIMIT, |rt| {
        let (client, ()) = to_a_peer_that_does_not_read(rt, |stream, pool| async move {
            for i in 0..pool.capacity(BIG) {
                let sent = stream.send_zc_all(numbered(&pool, i)).await.unwrap();
                assert_eq!(sent, BIG_LEN);
                scribble_every_free_buffer(&pool);
            }
        });
        drain_in_order(client, 8, 0);
    });
}

/// A send whose future is dropped after its first completion came, before it was polled
/// again, is not cancelled (only its notification was left): every byte arrives.
#[test]
fn a_send_dropped_after_its_first_completion_still_delivers_every_byte() {
    common::with_runtime(1, LIMIT, |rt| {
        let (client, ()) = to_a_peer_that_does_not_read(rt, |stream, pool| async move {
            for i in 0..2 {
                let mut send = stream.send_zc_all(numbered(&pool, i));
                let polled = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(std::pin::Pin::new(&mut send).poll(cx))
                })
                .await;
                assert!(
                    polled.is_pending(),
                    "a send completes after the submit step"
                );
                // The worker reaps the send's completion meanwhile (its socket takes the
                // bytes at once); the future is never polled again.
                time::sleep(Duration::from_millis(50)).await;
                drop(send);
            }
        });
        drain_in_order(client, 2, 0);
    });
}

/// A socket's descriptor, as `/proc/self/fd` names it (`socket:[inode]`), to tell when it
/// closed whatever other tests open meanwhile.
struct Socket {
    fd: std::os::fd::RawFd,
    name: std::path::PathBuf,
}

impl Socket {
    fn of(socket: &impl AsRawFd) -> Self {
        let fd = socket.as_raw_fd();
        let name = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        Self { fd, name }
    }

    /// Whether the descriptor no longer names this socket.
    fn is_closed(&self) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd)).map_or(true, |n| n != self.name)
    }
}

/// A peer that resets while sends wait in the socket: a send stuck on the full socket fails
/// (the count so far, or the reset), the notifications come with the reset, every buffer goes
/// back to the pool and the socket closes.
#[test]
fn a_peer_that_resets_fails_the_send_in_flight_and_every_buffer_comes_back() {
    common::with_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (client, server) = pair_with_buffers(4096);
        let socket = Socket::of(&server);
        let (resolved_tx, resolved_rx) = std::sync::mpsc::channel();
        let sending = rt.spawn(async move {
            let stream = TcpStream::from_std(server).unwrap();
            for i in 0..pool.capacity(BIG) {
                match stream.send_zc_all(numbered(&pool, i)).await {
                    Ok(n) => {
                        assert_eq!(n, BIG_LEN);
                        resolved_tx.send(i).unwrap();
                    }
                    Err(e) => return e,
                }
            }
            panic!("every send to a peer that does not read fit in the socket buffers");
        });
        // Give the sends time to fill the sockets (a bounded wait on the first resolved one,
        // then a pause: the stuck send need not have started for the test to hold).
        resolved_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        common::reset_on_close(&client);
        drop(client);
        let err = rt.block_on(sending).unwrap();
        assert!(
            matches!(err.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE))
                || err.kind() == std::io::ErrorKind::Other,
            "{err}"
        );
        common::eventually_pool_full(rt.pool(), "every buffer is back after the reset");
        common::eventually("the socket is closed", || socket.is_closed());
    });
}

/// A shutdown whose deadline passes while notifications are still due (the peer reads
/// nothing) returns, and does not give the buffers the kernel still holds back to the pool:
/// those the pool hands out are scribbled over, and the peer, reading once the runtime is
/// gone, gets exactly what was sent. The pool those buffers belong to is leaked on purpose,
/// so the test runs in a child process with the leak check off.
#[test]
fn a_shutdown_that_gives_up_on_notifications_keeps_their_buffers_out_of_the_pool() {
    common::run_child_test_leaking(GIVE_UP_CHILD);
}

const GIVE_UP_CHILD: &str = "a_shutdown_that_gives_up_on_notifications_child";

/// The body of [`a_shutdown_that_gives_up_on_notifications_keeps_their_buffers_out_of_the_pool`].
#[test]
#[ignore = "run in a child process, with the leak check off, by its parent test"]
fn a_shutdown_that_gives_up_on_notifications_child() {
    common::with_owned_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let client = sent_unread(&rt);
        rt.shutdown(Duration::from_millis(50));
        assert!(
            pool.available(BIG) < pool.capacity(BIG),
            "the buffers the kernel held went back to the pool at shutdown"
        );
        scribble_every_free_buffer(&pool);
        drain_in_order(client, 8, 0);
    });
}

/// A descriptor of two slices, or one naming another message's bytes, is refused before the
/// kernel sees it: a clear error, and both buffers back in the pool.
#[test]
fn a_descriptor_the_adapter_refuses_fails_the_send_and_gives_the_buffer_back() {
    common::with_runtime(1, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (_client, server) = regio_testkit::loopback();
        rt.block_on(rt.spawn(async move {
            let stream = TcpStream::from_std(server).unwrap();
            let mut two = numbered(&pool, 1);
            let whole = two.key();
            let (mut a, mut b) = (whole, whole);
            a.len = 100;
            b.offset += 200;
            b.len = 100;
            two.descriptor_mut().set_slices(&[a, b]).unwrap();
            assert!(stream.send_zc_all(two).await.is_err());
            let other = numbered(&pool, 2);
            let mut foreign = numbered(&pool, 3);
            foreign.descriptor_mut().set_slices(&[other.key()]).unwrap();
            assert!(stream.send_zc_all(foreign).await.is_err());
        }))
        .unwrap();
    });
}

/// A write half that sends every buffer with `send_zc_all` and is dropped at once (which shuts
/// its writing side down) while the kernel still holds the buffers: the peer reads every byte,
/// in order, then the end of the stream, and every buffer comes back.
#[test]
fn a_write_half_dropped_after_its_sends_resolved_delivers_every_byte_then_the_end() {
    common::with_runtime(2, LIMIT, |rt| {
        let (client, ()) = to_a_peer_that_does_not_read(rt, |stream, pool| async move {
            let (read, write) = stream.into_split();
            for i in 0..pool.capacity(BIG) {
                assert_eq!(
                    write.send_zc_all(numbered(&pool, i)).await.unwrap(),
                    BIG_LEN
                );
            }
            drop(write);
            drop(read);
        });
        drain_in_order(client, 8, 0);
    });
}

/// With every buffer of the class held by the kernel for sends whose futures resolved, a task
/// that waits for one (`acquire_class`) gets it once the peer reads and the notifications
/// come: the buffers the worker gives back wake the pool's waiters.
#[test]
fn a_task_waiting_for_a_buffer_the_kernel_holds_gets_it_when_the_notification_comes() {
    common::with_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (client, back) = to_a_peer_that_does_not_read(rt, |stream, pool| async move {
            send_every_buffer_unread(&stream, &pool).await;
            // Take what came back already: the class is empty, the rest with the kernel.
            std::iter::from_fn(|| pool.try_acquire_class(BIG).ok()).collect::<Vec<_>>()
        });
        assert!(back.len() < pool.capacity(BIG));
        let waiter = rt.spawn(async move {
            let got = pool.acquire_class(BIG).await;
            drop(back);
            got.capacity()
        });
        drain_in_order(client, 8, 0);
        assert_eq!(rt.block_on(waiter).unwrap(), BIG_LEN);
    });
}

/// A send on a stream whose writing side is shut down fails with `EPIPE` (no `SIGPIPE`: the
/// process lives), and its buffer goes back to the pool.
#[test]
fn a_send_after_shutting_the_writing_side_down_fails_with_epipe() {
    let (client, server) = regio_testkit::loopback();
    assert_one_send_fails(libc::EPIPE, |pool| async move {
        let stream = TcpStream::from_std(server).unwrap();
        stream.shutdown(std::net::Shutdown::Write).await.unwrap();
        let err = stream.send_zc_all(numbered(&pool, 0)).await.unwrap_err();
        drop(client);
        err
    });
}

/// A shutdown while a send waits for room in a socket whose peer reads nothing (its first
/// completion not come yet): the task is dropped, which cancels the send; once the peer reads
/// what the socket holds, the shutdown ends and every buffer comes back.
#[test]
fn a_shutdown_with_a_send_stuck_on_a_full_socket_cancels_it_and_gets_the_buffers_back() {
    common::with_owned_runtime(2, LIMIT, |rt| {
        let pool = rt.pool().clone();
        let (client, server) = pair_with_buffers(4096);
        let (stuck_tx, stuck_rx) = std::sync::mpsc::channel();
        drop(rt.spawn({
            let pool = pool.clone();
            async move {
                let stream = TcpStream::from_std(server).unwrap();
                for i in 0..pool.capacity(BIG) {
                    let mut send = Box::pin(stream.send_zc_all(numbered(&pool, i)));
                    if time::timeout(Duration::from_millis(20), &mut send)
                        .await
                        .is_err()
                    {
                        // Stuck: it waits for the shutdown.
                        stuck_tx.send(()).unwrap();
                        return send.await.map(drop);
                    }
                }
                panic!("every send to a peer that does not read fit in the socket buffers");
            }
        }));
        stuck_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        // The peer reads once the shutdown has begun (the notifications of the sends that
        // resolved, and of the cancelled one's bytes, wait for it); a read before is harmless.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            read_to_end(client);
        });
        rt.shutdown(Duration::from_secs(30));
        reader.join().unwrap();
        common::assert_pool_full(&pool);
    });
}
