//! Sockets: TCP echo, large transfers, refused connects, peers that go away mid-receive,
//! cancelled receives and accepts, and no descriptor or buffer leaks.

mod common;

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use regio_runtime::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use regio_runtime::{spawn, time, JoinHandle, Runtime};

const LIMIT: Duration = Duration::from_secs(60);

/// A regio listener on a free loopback port, and its address.
fn loopback_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Binds a loopback listener and spawns a task that echoes its one connection: (the listener's
/// address, the echo task, which gives the number of bytes echoed).
fn spawn_echo_server() -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<usize>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    Ok((addr, spawn(async move { echo_one(&listener).await })))
}

/// Serves one connection of `listener`: echoes what it receives until the peer closes.
async fn echo_one(listener: &TcpListener) -> std::io::Result<usize> {
    let (stream, peer) = listener.accept().await?;
    assert_eq!(peer, stream.peer_addr()?);
    let mut total = 0;
    loop {
        let buf = regio_runtime::pool().acquire().await;
        let (n, mut msg) = stream.recv(buf).await;
        let n = n?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        msg.descriptor_mut().truncate(n);
        stream.send_all(msg).await.0?;
    }
}

/// Runs `test` on a fresh runtime of 2 workers, then checks that every buffer went back.
fn runtime_for(test: impl FnOnce(&Runtime) + Send + 'static) {
    common::with_runtime(2, LIMIT, test);
}

#[test]
fn a_tcp_echo_round_trips_on_workers() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let out = rt.block_on(rt.spawn(async move {
            let (addr, server) = spawn_echo_server()?;
            let client = TcpStream::connect(addr).await?;
            client.set_nodelay(true)?;
            assert_eq!(client.peer_addr()?, addr);
            assert_eq!(client.local_addr()?.ip(), addr.ip());
            let mut echoed = Vec::new();
            for i in 0..50u8 {
                let text = [b'a' + i % 26; 100];
                let (sent, msg) = client.send_all(common::message(&pool, &text)).await;
                sent?;
                let (got, msg) = client.recv_exact(msg).await;
                got?;
                assert_eq!(msg.as_slice()[..100], text, "round {i}");
                echoed.extend_from_slice(&msg.as_slice()[..100]);
            }
            client.shutdown(std::net::Shutdown::Write).await?;
            let (n, _msg) = client.recv(pool.try_acquire().unwrap()).await;
            assert_eq!(n?, 0, "the server closes after the client's end");
            let served = server.await.unwrap()?;
            Ok::<_, std::io::Error>((served, echoed.len()))
        }));
        assert_eq!(out.unwrap().unwrap(), (5000, 5000));
    });
}

#[test]
fn a_mebibyte_goes_through_send_all_and_recv_exact() {
    regio_testkit::within(LIMIT, "the test", || {
        let builder = common::builder(2).pool_class(1 << 20, 2);
        let Some(rt) = common::build(builder) else {
            return;
        };
        let pool = rt.pool().clone();
        let big = pool.classes() - 1;
        assert_eq!(pool.capacity(big), 2);
        let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        let expected = pattern.clone();
        let got = rt.block_on(rt.spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            // Both taken here: a thread's cache may hold every buffer of a class.
            let mut msg = pool.try_acquire_class(big).expect("a 1 MiB buffer");
            let out = pool.try_acquire_class(big).expect("a 1 MiB buffer");
            let sender = spawn(async move {
                let (stream, _) = listener.accept().await?;
                let mut msg = out;
                msg.as_mut_slice()[..1 << 20].copy_from_slice(&pattern);
                msg.descriptor_mut().truncate(1 << 20);
                let before = msg.descriptor().clone();
                let (sent, msg) = stream.send_all(msg).await;
                sent?;
                assert_eq!(
                    *msg.descriptor(),
                    before,
                    "the descriptor comes back as it went"
                );
                Ok::<_, std::io::Error>(())
            });
            let client = TcpStream::connect(addr).await?;
            msg.descriptor_mut().truncate(1 << 20);
            let (got, msg) = client.recv_exact(msg).await;
            got?;
            sender.await.unwrap()?;
            Ok::<_, std::io::Error>(msg.as_slice()[..1 << 20].to_vec())
        }));
        assert!(got.unwrap().unwrap() == expected, "the bytes differ");
        common::eventually_pool_full(rt.pool(), "every buffer is back");
        rt.shutdown(Duration::from_secs(5));
    });
}

