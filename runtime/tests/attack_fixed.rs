//! Attacks on fixed-file slots and the multishot accept from safe code: handles that outlive
//! their runtime, slots freed and taken again at once, halves dropped apart, hostile sockets.
//!
//! The tests count descriptors and slots, so they run one at a time (`common::serial`).

mod common;

use std::time::Duration;

use regio_runtime::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(60);

/// An `Incoming` taken out of its task keeps its multishot accept armed on a worker's ring,
/// with connections accepted that no one took yet. Shutting the runtime down must cancel that
/// accept (no task can take its connections any more) rather than wait for it forever, and
/// close the connections it accepted rather than drop their descriptors on the floor.
#[test]
fn an_incoming_that_outlives_its_runtime_does_not_stall_its_shutdown() {
    incoming_outliving_its_runtime(Duration::MAX);
}

/// As above, with a shutdown deadline that passes: the worker must not leave the connections
/// its multishot accept took, and no task took, open in the process.
#[test]
fn an_incoming_that_outlives_its_runtime_leaks_no_connection() {
    incoming_outliving_its_runtime(Duration::from_secs(2));
}

/// Returns an armed `Incoming` out of its task, lets its accept take a few connections, shuts
/// the runtime down with `timeout`, and checks that every connection ended and closed.
fn incoming_outliving_its_runtime(timeout: Duration) {
    let _serial = common::serial();
    const LATE: usize = 8;
    regio_testkit::within(LIMIT, "the test", move || {
        let fds = common::open_fds();
        let Some(rt) = common::runtime(1) else { return };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = armed_incoming(&rt, listener, addr);
        let before = common::open_fds();
        let late: Vec<std::net::TcpStream> = (0..LATE)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        common::eventually("the late connections are accepted", || {
            common::open_fds() == before + 2 * LATE
        });
        // Before the fix: with no deadline, the worker waited for the armed accept, which
        // never ends; with one, it left the accepted connections open.
        rt.shutdown(timeout);
        for mut client in late {
            // A bound on a read that must end at once (before the fix it never did: the
            // accepted descriptor was lost, open).
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut rest = Vec::new();
            let read = std::io::Read::read_to_end(&mut client, &mut rest);
            assert!(
                matches!(&read, Ok(0))
                    || read.as_ref().is_err_and(|e| !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )),
                "a late client's connection ends: {read:?}"
            );
        }
        drop(incoming);
        common::eventually("every descriptor is closed", || common::open_fds() == fds);
    });
}

/// `Incoming::accept` off the workers (in `block_on`) on an `Incoming` whose multishot accept
/// is armed on a worker's ring: that armed accept must not take every connection from under
/// the single-shot accept that `block_on` waits for.
#[test]
fn accept_in_block_on_on_an_incoming_armed_on_a_worker_gets_a_connection() {
    let _serial = common::serial();
    const CLIENTS: usize = 64;
    let Some(rt) = common::runtime(1) else { return };
    regio_testkit::within(LIMIT, "the test", move || {
        let fds = common::open_fds_after_warm_up(&rt);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = armed_incoming(&rt, listener, addr);
        let accepted = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let clients = s.spawn(|| {
                let mut clients = Vec::new();
                for _ in 0..CLIENTS {
                    if accepted.load(std::sync::atomic::Ordering::Acquire) {
                        break;
                    }
                    clients.push(std::net::TcpStream::connect(addr).unwrap());
                    std::thread::sleep(Duration::from_millis(20));
                }
                clients
            });
            let stream = rt.block_on(incoming.accept()).unwrap();
            // Release: pairs with the clients' acquire load (a plain stop flag).
            accepted.store(true, std::sync::atomic::Ordering::Release);
            let clients = clients.join().unwrap();
            let peer = stream.peer_addr().unwrap();
            assert!(clients.iter().any(|c| c.local_addr().unwrap() == peer));
        });
        drop(incoming);
        common::assert_clean(&rt, fds);
        assert_eq!(rt.fixed_files_in_use(), 0);
    });
}

/// `incoming()` on a socket that does not listen: each accept is an error, none hangs, and
/// nothing leaks.
#[test]
fn incoming_on_a_socket_that_does_not_listen_is_an_error_each_time() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    regio_testkit::within(LIMIT, "the test", move || {
        let fds = common::open_fds_after_warm_up(&rt);
        // A TCP socket that is connected, not listening.
        let (client, _server) = regio_testkit::loopback();
        // Safe: `From<OwnedFd>` takes any socket.
        let socket = std::os::fd::OwnedFd::from(client.try_clone().unwrap());
        let listener = TcpListener::from_std(std::net::TcpListener::from(socket));
        let errors = rt
            .block_on(rt.spawn(async move {
                let mut incoming = listener.incoming();
                let mut errors = Vec::new();
                for _ in 0..4 {
                    errors.push(incoming.accept().await.unwrap_err().raw_os_error());
                }
                errors
            }))
            .unwrap();
        assert!(
            errors.iter().all(|e| *e == Some(libc::EINVAL)),
            "{errors:?}"
        );
        drop((client, _server));
        common::assert_clean(&rt, fds);
        assert_eq!(rt.fixed_files_in_use(), 0);
    });
}

