//! The compatibility layer: tokio's and futures' I/O traits over regio's TCP and Unix
//! streams: reads in pieces smaller than a receive, buffered reads, the end of the stream (also
//! after an unflushed write), writes then a flush, shutdown, a send error reported on a later
//! call, and a `Compat` dropped with a receive or a send in flight (its buffers come back to the
//! pool).

mod common;

use std::future::{poll_fn, Future};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::pin::Pin;
use std::time::Duration;

use regio_runtime::compat::Compat;
use regio_runtime::net::{Stream, StreamSocket, TcpStream, UnixStream};
use regio_runtime::{time, Runtime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(60);

/// A connected pair of TCP streams on loopback: (ours, the peer's standard one).
fn tcp_pair() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    (TcpStream::from_std(ours).unwrap(), peer)
}

/// A connected pair of Unix streams: (ours, the peer's standard one).
fn unix_pair() -> (UnixStream, std::os::unix::net::UnixStream) {
    let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    (UnixStream::from_std(ours).unwrap(), peer)
}

/// A thread on which `peer` reads until our end, then sends it all back and ends its own side.
fn echo_at_end(mut peer: impl Read + Write + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        peer.write_all(&got).unwrap();
    })
}

/// `len` bytes of a pattern that does not repeat every 4 KiB.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Runs `test` on a fresh runtime of one worker, then checks that every buffer went back.
fn with_runtime(test: impl FnOnce(&Runtime) + Send + 'static) {
    common::with_runtime(1, LIMIT, test);
}

/// Wraps our end of a pair in a `Compat` on a worker and runs `body` with it there.
fn on_compat<S, T, F>(
    rt: &Runtime,
    ours: Stream<S>,
    body: impl FnOnce(Compat<S>) -> F + Send + 'static,
) -> T
where
    S: StreamSocket,
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    rt.block_on(rt.spawn(async move {
        let io = Compat::new(ours).await;
        body(io).await
    }))
    .expect("the test task")
}

#[test]
fn small_reads_take_a_receive_out_in_pieces() {
    with_runtime(|rt| {
        let (ours, mut peer) = tcp_pair();
        let sent = pattern(10_000);
        // All of it is queued on our socket before the first receive: that receive fills the
        // 4 KiB message, and reads of 7 bytes take it out piece by piece.
        peer.write_all(&sent).unwrap();
        let got = on_compat(rt, ours, |mut io| async move {
            let mut got = Vec::new();
            let mut piece = [0u8; 7];
            let n = io.read(&mut piece).await.unwrap();
            assert_eq!(n, 7);
            assert_eq!(io.buffered(), 4096 - 7, "the rest of the receive is kept");
            got.extend_from_slice(&piece);
            while got.len() < sent.len() {
                let n = io.read(&mut piece).await.unwrap();
                assert!(n > 0, "the stream ended early");
                got.extend_from_slice(&piece[..n]);
            }
            got
        });
        assert_eq!(got, pattern(10_000));
    });
}

#[test]
fn buffered_reads_see_the_received_bytes_in_place() {
    with_runtime(|rt| {
        let (ours, mut peer) = tcp_pair();
        peer.write_all(b"first line\nsecond").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let lines = on_compat(rt, ours, |mut io| async move {
            let mut lines = Vec::new();
            let mut line = String::new();
            while io.read_line(&mut line).await.unwrap() > 0 {
                lines.push(std::mem::take(&mut line));
            }
            lines
        });
        assert_eq!(lines, ["first line\n", "second"]);
    });
}

#[test]
fn the_end_of_the_stream_reads_as_zero_again_and_again() {
    with_runtime(|rt| {
        let (ours, mut peer) = tcp_pair();
        peer.write_all(b"abc").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let (all, again) = on_compat(rt, ours, |mut io| async move {
            let mut all = Vec::new();
            io.read_to_end(&mut all).await.unwrap();
            let mut buf = [0u8; 8];
            let again = io.read(&mut buf).await.unwrap();
            (all, again)
        });
        assert_eq!(all, b"abc");
        assert_eq!(again, 0);
    });
}

#[test]
fn writes_then_a_flush_deliver_every_byte_in_order() {
    with_runtime(|rt| {
        let (ours, mut peer) = tcp_pair();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 20_000 + 9];
            peer.read_exact(&mut got).unwrap();
            got
        });
        on_compat(rt, ours, |mut io| async move {
            // More than one message's worth: several sends, one after the other.
            io.write_all(&pattern(20_000)).await.unwrap();
            // A vectored write gathers its slices into one message.
            let parts = [
                IoSlice::new(b"one"),
                IoSlice::new(b"two"),
                IoSlice::new(b"six"),
            ];
            assert_eq!(io.write_vectored(&parts).await.unwrap(), 9);
            io.flush().await.unwrap();
        });
        let got = reader.join().unwrap();
        assert_eq!(got[..20_000], pattern(20_000));
        assert_eq!(&got[20_000..], b"onetwosix");
    });
}