#[test]
fn a_connect_to_a_closed_port_is_refused() {
    runtime_for(|rt| {
        let addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        // In block_on and on a worker.
        let err = rt.block_on(TcpStream::connect(addr)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        let err = rt
            .block_on(rt.spawn(TcpStream::connect(addr)))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn a_client_that_goes_away_mid_receive_ends_it_and_gives_the_buffer_back() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let (listener, addr) = loopback_listener();
        let (sent, told) = std::sync::mpsc::channel();
        let server = rt.spawn(async move {
            // Accepted after the client has gone: the peer's address still comes with it.
            let client_addr: SocketAddr = told.recv().unwrap();
            let (stream, peer) = listener.accept().await?;
            assert_eq!(peer, client_addr);
            // Wants 4096 bytes, gets 100 and the end.
            let (exact, msg) = stream.recv_exact(pool.try_acquire().unwrap()).await;
            assert_eq!(msg.descriptor().len(), 4096, "the descriptor as it went");
            assert_eq!(&msg.as_slice()[..100], &[7u8; 100][..]);
            drop(msg);
            let (again, msg) = stream.recv(pool.try_acquire().unwrap()).await;
            drop(msg);
            Ok::<_, std::io::Error>((exact, again))
        });
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(&[7; 100]).unwrap();
        let client_addr = client.local_addr().unwrap();
        drop(client);
        sent.send(client_addr).unwrap();
        let (exact, again) = regio_testkit::block_on(server).unwrap().unwrap();
        assert_eq!(exact.unwrap_err().kind(), ErrorKind::UnexpectedEof);
        assert_eq!(again.unwrap(), 0);

        // A client that resets (SO_LINGER 0) during a receive: an error, and the buffer back.
        let (listener, addr) = loopback_listener();
        let pool = rt.pool().clone();
        let (accepted, told) = std::sync::mpsc::channel();
        let server = rt.spawn(async move {
            let (stream, _) = listener.accept().await?;
            accepted.send(()).unwrap();
            let (exact, msg) = stream.recv_exact(pool.try_acquire().unwrap()).await;
            drop(msg);
            Ok::<_, std::io::Error>(exact)
        });
        let client = std::net::TcpStream::connect(addr).unwrap();
        common::reset_on_close(&client);
        (&client).write_all(&[1; 10]).unwrap();
        told.recv().unwrap();
        drop(client);
        let exact = regio_testkit::block_on(server).unwrap().unwrap();
        let kind = exact.unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof),
            "{kind:?}"
        );

        // A client that resets before its connection is accepted: the accept still succeeds,
        // with the address (the peer can no longer be asked for it).
        let (listener, addr) = loopback_listener();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let client_addr = client.local_addr().unwrap();
        common::reset_on_close(&client);
        drop(client);
        let pool = rt.pool().clone();
        let (peer, recv) = regio_testkit::block_on(rt.spawn(async move {
            let (stream, peer) = listener.accept().await?;
            assert!(stream.peer_addr().is_err(), "the peer is gone");
            let (recv, msg) = stream.recv(pool.try_acquire().unwrap()).await;
            drop(msg);
            Ok::<_, std::io::Error>((peer, recv))
        }))
        .unwrap()
        .unwrap();
        assert_eq!(peer, client_addr);
        assert_eq!(recv.unwrap_err().kind(), ErrorKind::ConnectionReset);
    });
}