/// A storm of `Incoming`s armed, used once and dropped, on both workers in turn, while clients
/// keep connecting: every connection ends (handed out, or closed by a cancelled accept), and
/// no descriptor, slot or buffer is left behind.
#[test]
fn incomings_armed_and_dropped_while_clients_connect_leak_nothing() {
    let _serial = common::serial();
    const ROUNDS: usize = 200;
    let Some(rt) = common::runtime(2) else { return };
    regio_testkit::within(LIMIT, "the test", move || {
        let fds = common::open_fds_after_warm_up(&rt);
        let listener = std::sync::Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let clients = s.spawn(|| {
                let mut served = 0usize;
                // Acquire: pairs with the release store below (a plain stop flag).
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    // Refused once the listener is closed, at the end.
                    let Ok(mut client) = std::net::TcpStream::connect(addr) else {
                        break;
                    };
                    client
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut byte = [0u8; 1];
                    // Each connection ends: a byte from its handler, or its close (by a cancelled
                    // accept, or with the listener).
                    match std::io::Read::read(&mut client, &mut byte) {
                        Ok(1) => served += 1,
                        Ok(_) => {}
                        Err(e) => assert!(
                            !matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ),
                            "a connection was left hanging: {e}"
                        ),
                    }
                }
                served
            });
            for _ in 0..ROUNDS {
                let listener = std::sync::Arc::clone(&listener);
                rt.block_on(rt.spawn(async move {
                    let mut incoming = listener.incoming();
                    let stream = incoming.accept().await.unwrap();
                    stream.send_all(vec![1u8]).await.0.unwrap();
                }))
                .unwrap();
            }
            // Release: pairs with the clients' acquire load.
            done.store(true, std::sync::atomic::Ordering::Release);
            // The client's last connection, if it waits in the backlog, ends with the listener.
            drop(listener);
            let served = clients.join().unwrap();
            assert!(served >= ROUNDS, "{served} connections served");
        });
        common::eventually("every slot is free", || rt.fixed_files_in_use() == 0);
        common::assert_clean(&rt, fds);
    });
}

/// A stream that got a slot on a runtime and outlives it: dropping it afterwards empties the
/// slot on rings no worker drives any more, and closes everything; another runtime refuses it
/// with an error rather than naming the first runtime's slot on its own rings.
#[test]
fn a_stream_that_outlives_its_runtime_is_refused_elsewhere_and_closes_cleanly() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the test", || {
        let fds = common::open_fds();
        let Some(first) = common::runtime(2) else {
            return;
        };
        let (a, b) = regio_runtime::net::UnixStream::pair().unwrap();
        let a = first
            .block_on(first.spawn(async move {
                a.send_all(b"x".to_vec()).await.0.unwrap();
                a
            }))
            .unwrap();
        assert!(a.fixed_slot().is_some());
        drop(first);
        let Some(second) = common::runtime(1) else {
            return;
        };
        let (sent, _) = second.block_on(a.send_all(b"y".to_vec()));
        assert_eq!(sent.unwrap_err().raw_os_error(), Some(libc::EXDEV));
        // The slot that `a` holds on the first runtime's rings is taken on the second's by
        // `b`, which must reach `b`'s own socket.
        let (got, buf) = second
            .block_on(second.spawn(async move {
                let got = b.recv_exact(vec![0u8; 1]).await;
                drop(b);
                got
            }))
            .unwrap();
        got.unwrap();
        assert_eq!(buf, b"x");
        drop(a);
        drop(second);
        common::eventually("every descriptor is closed", || common::open_fds() == fds);
    });
}

/// [`op::submit`](regio_runtime::op::submit) runs any adapter operation on a worker's own
/// queue, which names no file. A `share_file` names a fixed-file slot of the worker's ring by
/// its number: now that the runtime's sockets and files sit in those slots, it must not copy
/// one of them into a ring of the caller's, which would hand safe code a socket it does not
/// own (and read its data).
#[test]
fn submit_cannot_copy_a_runtime_slot_out_with_share_file() {
    use regio_adapters::{Adapter, Config, FileSlot, Op};
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let Ok(theirs) = Adapter::<regio_pool::Message>::new(Config::default().rings(1).max_files(4))
    else {
        return regio_testkit::skip("cannot build a second adapter");
    };
    let cq = theirs.ring(0).unwrap();
    if !theirs.supports(&Op::share_file(FileSlot(0), &cq, FileSlot(0), 0)) {
        return regio_testkit::skip("the kernel lacks msg_ring (Linux 5.18)");
    }
    regio_testkit::within(LIMIT, "the test", move || {
        let (a, _b) = regio_runtime::net::UnixStream::pair().unwrap();
        let result = rt
            .block_on(rt.spawn(async move {
                a.send_all(b"x".to_vec()).await.0.unwrap();
                let slot = FileSlot(a.fixed_slot().expect("a slot"));
                let done = regio_runtime::op::submit(None, move |_, cookie| {
                    Op::share_file(slot, &cq, FileSlot(0), cookie)
                })
                .await;
                drop(a);
                done.result
            }))
            .unwrap();
        assert_eq!(
            result,
            -libc::EINVAL,
            "a runtime socket's slot was copied out, or the refusal changed"
        );
        drop(theirs);
        assert_eq!(rt.fixed_files_in_use(), 0);
    });
}

/// `listener`'s multishot accept, armed on a worker by a task that accepted one connection (a
/// client of `addr`, closed at once) and returned it: the accept stays armed off its task.
fn armed_incoming(
    rt: &regio_runtime::Runtime,
    listener: TcpListener,
    addr: std::net::SocketAddr,
) -> regio_runtime::net::Incoming<std::net::TcpListener> {
    let first = std::net::TcpStream::connect(addr).unwrap();
    let incoming = rt
        .block_on(rt.spawn(async move {
            let mut incoming = listener.incoming();
            drop(incoming.accept().await.unwrap());
            incoming
        }))
        .unwrap();
    drop(first);
    incoming
}