#[test]
fn shutdown_sends_what_is_pending_then_the_end_of_the_stream() {
    with_runtime(|rt| {
        let (ours, mut peer) = tcp_pair();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        on_compat(rt, ours, |mut io| async move {
            io.write_all(b"the tail").await.unwrap();
            io.shutdown().await.unwrap();
        });
        // `read_to_end` returns only at the end of the stream.
        assert_eq!(reader.join().unwrap(), b"the tail");
    });
}

#[test]
fn a_read_finds_the_end_after_an_unflushed_write() {
    with_runtime(|rt| {
        let (ours, mut peer) = tcp_pair();
        // The peer takes the request, answers, and closes.
        let server = std::thread::spawn(move || {
            let mut request = [0u8; 7];
            peer.read_exact(&mut request).unwrap();
            peer.write_all(b"answer").unwrap();
        });
        let answer = on_compat(rt, ours, |mut io| async move {
            // No flush: the end of the stream is put off once, not for good.
            io.write_all(b"request").await.unwrap();
            let mut answer = Vec::new();
            io.read_to_end(&mut answer).await.unwrap();
            answer
        });
        server.join().unwrap();
        assert_eq!(answer, b"answer");
    });
}

#[test]
fn the_futures_traits_round_trip() {
    with_runtime(|rt| {
        let (ours, peer) = tcp_pair();
        let echo = echo_at_end(peer);
        let back = on_compat(rt, ours, |mut io| async move {
            use futures_io::{AsyncRead, AsyncWrite};
            let sent = pattern(6000);
            let mut at = 0;
            while at < sent.len() {
                at += poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &sent[at..]))
                    .await
                    .unwrap();
            }
            poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
                .await
                .unwrap();
            poll_fn(|cx| Pin::new(&mut io).poll_close(cx))
                .await
                .unwrap();
            let mut back = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                let n = poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf))
                    .await
                    .unwrap();
                if n == 0 {
                    break back;
                }
                back.extend_from_slice(&buf[..n]);
            }
        });
        echo.join().unwrap();
        assert_eq!(back, pattern(6000));
    });
}

#[test]
fn a_failed_send_is_reported_by_a_later_write_or_flush() {
    with_runtime(|rt| {
        let (ours, peer) = tcp_pair();
        common::reset_on_close(&peer);
        drop(peer);
        let err = on_compat(rt, ours, |mut io| async move {
            // The first sends may still be taken by our socket; once the reset is in, a send
            // fails, and the error comes out of the next call.
            for _ in 0..1000 {
                if let Err(e) = io.write_all(b"into the void").await {
                    return e;
                }
                if let Err(e) = io.flush().await {
                    return e;
                }
            }
            panic!("a thousand sends to a reset connection all succeeded");
        });
        assert!(
            matches!(
                err.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{err:?}"
        );
    });
}

#[test]
fn a_compat_dropped_mid_receive_gives_its_buffers_back() {
    with_runtime(|rt| {
        let pool = rt.pool().clone();
        let (ours, peer) = tcp_pair();
        on_compat(rt, ours, |mut io| async move {
            let mut buf = [0u8; 16];
            // The peer sends nothing: the read is dropped with its receive in flight, which
            // stays with the Compat.
            let read = time::timeout(Duration::from_millis(20), io.read(&mut buf)).await;
            assert!(read.is_err(), "nothing was sent, yet the read finished");
            assert_eq!(
                pool.available(0),
                pool.capacity(0) - 2,
                "the Compat holds its two messages"
            );
            drop(io);
        });
        drop(peer);
        // `with_runtime` waits for every buffer to come back.
    });
}

#[test]
fn a_compat_dropped_mid_send_gives_its_buffers_back() {
    with_runtime(|rt| {
        let (ours, peer) = tcp_pair();
        on_compat(rt, ours, |mut io| async move {
            // The peer never reads: 64 MiB cannot all fit in the two sockets' buffers, so the
            // writes stall with a send in flight, and the timeout drops them.
            let chunk = pattern(4096);
            let fill = async {
                for _ in 0..(64 << 20) / chunk.len() {
                    io.write_all(&chunk).await.unwrap();
                }
            };
            let filled = time::timeout(Duration::from_millis(200), fill).await;
            assert!(filled.is_err(), "64 MiB went into a peer that never reads");
            drop(io);
        });
        drop(peer);
    });
}

#[test]
fn a_unix_stream_round_trips_through_the_tokio_traits() {
    with_runtime(|rt| {
        let (ours, peer) = unix_pair();
        let echo = echo_at_end(peer);
        let back = on_compat(rt, ours, |mut io| async move {
            io.write_all(&pattern(9000)).await.unwrap();
            io.shutdown().await.unwrap();
            let mut back = Vec::new();
            io.read_to_end(&mut back).await.unwrap();
            back
        });
        echo.join().unwrap();
        assert_eq!(back, pattern(9000));
    });
}

#[test]
fn a_unix_compat_dropped_mid_receive_gives_its_buffers_back() {
    with_runtime(|rt| {
        let (ours, peer) = unix_pair();
        on_compat(rt, ours, |mut io| async move {
            let mut buf = [0u8; 16];
            let read = time::timeout(Duration::from_millis(20), io.read(&mut buf)).await;
            assert!(read.is_err(), "nothing was sent, yet the read finished");
            drop(io);
        });
        drop(peer);
    });
}