#[test]
fn a_dropped_receive_is_cancelled_and_its_buffer_comes_back() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let (listener, addr) = loopback_listener();
        let (cancelled, told) = std::sync::mpsc::channel();
        let server = rt.spawn(async move {
            let (stream, _) = listener.accept().await?;
            for _ in 0..20 {
                let recv = stream.recv(pool.try_acquire().unwrap());
                assert!(time::timeout(Duration::from_millis(1), recv).await.is_err());
            }
            // Dropped before its first poll: never submitted.
            drop(stream.recv(pool.try_acquire().unwrap()));
            // Each cancelled receive's buffer comes back with its final completion.
            let mut turns = 0;
            while pool.available(0) != pool.capacity(0) {
                turns += 1;
                assert!(turns < 10_000, "the cancelled receives kept their buffers");
                time::sleep(Duration::from_millis(1)).await;
            }
            cancelled.send(()).unwrap();
            // The stream still works after the cancels: the data is not lost to them.
            let (got, msg) = stream.recv_exact(common::message(&pool, &[0; 5])).await;
            got?;
            Ok::<_, std::io::Error>(msg.as_slice()[..5].to_vec())
        });
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        told.recv().unwrap();
        client.write_all(b"hello").unwrap();
        assert_eq!(regio_testkit::block_on(server).unwrap().unwrap(), b"hello");
    });
}

#[test]
fn a_dropped_accept_is_cancelled_and_a_late_connection_is_closed() {
    runtime_for(|rt| {
        let listener = std::sync::Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();

        // An accept dropped right after it was posted, with a connection waiting: the kernel
        // accepts it before the cancel comes, and the runtime closes what nobody will take.
        let mut orphaned = std::net::TcpStream::connect(addr).unwrap();
        let l = listener.clone();
        rt.block_on(rt.spawn(async move {
            let mut accept = Box::pin(l.accept());
            std::future::poll_fn(|cx| {
                assert!(
                    accept.as_mut().poll(cx).is_pending(),
                    "accepted before a turn"
                );
                std::task::Poll::Ready(())
            })
            .await;
        }))
        .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            orphaned.read(&mut byte).unwrap(),
            0,
            "the connection was closed"
        );

        // Accepts dropped with no connection waiting are cancelled, and the listener works on.
        let l = listener.clone();
        let timed_out = rt.block_on(rt.spawn(async move {
            let mut timed_out = 0;
            for _ in 0..20 {
                if time::timeout(Duration::from_millis(1), l.accept())
                    .await
                    .is_err()
                {
                    timed_out += 1;
                }
            }
            // A barrier: this nop goes into the ring after the cancels, which the kernel
            // carries out in order (a cancel of an accept waiting for a connection completes
            // at once), so no cancelled accept is left to take the next connection.
            regio_runtime::nop().await.unwrap();
            timed_out
        }));
        assert_eq!(timed_out.unwrap(), 20);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let l = listener.clone();
        let peer = rt.block_on(rt.spawn(async move { l.accept().await.map(|(_, p)| p) }));
        assert_eq!(peer.unwrap().unwrap(), client.local_addr().unwrap());
        // The accepted stream was dropped: the client sees the end.
        assert_eq!(client.read(&mut byte).unwrap(), 0);
    });
}

#[test]
fn sockets_leave_no_descriptor_open() {
    runtime_for(|rt| {
        let before = common::open_fds_after_warm_up(rt);
        let pool = rt.pool().clone();
        rt.block_on(rt.spawn(async move {
            let listener = std::sync::Arc::new(TcpListener::bind("127.0.0.1:0")?);
            let addr = listener.local_addr()?;
            for round in 0..10u8 {
                let l = listener.clone();
                let server = spawn(async move { echo_one(&l).await });
                let client = TcpStream::connect(addr).await?;
                let (sent, msg) = client.send_all(common::message(&pool, &[round; 64])).await;
                sent?;
                let (got, _msg) = client.recv_exact(msg).await;
                got?;
                drop(client);
                assert_eq!(server.await.unwrap()?, 64);
            }
            // Cancelled accepts and receives too.
            for _ in 0..5 {
                let _ = time::timeout(Duration::from_millis(1), listener.accept()).await;
            }
            Ok::<_, std::io::Error>(())
        }))
        .unwrap()
        .unwrap();
        common::eventually("the descriptors are closed", || {
            common::open_fds() <= before
        });
    });
}

