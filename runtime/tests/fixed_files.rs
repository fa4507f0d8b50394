//! Fixed-file slots: accepted, connected and wrapped sockets and opened files name a slot of the
//! fixed-file table on every worker's ring; a stream is used from tasks on every worker; slots
//! come back when their socket or file is dropped and its last operation completed, also under
//! thousands of drops at random points; a full table falls back to plain descriptors; a peer
//! that goes away mid-receive ends the receive.
//!
//! The tests count descriptors and slots, so they run one at a time (`common::serial`).

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regio_runtime::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use regio_runtime::{fs::File, spawn, time, AdapterSpec, RingMode, Runtime};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `test` on `rt` within [`LIMIT`], then checks that every buffer came back, every slot is
/// free and no descriptor stayed open, and shuts the runtime down.
fn clean_run(rt: Runtime, test: impl FnOnce(&Runtime) + Send + 'static) {
    regio_testkit::within(LIMIT, "the test", move || {
        let fds = common::open_fds_after_warm_up(&rt);
        test(&rt);
        common::eventually_pool_full(rt.pool(), "every buffer is back");
        common::eventually("every fixed-file slot is free", || {
            rt.fixed_files_in_use() == 0
        });
        common::eventually("every descriptor is closed", || common::open_fds() == fds);
        rt.shutdown(Duration::from_secs(5));
    });
}

/// The name of the worker thread running the caller.
fn worker_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

#[test]
fn accepted_and_connected_streams_echo_over_fixed_slots_from_every_worker() {
    let _serial = common::serial();
    let sqpoll = RingMode::SqPoll {
        idle: Duration::from_millis(10),
        cpu: None,
    };
    for mode in [RingMode::Interrupt, sqpoll] {
        let Some(rt) = common::build(common::builder(2).ring_mode(mode)) else {
            return;
        };
        clean_run(rt, echo_from_every_worker);
    }
}

fn echo_from_every_worker(rt: &Runtime) {
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (server, client) = rt.block_on(async move {
            let server = spawn(async move {
                let accepted = listener.accept().await.unwrap().0;
                assert!(listener.fixed_slot().is_some(), "the listener has a slot");
                accepted
            });
            let client = TcpStream::connect(addr).await.unwrap();
            (server.await.unwrap(), client)
        });
        // The accepted stream has made no operation yet: it takes a slot at its first one.
        assert_eq!(server.fixed_slot(), None);
        let (server, client) = (Arc::new(server), Arc::new(client));
        // A work queue on a plain descriptor keeps a duplicate of it, one per worker; one on a
        // fixed slot none: counting descriptors shows which the queues target.
        let fds = common::open_fds();
        let mut workers = std::collections::HashSet::new();
        for round in 0..8u8 {
            let (s, c) = (Arc::clone(&server), Arc::clone(&client));
            // Round-robin placement: consecutive tasks land on both workers.
            let name = rt
                .block_on(rt.spawn(async move {
                    let pool = regio_runtime::pool();
                    let (sent, _) = c.send_all(vec![round; 100]).await;
                    sent.unwrap();
                    let (got, buf) = s.recv_exact(vec![0u8; 100]).await;
                    got.unwrap();
                    assert_eq!(buf, vec![round; 100]);
                    let (sent, _) = s.send_zc(common::message(&pool, &[round; 10])).await;
                    assert_eq!(sent.unwrap(), 10);
                    let (got, buf) = c.recv_exact(vec![0u8; 10]).await;
                    got.unwrap();
                    assert_eq!(buf, vec![round; 10]);
                    worker_name()
                }))
                .unwrap();
            workers.insert(name);
        }
        assert_eq!(
            workers.len(),
            2,
            "both workers used the streams: {workers:?}"
        );
        assert_eq!(
            common::open_fds(),
            fds,
            "no duplicate: the queues name the slots"
        );
        let slots = [server.fixed_slot(), client.fixed_slot()];
        assert!(slots.iter().all(Option::is_some), "{slots:?}");
        assert_ne!(slots[0], slots[1]);
        common::eventually("the listener's slot went back with the listener", || {
            rt.fixed_files_in_use() == 2
        });
        // A plain descriptor is still there for what io_uring does not do.
        server.set_nodelay(true).unwrap();
        assert_eq!(server.local_addr().unwrap(), addr);
        rt.block_on(server.shutdown(Shutdown::Write)).unwrap();
        let (got, _) = rt.block_on(client.recv(vec![0u8; 8]));
        assert_eq!(
            got.unwrap(),
            0,
            "the server's shutdown is seen on the slot's socket"
        );
    }
}