#[test]
fn split_halves_run_on_two_tasks_and_the_write_half_ends_the_stream() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let out = rt.block_on(rt.spawn(async move {
            let (addr, server) = spawn_echo_server()?;
            let (read, write) = TcpStream::connect(addr).await?.into_split();
            assert_eq!(read.as_std().peer_addr()?, addr);
            let writer = spawn({
                let pool = pool.clone();
                async move {
                    for i in 0..100u32 {
                        let (sent, _msg) = write
                            .send_all(common::message(&pool, &[(i % 251) as u8; 1000]))
                            .await;
                        sent?;
                    }
                    // Dropping the half ends the stream: the echo server sees the end.
                    drop(write);
                    Ok::<_, std::io::Error>(())
                }
            });
            let reader = spawn(async move {
                let mut got = Vec::new();
                loop {
                    let (n, msg) = read.recv(pool.try_acquire().unwrap()).await;
                    match n? {
                        0 => return Ok::<_, std::io::Error>(got),
                        n => got.extend_from_slice(&msg.as_slice()[..n]),
                    }
                }
            });
            writer.await.unwrap()?;
            let got = reader.await.unwrap()?;
            assert_eq!(server.await.unwrap()?, 100_000);
            Ok::<_, std::io::Error>(got)
        }));
        let got = out.unwrap().unwrap();
        let want: Vec<u8> = (0..100u32).flat_map(|i| [(i % 251) as u8; 1000]).collect();
        assert!(got == want, "the echoed bytes differ");
    });
}

#[test]
fn a_zero_copy_send_resolves_after_its_notification_with_the_count() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let (n, client_got) = rt
            .block_on(rt.spawn(async move {
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let addr = listener.local_addr()?;
                let client = std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    let mut got = vec![0; 3000];
                    s.read_exact(&mut got).unwrap();
                    got
                });
                let (stream, _) = listener.accept().await?;
                let (n, msg) = stream.send_zc(common::message(&pool, &[9; 3000])).await;
                assert_eq!(msg.descriptor().len(), 3000);
                Ok::<_, std::io::Error>((n?, client.join().unwrap()))
            }))
            .unwrap()
            .unwrap();
        assert_eq!(n, 3000);
        assert!(client_got.iter().all(|&b| b == 9));
    });
}

#[test]
fn a_peer_that_resets_during_zero_copy_sends_gives_an_error_and_no_leak() {
    runtime_for(|rt| {
        let fds = common::open_fds();
        let pool = rt.pool().clone();
        let (listener, addr) = loopback_listener();
        let client = std::net::TcpStream::connect(addr).unwrap();
        common::reset_on_close(&client);
        let (sending, told) = std::sync::mpsc::channel();
        let server = rt.spawn(async move {
            let (stream, _) = listener.accept().await?;
            let mut sent = 0usize;
            for i in 0..100_000 {
                let (n, msg) = stream.send_zc(pool.try_acquire_class(1).unwrap()).await;
                drop(msg);
                match n {
                    Ok(n) => sent += n,
                    Err(e) => return Ok::<_, std::io::Error>((i, sent, e)),
                }
                if i == 0 {
                    sending.send(()).unwrap();
                }
            }
            panic!("100000 zero-copy sends to a reset peer all succeeded");
        });
        told.recv().unwrap();
        drop(client);
        let (sends, sent, err) = regio_testkit::block_on(server).unwrap().unwrap();
        assert!(sends >= 1 && sent >= 65536, "{sends} sends, {sent} bytes");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{err}"
        );
        common::eventually("the descriptors are closed", || common::open_fds() <= fds);
    });
}

#[test]
fn a_dropped_zero_copy_send_parks_its_buffer_until_the_notification() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let (listener, addr) = loopback_listener();
        // A peer that reads nothing until told: the sends fill the socket buffers and wait.
        let client = std::net::TcpStream::connect(addr).unwrap();
        common::set_socket_int(client.as_raw_fd(), libc::SO_RCVBUF, 4096);
        let server = rt.spawn({
            let pool = pool.clone();
            async move {
                let (stream, _) = listener.accept().await?;
                common::set_socket_int(stream.as_raw_fd(), libc::SO_SNDBUF, 4096);
                let mut dropped = 0;
                for _ in 0..4 {
                    let send = stream.send_zc(pool.try_acquire_class(1).unwrap());
                    if time::timeout(Duration::from_millis(5), send).await.is_err() {
                        dropped += 1;
                    }
                }
                Ok::<_, std::io::Error>((dropped, stream))
            }
        });
        let (dropped, stream) = regio_testkit::block_on(server).unwrap().unwrap();
        assert!(dropped > 0, "no send waited for the peer");
        // Their futures are gone, but the kernel still holds the bytes that went out.
        assert!(
            pool.available(1) < pool.capacity(1),
            "a buffer went back too early"
        );
        // The peer drains the connection: the kernel lets go of every buffer.
        drop(stream);
        let mut sink = Vec::new();
        (&client).read_to_end(&mut sink).unwrap();
        assert!(sink.len() >= 65536);
    });
}

/// A fresh path for a Unix socket in the temporary directory.
fn socket_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("regio-net-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn unix_streams_share_the_stream_operations() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let path = socket_path("echo");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        let out = rt.block_on(rt.spawn({
            let path = path.clone();
            async move {
                let server = spawn(async move {
                    let (stream, peer) = listener.accept().await?;
                    assert!(peer.is_unnamed(), "{peer:?}");
                    let (got, msg) = stream
                        .recv_exact(common::message(&regio_runtime::pool(), &[0; 6]))
                        .await;
                    got?;
                    stream.send_all(msg).await.0
                });
                let client = UnixStream::connect(&path).await?;
                assert_eq!(client.peer_addr()?.as_pathname(), Some(path.as_path()));
                let (read, write) = client.into_split();
                write.send_all(common::message(&pool, b"regio!")).await.0?;
                let (got, msg) = read.recv_exact(common::message(&pool, &[0; 6])).await;
                got?;
                server.await.unwrap()?;
                Ok::<_, std::io::Error>(msg.as_slice()[..6].to_vec())
            }
        }));
        assert_eq!(out.unwrap().unwrap(), b"regio!");
        std::fs::remove_file(&path).unwrap();

        // A pair, a path nothing is bound at, a path too long for a sockaddr_un.
        let pool = rt.pool().clone();
        rt.block_on(rt.spawn(async move {
            let (a, b) = UnixStream::pair()?;
            a.send_all(common::message(&pool, b"pair")).await.0?;
            let (n, msg) = b.recv(pool.try_acquire().unwrap()).await;
            assert_eq!(&msg.as_slice()[..n?], b"pair");
            drop(msg);
            let missing = UnixStream::connect(socket_path("missing"))
                .await
                .unwrap_err();
            assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
            let long = std::env::temp_dir().join("x".repeat(200));
            let long = UnixStream::connect(long).await.unwrap_err();
            assert_eq!(long.kind(), ErrorKind::InvalidInput, "{long}");
            Ok::<_, std::io::Error>(())
        }))
        .unwrap()
        .unwrap();
    });
}

#[test]
fn udp_sockets_send_and_receive_datagrams() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        rt.block_on(rt.spawn(async move {
            let a = UdpSocket::bind("127.0.0.1:0")?;
            let b = UdpSocket::bind("127.0.0.1:0")?;
            let (a_addr, b_addr) = (a.local_addr()?, b.local_addr()?);

            // With addresses.
            let (sent, msg) = a.send_to(common::message(&pool, b"to b"), b_addr).await;
            assert_eq!(sent?, 4);
            drop(msg);
            let (got, msg) = b.recv_from(pool.try_acquire().unwrap()).await;
            let (n, from) = got?;
            assert_eq!((&msg.as_slice()[..n], from), (&b"to b"[..], a_addr));
            drop(msg);

            // Connected; a datagram longer than the buffer is cut.
            a.connect(b_addr)?;
            b.connect(a_addr)?;
            assert_eq!(a.peer_addr()?, b_addr);
            a.send(common::message(&pool, b"0123456789")).await.0?;
            let mut small = pool.try_acquire().unwrap();
            small.descriptor_mut().truncate(4);
            let (n, msg) = b.recv(small).await;
            assert_eq!(&msg.as_slice()[..n?], b"0123");
            drop(msg);

            // Bad descriptors are refused, with the buffer back.
            let mut empty = pool.try_acquire().unwrap();
            empty.descriptor_mut().truncate(0);
            let (refused, empty) = a.send_to(empty, b_addr).await;
            assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
            let (refused, empty) = b.recv_from(empty).await;
            assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
            drop(empty);

            // A dropped receive is cancelled; its buffer comes back (checked after the test).
            let pending = b.recv_from(pool.try_acquire().unwrap());
            assert!(time::timeout(Duration::from_millis(2), pending)
                .await
                .is_err());
            Ok::<_, std::io::Error>(())
        }))
        .unwrap()
        .unwrap();
    });
}