#[test]
fn unix_streams_and_files_opened_or_wrapped_use_fixed_slots() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(2) else { return };
    clean_run(rt, |rt| {
        let dir = std::env::temp_dir().join(format!("regio-fixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let _ = std::fs::remove_file(&sock);
        let path = dir.join("f");
        let listener = UnixListener::bind(&sock).unwrap();
        let (sock2, path2) = (sock.clone(), path.clone());
        rt.block_on(rt.spawn(async move {
            let client = spawn(async move { UnixStream::connect(&sock2).await.unwrap() });
            // A Unix listener's multishot accept.
            let server = listener.incoming().accept().await.unwrap();
            let client = client.await.unwrap();
            let (sent, _) = client.send_all(b"fixed".to_vec()).await;
            sent.unwrap();
            let (got, buf) = server.recv_exact(vec![0u8; 5]).await;
            got.unwrap();
            assert_eq!(buf, b"fixed");
            assert!(server.fixed_slot().is_some() && client.fixed_slot().is_some());

            let file = File::create(&path2).unwrap();
            let (w, _) = file.write_at(vec![7u8; 4096], 4096).await;
            assert_eq!(w.unwrap(), 4096);
            file.sync_all().await.unwrap();
            file.sync_data().await.unwrap();
            file.fallocate(0, 0, 16384).await.unwrap();
            file.fadvise(libc::POSIX_FADV_WILLNEED, 0, 0).await.unwrap();
            let (r, buf) = file.read_at(vec![0u8; 4096], 4096).await;
            assert_eq!(r.unwrap(), 4096);
            assert_eq!(buf, vec![7u8; 4096]);
            assert!(file.fixed_slot().is_some());
            assert_eq!(file.as_std().metadata().unwrap().len(), 16384);
            let wrapped = File::from_std(std::fs::File::open(&path2).unwrap());
            let (r, buf) = wrapped.read_at(vec![0u8; 4], 4096).await;
            assert_eq!(r.unwrap(), 4);
            assert_eq!(buf, [7u8; 4]);
            let slots = [server.fixed_slot(), client.fixed_slot(), file.fixed_slot()];
            assert!(!slots.contains(&wrapped.fixed_slot()));
        }))
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// With a table of 2 slots, the third socket or file names its plain descriptor: it works all
/// the same, and gets no slot; a slot freed is taken by the next one bound.
#[test]
fn a_full_table_falls_back_to_plain_descriptors() {
    let _serial = common::serial();
    let Some(rt) = common::build(common::builder(2).max_files(2)) else {
        return;
    };
    clean_run(rt, |rt| {
        let path = std::env::temp_dir().join(format!("regio-fixed-full-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let in_use = rt
            .block_on(rt.spawn({
                let path = path.clone();
                async move {
                    let files: Vec<File> = (0..4).map(|_| File::open(&path).unwrap()).collect();
                    for (i, file) in files.iter().enumerate() {
                        let (r, buf) = file.read_at(vec![0u8; 2], i as u64).await;
                        assert_eq!(r.unwrap(), 2);
                        assert_eq!(buf, path_bytes(i));
                    }
                    let slots: Vec<_> = files.iter().map(File::fixed_slot).collect();
                    assert_eq!(slots[..2].iter().flatten().count(), 2, "{slots:?}");
                    assert_eq!(&slots[2..], [None, None], "no slot left: plain descriptors");
                    let mut files = files;
                    drop(files.remove(0));
                    let late = File::open(&path).unwrap();
                    late.sync_all().await.unwrap();
                    assert_eq!(late.fixed_slot(), slots[0], "the freed slot is taken again");
                    files.len()
                }
            }))
            .unwrap();
        assert_eq!(in_use, 3);
        std::fs::remove_file(&path).unwrap();
    });
}

fn path_bytes(i: usize) -> Vec<u8> {
    b"0123456789"[i..i + 2].to_vec()
}

/// Single-issuer rings take registrations only from their owner, and `max_files(0)` asks for
/// no table: no slots, plain descriptors, which work all the same.
#[test]
fn single_issuer_rings_and_an_empty_table_use_plain_descriptors() {
    let _serial = common::serial();
    for builder in [
        common::builder(2).ring_mode(RingMode::SingleIssuer),
        common::builder(2).max_files(0),
    ] {
        let Some(rt) = common::build(builder) else {
            return;
        };
        clean_run(rt, plain_descriptors_echo);
    }
}

/// The no-slot rules hold per adapter: beside a single-issuer adapter and one with
/// `max_files(0)`, an adapter in interrupt mode gives its socket a slot, and only its count
/// moves.
#[test]
fn the_no_slot_rules_hold_per_adapter() {
    let _serial = common::serial();
    let builder = common::builder(2)
        .adapter(AdapterSpec::new().single_issuer())
        .adapter(AdapterSpec::new().max_files(0))
        .adapter(AdapterSpec::new().interrupt());
    let Some(rt) = common::build(builder) else {
        return;
    };
    clean_run(rt, |rt| {
        let mut kept = Vec::new();
        for index in 0..3 {
            let adapter = rt.adapter(index).unwrap();
            let (theirs, ours) = regio_testkit::loopback();
            let ours = TcpStream::from_std(ours).unwrap();
            let ours = rt
                .block_on(rt.spawn(adapter.scope(async move {
                    ours.send_all(b"slot?".to_vec()).await.0.unwrap();
                    ours
                })))
                .unwrap();
            let mut got = [0u8; 5];
            std::io::Read::read_exact(&mut &theirs, &mut got).unwrap();
            assert_eq!(&got, b"slot?");
            assert_eq!(ours.fixed_slot().is_some(), index == 2, "adapter {index}");
            kept.push((theirs, ours));
        }
        assert_eq!(rt.fixed_files_in_use_by_adapter(), vec![0, 0, 1]);
    });
}

fn plain_descriptors_echo(rt: &Runtime) {
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        rt.block_on(rt.spawn(async move {
            let client = spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let (server, _) = listener.accept().await.unwrap();
            let client = client.await.unwrap();
            let (sent, _) = client.send_all(b"plain".to_vec()).await;
            sent.unwrap();
            let (got, _) = server.recv_exact(vec![0u8; 5]).await;
            got.unwrap();
            assert_eq!((server.fixed_slot(), listener.fixed_slot()), (None, None));
        }))
        .unwrap();
        assert_eq!(rt.fixed_files_in_use(), 0);
    }
}

/// A client that goes away while the server's receive on a fixed slot waits: the receive ends
/// (0 for a close, `ECONNRESET` for a reset), and the slot comes back with the stream.
#[test]
fn a_client_disconnecting_mid_receive_ends_the_receive_on_a_fixed_slot() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(2) else { return };
    clean_run(rt, |rt| {
        for reset in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let (server, _) = rt.block_on(listener.accept()).unwrap();
            // One exchange binds the stream (and its slot) before the receive that waits.
            client.write_all(b"x").unwrap();
            let (got, _) = rt.block_on(server.recv(vec![0u8; 1]));
            assert_eq!(got.unwrap(), 1);
            assert!(server.fixed_slot().is_some());
            let waiting = rt.spawn(async move {
                let (got, _) = server.recv(vec![0u8; 64]).await;
                (got, server.fixed_slot())
            });
            // The receive is in the kernel once the runtime has submitted it; a short sleep
            // only makes that likely (either order ends the same way).
            std::thread::sleep(Duration::from_millis(20));
            if reset {
                common::reset_on_close(&client);
            }
            drop(client);
            let (got, slot) = rt.block_on(waiting).unwrap();
            assert!(slot.is_some());
            match (reset, got) {
                (false, Ok(0)) => {}
                (true, Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
                (reset, other) => panic!("reset {reset}: {other:?}"),
            }
            drop(listener);
        }
    });
}

/// Thousands of accepts, connects, opens and operations dropped at random points (before their
/// first poll, in flight, after completion), and sockets and files dropped under their
/// operations: afterwards every slot is free, every buffer back and every descriptor closed.
#[test]
fn thousands_of_accepts_opens_and_drops_leave_every_slot_free() {
    let _serial = common::serial();
    const TASKS: usize = 3000;
    const WAVE: usize = 250;
    // Every seventh task of a wave is aborted, whatever it had done by then.
    const ABORT_EVERY: usize = 7;
    let Some(rt) = common::build(common::builder(2).max_files(64)) else {
        return;
    };
    clean_run(rt, |rt| {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let path = std::env::temp_dir().join(format!("regio-fixed-stress-{}", std::process::id()));
        std::fs::write(&path, vec![1u8; 8192]).unwrap();
        let path = Arc::new(path);
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            // xorshift64: a fixed sequence, so a failure replays.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // The reads awaited to the end by tasks that are not aborted: each is certainly
        // submitted, whatever the timing (the timeouts and drops decide the rest).
        let mut certain = 0u64;
        for _wave in 0..TASKS / WAVE {
            let handles: Vec<_> = (0..WAVE)
                .map(|i| {
                    let r = random();
                    if i % ABORT_EVERY != 0 && (r >> 8) % 5 == 2 && r % 3 == 2 {
                        certain += 1;
                    }
                    let (listener, path, accepted) = (
                        Arc::clone(&listener),
                        Arc::clone(&path),
                        Arc::clone(&accepted),
                    );
                    let short = Duration::from_micros(r % 200);
                    rt.spawn(async move {
                        match (r >> 8) % 5 {
                            0 => {
                                // An accept that may be cut short: what it accepted meanwhile is
                                // closed.
                                if let Ok(Ok((stream, _))) =
                                    time::timeout(short, listener.accept()).await
                                {
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                    let _ = time::timeout(short, stream.recv(vec![0u8; 16])).await;
                                }
                            }
                            1 => {
                                if let Ok(Ok(stream)) =
                                    time::timeout(short, TcpStream::connect(addr)).await
                                {
                                    let _ = time::timeout(short, stream.send(vec![2u8; 16])).await;
                                    if r & 1 == 0 {
                                        let _ =
                                            time::timeout(short, stream.recv(vec![0u8; 16])).await;
                                    }
                                }
                            }
                            4 => {
                                // A multishot accept dropped at a random point: what it
                                // accepted and did not hand out is closed.
                                let mut incoming = listener.incoming();
                                if let Ok(Ok(stream)) =
                                    time::timeout(short, incoming.accept()).await
                                {
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                    drop(incoming);
                                    let _ = time::timeout(short, stream.recv(vec![0u8; 16])).await;
                                }
                            }
                            2 => {
                                let file = File::open(&*path).unwrap();
                                let read = file.read_at(vec![0u8; 4096], r % 4096);
                                match r % 3 {
                                    0 => drop(read),
                                    1 => drop(time::timeout(short, read).await),
                                    _ => {
                                        let (n, _) = read.await;
                                        n.unwrap();
                                    }
                                }
                                // Dropped before, while or after its read ran.
                            }
                            _ => {
                                let file = File::open(&*path).unwrap();
                                let sync = file.sync_data();
                                drop(file);
                                // The file is gone; its operation holds the slot until it ends.
                                let _ = time::timeout(short, sync).await;
                            }
                        }
                    })
                })
                .collect();
            for h in handles.iter().step_by(ABORT_EVERY) {
                h.abort();
            }
            for h in handles {
                if let Err(e) = rt.block_on(h) {
                    assert!(e.is_cancelled(), "{e}");
                }
            }
        }
        assert!(
            accepted.load(Ordering::Relaxed) > 0,
            "some accepts completed"
        );
        drop(listener);
        std::fs::remove_file(&*path).unwrap();
        let submitted = rt.stats().iter().map(|s| s.ops_submitted).sum::<u64>();
        assert!(certain > 0);
        assert!(
            submitted >= certain,
            "the operations ran: {submitted} submitted, {certain} reads certainly among them"
        );
    });
}

/// Fifty connections waiting in the backlog come out of one multishot accept: far fewer
/// submissions than connections.
#[test]
fn one_multishot_accept_hands_out_many_connections() {
    let _serial = common::serial();
    const CONNECTIONS: usize = 50;
    let Some(rt) = common::runtime(2) else { return };
    clean_run(rt, |rt| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients: Vec<std::net::TcpStream> = (0..CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let submitted = |rt: &Runtime| rt.stats().iter().map(|s| s.ops_submitted).sum::<u64>();
        let before = submitted(rt);
        let streams = rt
            .block_on(rt.spawn(async move {
                let mut incoming = listener.incoming();
                let mut streams = Vec::new();
                for _ in 0..CONNECTIONS {
                    streams.push(incoming.accept().await.unwrap());
                }
                streams
            }))
            .unwrap();
        let during = submitted(rt) - before;
        assert!(
            during < CONNECTIONS as u64 / 5,
            "{during} submissions for {CONNECTIONS} accepts"
        );
        let mut peers: Vec<_> = streams.iter().map(|s| s.peer_addr().unwrap()).collect();
        let mut locals: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        peers.sort();
        locals.sort();
        assert_eq!(peers, locals, "every client was accepted once");
        // Each accepted stream echoes over its fixed slot.
        let streams = Arc::new(streams);
        for (i, client) in clients.iter_mut().enumerate() {
            client.write_all(&[i as u8]).unwrap();
        }
        rt.block_on(rt.spawn({
            let streams = Arc::clone(&streams);
            async move {
                for s in streams.iter() {
                    let (got, buf) = s.recv_exact(vec![0u8; 1]).await;
                    got.unwrap();
                    s.send_all(buf).await.0.unwrap();
                    assert!(s.fixed_slot().is_some());
                }
            }
        }))
        .unwrap();
        for client in &mut clients {
            let mut byte = [0u8; 1];
            std::io::Read::read_exact(client, &mut byte).unwrap();
        }
        assert_eq!(rt.fixed_files_in_use(), CONNECTIONS);
    });
}

/// Dropping an `Incoming` cancels its multishot accept: the connections it accepted and did
/// not hand out are closed (their clients read the end), none leaks; off the workers `next`
/// is a single accept.
#[test]
fn dropping_incoming_closes_the_connections_it_did_not_hand_out() {
    let _serial = common::serial();
    const LATE: usize = 20;
    let Some(rt) = common::runtime(2) else { return };
    clean_run(rt, |rt| {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let first = std::net::TcpStream::connect(addr).unwrap();
        let gate = Arc::new(common::Gate::default());
        let handed_out = Arc::new(common::Gate::default());
        let armed = rt.spawn({
            let (listener, gate, handed_out) = (
                Arc::clone(&listener),
                Arc::clone(&gate),
                Arc::clone(&handed_out),
            );
            async move {
                let mut incoming = listener.incoming();
                let stream = incoming.accept().await.unwrap();
                handed_out.open();
                // Still armed: the late clients are accepted into it meanwhile.
                gate.passed().await;
                drop(incoming);
                stream
            }
        });
        rt.block_on(handed_out.passed());
        let before = common::open_fds();
        let mut late: Vec<std::net::TcpStream> = (0..LATE)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // The armed accept takes each late connection out of the backlog into a descriptor
        // of this process (the listener lives on: what stayed in its backlog would not end).
        common::eventually("the late connections are accepted", || {
            common::open_fds() == before + 2 * LATE
        });
        gate.open();
        let stream = rt.block_on(armed).unwrap();
        for client in &mut late {
            let mut rest = Vec::new();
            let read = std::io::Read::read_to_end(client, &mut rest);
            assert!(
                matches!(&read, Ok(0)) || read.is_err(),
                "a late client's connection ends: {read:?}"
            );
        }
        drop((stream, first));
        // Off the workers: one single-shot accept per call. (On another listener: the dropped
        // multishot accept may take a connection, and close it, until its cancel completes.)
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let mut incoming = other.incoming();
        let accepted = rt.block_on(incoming.accept()).unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    });
}

/// A descriptor the kernel refuses to put in a fixed-file table (an io_uring's own: a ring
/// registered in a ring could keep itself alive) names its plain descriptor, and the slot it
/// was about to take goes back.
#[test]
fn a_descriptor_the_kernel_refuses_as_a_fixed_file_stays_plain() {
    use std::os::fd::FromRawFd;
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    clean_run(rt, |rt| {
        // io_uring_params: 120 bytes, all zero asks for the defaults.
        let mut params = [0u64; 15];
        // SAFETY: io_uring_setup writes into `params`, which is as large as the struct it
        // expects; no other memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2, params.as_mut_ptr()) };
        assert!(
            fd >= 0,
            "io_uring_setup: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor, owned by nobody else.
        let ring = File::from_std(unsafe { std::fs::File::from_raw_fd(fd as i32) });
        let synced = rt.block_on(ring.sync_all());
        assert!(synced.is_err(), "an io_uring cannot be synced: {synced:?}");
        assert_eq!(ring.fixed_slot(), None);
        assert_eq!(rt.fixed_files_in_use(), 0, "the slot went back");
        let file = File::open("/proc/self/stat").unwrap();
        rt.block_on(file.fadvise(libc::POSIX_FADV_NORMAL, 0, 0))
            .ok();
        assert_eq!(file.fixed_slot(), Some(0), "the next file takes it");
    });
}

/// Restores the soft `RLIMIT_NOFILE` it lowered, also when the test fails.
struct FdLimit(libc::rlimit);

impl FdLimit {
    /// Lowers the soft limit to `limit`: no descriptor numbered `limit` or above can be made.
    fn lower_to(limit: u64) -> Self {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `old`, a live rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let new = libc::rlimit {
            rlim_cur: limit,
            rlim_max: old.rlim_max,
        };
        // SAFETY: setrlimit reads `new`, a live rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
        Self(old)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        // SAFETY: setrlimit reads the saved rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

/// A multishot accept that the kernel ends with an error (out of descriptors: `EMFILE`) hands
/// the error out, and the next `accept` arms a new one, which takes the connection that
/// waited in the backlog.
#[test]
fn a_multishot_accept_ended_by_an_error_is_armed_again() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    clean_run(rt, |rt| {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let first = std::net::TcpStream::connect(addr).unwrap();
        // One connection first: the listener is bound (its slot installed) with descriptors
        // to spare. A single-shot accept: a multishot one dropped here could still take the
        // next connection (and close it) until its cancel completes.
        let (accepted, _) = rt.block_on(listener.accept()).unwrap();
        // The next client's socket, made while descriptors can still be made.
        // SAFETY: socket(2) takes no pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor, owned by nobody else.
        let client = unsafe { OwnedFd::from_raw_fd(fd) };
        // The lowest free descriptor number: with the limit there, no descriptor can be made.
        // The kernel reads the limit when it prepares the accept, so it is lowered first.
        let lowest = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
        let (incoming, failed) = {
            let _limit = FdLimit::lower_to(lowest as u64);
            connect_v4(&client, addr);
            rt.block_on(rt.spawn({
                let listener = Arc::clone(&listener);
                async move {
                    let mut incoming = listener.incoming();
                    let failed = incoming.accept().await.map(drop);
                    (incoming, failed)
                }
            }))
            .unwrap()
        };
        let err = failed.expect_err("no descriptor could be made");
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        // Descriptors can be made again: a new multishot accept takes the waiting connection.
        let mut incoming = incoming;
        let second = rt
            .block_on(rt.spawn(async move { incoming.accept().await }))
            .unwrap()
            .unwrap();
        let client = std::net::TcpStream::from(client);
        assert_eq!(second.peer_addr().unwrap(), client.local_addr().unwrap());
        drop((first, accepted, second, client, listener));
    });
}

/// Connects `socket` to `addr` (an IPv4 address) with `connect(2)`.
fn connect_v4(socket: &impl std::os::fd::AsRawFd, addr: std::net::SocketAddr) {
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("not an IPv4 address: {addr}")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a live sockaddr_in of the length passed.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
}

/// Two adapters, each with a table of three slots: on each, a listener's multishot accept, the
/// accepted stream and a connected stream take three slots of that adapter's table (one shared
/// table of three would leave the second adapter's sockets plain), echo works on both, and
/// every slot of both tables is free once the sockets are dropped.
#[test]
fn each_adapter_gives_its_sockets_slots_of_its_own_table() {
    let _serial = common::serial();
    const SLOTS: u32 = 3;
    let builder = common::builder(2)
        .adapter(AdapterSpec::new().max_files(SLOTS))
        .adapter(AdapterSpec::new().max_files(SLOTS));
    let Some(rt) = common::build(builder) else {
        return;
    };
    clean_run(rt, |rt| {
        let mut kept = Vec::new();
        for index in 0..2 {
            let adapter = rt.adapter(index).unwrap();
            let before = common::completions_on(rt, index);
            let sockets = rt
                .block_on(rt.spawn(adapter.scope(async move {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    let mut incoming = listener.incoming();
                    let client = TcpStream::connect(addr).await.unwrap();
                    let server = incoming.accept().await.unwrap();
                    let payload = [index as u8 + 1; 64];
                    client.send_all(payload.to_vec()).await.0.unwrap();
                    let (got, buf) = server.recv_exact(vec![0u8; 64]).await;
                    got.unwrap();
                    server.send_all(buf).await.0.unwrap();
                    let (got, echoed) = client.recv_exact(vec![0u8; 64]).await;
                    got.unwrap();
                    assert_eq!(echoed, payload, "the echo on adapter {index}");
                    drop(incoming);
                    (listener, server, client)
                })))
                .unwrap();
            let slots = [
                sockets.0.fixed_slot(),
                sockets.1.fixed_slot(),
                sockets.2.fixed_slot(),
            ];
            assert!(
                slots.iter().all(|s| s.is_some_and(|s| s < SLOTS)),
                "adapter {index}'s sockets have slots of its table: {slots:?}"
            );
            assert!(
                common::completions_on(rt, index) > before,
                "the I/O ran on adapter {index}"
            );
            kept.push(sockets);
        }
        assert_eq!(rt.fixed_files_in_use_by_adapter(), vec![3, 3]);
        assert_eq!(rt.fixed_files_in_use(), 6);
        drop(kept);
        common::eventually("both tables are free", || {
            rt.fixed_files_in_use_by_adapter() == vec![0, 0]
        });
    });
}