#[test]
fn a_stream_made_on_one_worker_works_from_tasks_on_the_others() {
    runtime_for(|rt| {
        let pool = rt.pool().clone();
        let (listener, addr) = loopback_listener();
        // The echo server runs on a plain thread: a server task would load one worker, and the
        // spawns below, which go to the less loaded worker, would all land on the other.
        let server = std::thread::spawn(move || -> std::io::Result<usize> {
            use std::io::{Read, Write};
            let (mut stream, _) = listener.as_std().accept()?;
            let (mut total, mut buf) = (0, [0u8; 4096]);
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                stream.write_all(&buf[..n])?;
                total += n;
            }
        });
        // Made by one worker (a task), then used by tasks placed on every worker.
        let client = std::sync::Arc::new(
            rt.block_on(rt.spawn(TcpStream::connect(addr)))
                .unwrap()
                .unwrap(),
        );
        let mut workers = std::collections::HashSet::new();
        let mut rounds = 0;
        for round in 0..200u32 {
            rounds += 1;
            let (client, pool) = (client.clone(), pool.clone());
            let (worker, echoed) = rt
                .block_on(rt.spawn(async move {
                    let text = round.to_le_bytes();
                    let (sent, msg) = client.send_all(common::message(&pool, &text)).await;
                    sent?;
                    let (got, msg) = client.recv_exact(msg).await;
                    got?;
                    let worker = std::thread::current().name().unwrap_or("").to_owned();
                    Ok::<_, std::io::Error>((worker, msg.as_slice()[..4] == text))
                }))
                .unwrap()
                .unwrap();
            assert!(echoed, "round {round}");
            workers.insert(worker);
            if workers.len() == 2 && round >= 10 {
                break;
            }
        }
        assert_eq!(workers.len(), 2, "the tasks ran on {workers:?}");
        drop(client);
        assert_eq!(server.join().unwrap().unwrap(), 4 * rounds);
    });
}

#[test]
fn a_stream_of_one_runtime_is_refused_by_another() {
    runtime_for(|rt| {
        let Some(other) = common::runtime(1) else {
            return;
        };
        let (listener, addr) = loopback_listener();
        let _server = std::thread::spawn(move || listener.as_std().accept());
        let client = rt
            .block_on(rt.spawn(TcpStream::connect(addr)))
            .unwrap()
            .unwrap();
        let pool = other.pool().clone();
        let (sent, msg) = other
            .block_on(other.spawn(async move { client.send(common::message(&pool, b"x")).await }))
            .unwrap();
        assert_eq!(sent.unwrap_err().raw_os_error(), Some(libc::EXDEV));
        drop(msg);
        other.shutdown(Duration::from_secs(5));
    });
}

#[test]
fn echo_works_in_every_ring_mode() {
    for mode in [
        regio_runtime::RingMode::Interrupt,
        regio_runtime::RingMode::SqPoll {
            idle: Duration::from_millis(10),
            cpu: None,
        },
        regio_runtime::RingMode::SingleIssuer,
    ] {
        regio_testkit::within(LIMIT, "the test", move || {
            let Some(rt) = common::build(common::builder(2).ring_mode(mode)) else {
                return;
            };
            let pool = rt.pool().clone();
            let served = rt.block_on(async move {
                let (addr, server) = spawn_echo_server()?;
                let client = TcpStream::connect(addr).await?;
                for i in 0..20u8 {
                    let (sent, msg) = client.send_all(common::message(&pool, &[i; 300])).await;
                    sent?;
                    let (got, msg) = client.recv_exact(msg).await;
                    got?;
                    assert_eq!(msg.as_slice()[..300], [i; 300], "{mode:?}");
                }
                drop(client);
                server.await.unwrap()
            });
            assert_eq!(served.unwrap(), 6000, "{mode:?}");
            common::eventually_pool_full(rt.pool(), "every buffer is back");
            rt.shutdown(Duration::from_secs(5));
        });
    }
}

#[test]
fn accepts_in_block_on_work_and_leave_no_descriptor_when_dropped() {
    runtime_for(|rt| {
        let before = common::open_fds_after_warm_up(rt);
        let (listener, addr) = loopback_listener();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, peer) = rt.block_on(listener.accept()).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let pool = rt.pool().clone();
        let sent = rt.block_on(rt.spawn(async move {
            stream
                .send_all(common::message(&pool, b"from a task"))
                .await
                .0
        }));
        sent.unwrap().unwrap();
        let mut got = [0u8; 11];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"from a task");
        drop(client);

        // Accepts dropped at every point of their life, with connections arriving meanwhile:
        // each connection is either accepted (and dropped) or closed, never left open.
        let mut clients = Vec::new();
        for i in 0..50 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            let wait = Duration::from_micros(i * 20);
            let _ = rt.block_on(time::timeout(wait, listener.accept()));
        }
        drop(listener);
        for mut c in clients {
            // Accepted and dropped, closed by the runtime, or never taken: the end either way.
            let mut byte = [0u8; 1];
            let n = c.read(&mut byte);
            assert!(matches!(n, Ok(0)) || n.is_err(), "{n:?}");
        }
        common::eventually("the descriptors are closed", || {
            common::open_fds() <= before
        });
    });
}

#[test]
fn cancellation_stress_leaves_every_buffer_and_descriptor() {
    runtime_for(|rt| {
        let before = common::open_fds_after_warm_up(rt);
        let pool = rt.pool().clone();
        let dropped = rt.block_on(rt.spawn(async move {
            // A peer that echoes slowly: receives race their timeouts, sends pile up.
            let (addr, server) = spawn_echo_server()?;
            let client = TcpStream::connect(addr).await?;
            let mut dropped = 0u32;
            for i in 0..2000u32 {
                // A pseudo-random wait, from nothing to a few hundred microseconds.
                let wait = Duration::from_micros(u64::from(i.wrapping_mul(2_654_435_761) % 400));
                // Waits for a buffer: parked ones come back with their notifications.
                let mut buf = pool.acquire().await;
                buf.as_mut_slice()[..4].copy_from_slice(&i.to_le_bytes());
                buf.descriptor_mut().truncate(4);
                let step = async {
                    match i % 3 {
                        0 => client.send_zc(buf).await.0.map(drop),
                        1 => client.send_all(buf).await.0,
                        _ => client.recv(buf).await.0.map(drop),
                    }
                };
                match time::timeout(wait, step).await {
                    Ok(done) => done?,
                    Err(_) => dropped += 1,
                }
            }
            drop(client);
            // The client closes with echoed bytes unread, which resets the connection: the
            // server ends with the end of the stream or with that reset.
            if let Err(e) = server.await.unwrap() {
                assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
            }
            Ok::<_, std::io::Error>(dropped)
        }));
        let dropped = dropped.unwrap().unwrap();
        assert!(dropped > 0, "no operation was dropped in flight");
        common::eventually("the descriptors are closed", || {
            common::open_fds() <= before
        });
    });
}

#[test]
fn sockets_are_send_and_sync_and_their_futures_can_be_spawned() {
    fn shared<T: Send + Sync>() {}
    fn spawnable<F: Future + Send + 'static>(_: &F) {}
    shared::<TcpListener>();
    shared::<TcpStream>();
    shared::<UnixListener>();
    shared::<UnixStream>();
    shared::<UdpSocket>();
    shared::<regio_runtime::net::OwnedReadHalf>();
    shared::<regio_runtime::net::OwnedWriteHalf>();
    shared::<regio_runtime::net::OwnedReadHalf<std::os::unix::net::UnixStream>>();
    let Some(rt) = common::runtime(1) else { return };
    let (a, _b) = UnixStream::pair().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let msg = || rt.pool().try_acquire().unwrap();
    spawnable(&a.recv(msg()));
    spawnable(&a.recv_exact(msg()));
    spawnable(&a.send(msg()));
    spawnable(&a.send_all(msg()));
    spawnable(&a.send_zc(msg()));
    spawnable(&listener.accept());
    spawnable(&TcpStream::connect(listener.local_addr().unwrap()));
    spawnable(&UnixStream::connect("/nonexistent"));
    spawnable(&udp.recv_from(msg()));
    spawnable(&udp.send_to(msg(), listener.local_addr().unwrap()));
}
