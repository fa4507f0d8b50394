//! Attacks from safe code, as a hostile or careless user would make them: huge durations,
//! empty and foreign descriptors, descriptors that name no socket, a broken pipe with
//! `SIGPIPE` at its default action, sockets dropped under their operations, blackholed
//! connects, stalled peers, runtimes dropped where they run, shutdowns with parked tasks.
//! Each test says what it caught, if it caught something.
//!
//! The tests of this file run one at a time (they count descriptors and worker threads).

mod common;

use std::future::Future;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use regio_runtime::net::{TcpStream, UdpSocket, UnixListener, UnixStream};
use regio_runtime::{fs, spawn, time, RingMode, Runtime};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `test` on a 2-worker runtime (on a thread of its own, within [`LIMIT`]), then checks
/// that every buffer came back and no descriptor stayed open, and shuts the runtime down.
fn attack(test: impl FnOnce(&Runtime) + Send + 'static) {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", move || {
        let Some(rt) = common::runtime(2) else { return };
        let fds = common::open_fds_after_warm_up(&rt);
        test(&rt);
        common::eventually_pool_full(rt.pool(), "every buffer is back");
        common::eventually("every descriptor is closed", || common::open_fds() <= fds);
        rt.shutdown(Duration::from_secs(5));
    });
}

/// A connected TCP pair on loopback: (regio side, standard side).
async fn tcp_pair() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ours = TcpStream::connect(addr).await.unwrap();
    let (theirs, _) = listener.accept().unwrap();
    (ours, theirs)
}

/// A connected TCP pair on loopback whose buffers (regio side's send, standard side's
/// receive) are 4 KiB: a standard side that stops reading stalls the regio side's sends soon.
async fn tcp_pair_with_small_buffers() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    common::set_socket_int(listener.as_raw_fd(), libc::SO_RCVBUF, 4096);
    let ours = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    common::set_socket_int(ours.as_raw_fd(), libc::SO_SNDBUF, 4096);
    let (theirs, _) = listener.accept().unwrap();
    (ours, theirs)
}

// ---- Time -----------------------------------------------------------------------------------

/// Caught: `sleep`, `timeout` and `interval` computed `Instant::now() + duration` unchecked,
/// so `Duration::MAX` (a "forever" many users write) panicked with an overflow, and so did
/// `Runtime::shutdown(Duration::MAX)`. They now mean "no deadline in any practical sense".
#[test]
fn huge_durations_mean_forever_and_do_not_panic() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        let Some(rt) = common::runtime(1) else { return };
        rt.block_on(rt.spawn(async {
            let slept = time::timeout(Duration::from_millis(5), time::sleep(Duration::MAX)).await;
            assert!(slept.is_err(), "a sleep of Duration::MAX ended");
            let done = time::timeout(Duration::MAX, regio_runtime::nop()).await;
            assert!(matches!(done, Ok(Ok(()))), "{done:?}");
            let mut ticks = time::interval(Duration::MAX);
            ticks.tick().await;
            let second = time::timeout(Duration::from_millis(5), ticks.tick()).await;
            assert!(second.is_err(), "an interval of Duration::MAX ticked twice");
            let mut fine = time::interval(Duration::from_nanos(1));
            for _ in 0..3 {
                fine.tick().await;
            }
        }))
        .unwrap();
        // Off the workers too (the sleep runs as a task there).
        let slept = rt.block_on(time::timeout(
            Duration::from_millis(5),
            time::sleep(Duration::MAX),
        ));
        assert!(slept.is_err());
        rt.shutdown(Duration::MAX);
    });
}

// ---- Files ----------------------------------------------------------------------------------

/// Caught: `File::write_at` with a descriptor truncated to 0 wrote the message's whole
/// buffer (4 KiB of whatever it last held: another connection's data) into the file, and
/// `read_at` filled the whole buffer: the adapters read an empty descriptor as the whole first
/// buffer. An empty descriptor now completes at once with 0, as sockets' operations do.
#[test]
fn an_empty_descriptor_reads_and_writes_no_file_byte() {
    attack(|rt| {
        let dir = std::env::temp_dir().join(format!("regio-attack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty-descriptor");
        std::fs::write(&path, b"keep me").unwrap();
        let pool = rt.pool().clone();
        let p = path.clone();
        rt.block_on(rt.spawn(async move {
            let file = fs::File::from_std(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .unwrap(),
            );
            let mut msg = pool.try_acquire().unwrap();
            msg.as_mut_slice()[..7].copy_from_slice(b"SECRETS");
            msg.descriptor_mut().truncate(0);
            let (n, mut msg) = file.write_at(msg, 0).await;
            assert_eq!(n.unwrap(), 0, "an empty write wrote bytes");
            msg.descriptor_mut().truncate(0);
            let (n, msg) = file.read_at(msg, 0).await;
            assert_eq!(n.unwrap(), 0, "an empty read read bytes");
            assert_eq!(
                &msg.as_slice()[..7],
                b"SECRETS",
                "an empty read wrote the buffer"
            );
        }))
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Caught: `File::read_at` and `write_at` at `u64::MAX` (the kernel reads an offset of -1 as
/// "the file's current position") read and wrote at the file's cursor rather than failing as
/// `pread`/`pwrite` do: a hostile offset wrote where the caller never asked. An offset above
/// `i64::MAX` is now refused with `EINVAL` (and the buffer comes back). The adapters' raw
/// `read_fixed` keeps -1 (a pipe's only offset).
#[test]
fn an_offset_the_kernel_reads_as_the_cursor_is_refused() {
    attack(|rt| {
        let mut file = tempfile();
        file.write_all(b"keep me").unwrap();
        let std = file.try_clone().unwrap();
        rt.block_on(rt.spawn(async move {
            let file = fs::File::from_std(std);
            let pool = regio_runtime::pool();
            for pos in [u64::MAX, i64::MAX as u64 + 1] {
                let (n, msg) = file.write_at(common::message(&pool, b"XY"), pos).await;
                let e = n.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
                assert_eq!(&msg.as_slice()[..2], b"XY");
                let (n, _) = file.read_at(msg, pos).await;
                let e = n.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
            }
        }))
        .unwrap();
        let mut back = String::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "keep me");
    });
}

// ---- Descriptors that name no socket ---------------------------------------------------------

/// A duplicate of `fd` dressed up as another type, with safe conversions only.
fn fd_as<T: From<OwnedFd>>(fd: &impl AsFd) -> T {
    T::from(fd.as_fd().try_clone_to_owned().unwrap())
}

/// Caught: `TcpStream::from_std`, `UnixStream::from_std` and `UdpSocket::from_std` took any
/// descriptor (a `std::net::TcpStream` can be made from a file's `OwnedFd` in safe code), and
/// a send on a regular file became a write at offset 0 (the fallback of sends with flags 0):
/// it overwrote the file. They now refuse a descriptor that is not a socket of their kind.
#[test]
fn a_descriptor_that_is_no_socket_is_refused() {
    attack(|rt| {
        let mut file = tempfile();
        file.write_all(b"keep me").unwrap();
        let refused = TcpStream::from_std(fd_as(&file)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
        let refused = UnixStream::from_std(fd_as(&file)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
        let refused = UdpSocket::from_std(fd_as(&file)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
        // A socket of the wrong kind is refused too: a UDP socket is no TCP stream.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let refused = TcpStream::from_std(fd_as(&udp)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
        // And a TCP stream is still taken.
        rt.block_on(rt.spawn(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let stream = TcpStream::from_std(client).unwrap();
            let (theirs, _) = listener.accept().unwrap();
            let pool = regio_runtime::pool();
            let (sent, _) = stream.send_all(common::message(&pool, b"ok")).await;
            sent.unwrap();
            drop(theirs);
        }))
        .unwrap();
        let mut back = String::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "keep me");
    });
}

/// An unlinked temporary file.
fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "regio-attack-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

// ---- SIGPIPE ----------------------------------------------------------------------------------

const SIGPIPE_CHILD: &str = "a_send_on_a_shut_down_socket_child";

/// Caught: a send with flags 0 is a fixed-buffer `write(2)` on kernels before 7.2, which
/// raises `SIGPIPE` on the worker thread that submits it: a program that keeps `SIGPIPE`'s
/// default action (C hosts, `#[unix_sigpipe = "sig_dfl"]`, a library embedding regio) was
/// killed by a send on a shut-down socket. The workers now block `SIGPIPE`; the send fails
/// with `EPIPE` and the process lives. Runs the attack in a child process (the signal would
/// kill the test harness), in every ring mode.
#[test]
fn a_send_on_a_shut_down_socket_does_not_kill_the_process() {
    let _serial = common::serial();
    common::run_child_test(SIGPIPE_CHILD);
}

/// The child of the test above: `SIGPIPE` at its default action, then sends (of a message, and
/// copied from a region) on a socket whose writing side was shut down, in every ring mode.
#[test]
#[ignore = "run by a_send_on_a_shut_down_socket_does_not_kill_the_process in a child process"]
fn a_send_on_a_shut_down_socket_child() {
    // SAFETY: restores the default action of one signal; no handler is installed.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let sqpoll = RingMode::SqPoll {
        idle: Duration::from_millis(10),
        cpu: None,
    };
    for mode in [RingMode::Interrupt, RingMode::SingleIssuer, sqpoll] {
        let Some(rt) = common::build(common::builder(1).ring_mode(mode)) else {
            return;
        };
        rt.block_on(rt.spawn(async move {
            let (ours, theirs) = tcp_pair().await;
            ours.shutdown(std::net::Shutdown::Write).await.unwrap();
            let pool = regio_runtime::pool();
            for _ in 0..3 {
                let (sent, _) = ours.send(common::message(&pool, b"after the end")).await;
                let e = sent.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
            }
            // A copied send from a region is the same write (a single-issuer runtime refuses
            // regions).
            let memory = std::sync::Arc::new(vec![1_u8; 4096].into_boxed_slice());
            let registered = regio_runtime::region::Region::register(memory);
            assert_eq!(registered.is_ok(), mode != RingMode::SingleIssuer);
            if let Ok(region) = registered {
                for _ in 0..3 {
                    let sent = ours.send_region_copied(&region, 0, 4096).unwrap().await;
                    let e = sent.unwrap_err();
                    assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
                }
            }
            drop(theirs);
        }))
        .unwrap();
        rt.shutdown(Duration::from_secs(5));
    }
}

// ---- Descriptors and foreign messages ---------------------------------------------------------

/// Attempted: messages of another runtime's pool, descriptors naming another message's bytes,
/// zero-length operations. Each gets an error or 0, and no byte of a buffer the operation
/// does not own changes.
#[test]
fn foreign_and_empty_descriptors_are_refused_without_touching_memory() {
    attack(|rt| {
        let Some(other) = common::runtime(1) else {
            return;
        };
        let foreign = other.pool().clone();
        rt.block_on(rt.spawn(async move {
            let pool = regio_runtime::pool();
            let (ours, mut theirs) = tcp_pair().await;
            theirs.write_all(&[7u8; 64]).unwrap();
            // A message of another runtime's pool.
            let (got, msg) = ours.recv(foreign.try_acquire().unwrap()).await;
            assert!(got.is_err(), "a foreign message was received into: {got:?}");
            drop(msg);
            // A descriptor that names another message's bytes.
            let mut victim = pool.try_acquire().unwrap();
            victim.as_mut_slice()[..64].fill(1);
            let mut thief = pool.try_acquire().unwrap();
            thief.descriptor_mut().set_slices(&[victim.key()]).unwrap();
            let (got, thief) = ours.recv(thief).await;
            assert!(got.is_err(), "a stolen slice was received into: {got:?}");
            let (got, thief) = ours.recv_exact(thief).await;
            assert!(got.is_err(), "a stolen slice was received into: {got:?}");
            let (sent, thief) = ours.send_zc(thief).await;
            assert!(sent.is_err(), "a stolen slice was sent: {sent:?}");
            assert!(victim.as_slice()[..64].iter().all(|&b| b == 1));
            drop((victim, thief));
            // Zero-length operations.
            let mut empty = pool.try_acquire().unwrap();
            empty.descriptor_mut().truncate(0);
            let (n, empty) = ours.recv(empty).await;
            assert_eq!(n.unwrap(), 0);
            let (n, empty) = ours.send(empty).await;
            assert_eq!(n.unwrap(), 0);
            let (n, empty) = ours.send_zc(empty).await;
            assert_eq!(n.unwrap(), 0);
            let (done, empty) = ours.recv_exact(empty).await;
            done.unwrap();
            let (done, _) = ours.send_all(empty).await;
            done.unwrap();
            // The 64 bytes are still there for a real receive.
            let (got, _) = ours.recv_exact(common::message(&pool, &[0; 64])).await;
            got.unwrap();
        }))
        .unwrap();
        other.shutdown(Duration::from_secs(5));
    });
}

/// Attempted: a datagram larger than the buffer (the rest is dropped, the count is the
/// buffer's), an empty datagram operation (refused), a zero-copy send on a Unix stream (the
/// kernel's error, no hang), and a Unix socket path of 200 bytes (refused, not truncated).
#[test]
fn oversized_datagrams_empty_datagram_operations_and_long_paths() {
    attack(|rt| {
        rt.block_on(rt.spawn(async {
            let pool = regio_runtime::pool();
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            b.send_to(&[9u8; 3000], a.local_addr().unwrap()).unwrap();
            let mut small = pool.try_acquire().unwrap();
            small.descriptor_mut().truncate(100);
            let (got, small) = a.recv_from(small).await;
            let (n, from) = got.unwrap();
            assert_eq!((n, from), (100, b.local_addr().unwrap()));
            assert!(small.as_slice()[..100].iter().all(|&x| x == 9));
            let mut empty = small;
            empty.descriptor_mut().truncate(0);
            let (got, empty) = a.recv_from(empty).await;
            assert_eq!(got.unwrap_err().kind(), ErrorKind::InvalidInput);
            let (got, _) = a.send_to(empty, b.local_addr().unwrap()).await;
            assert_eq!(got.unwrap_err().kind(), ErrorKind::InvalidInput);
            // A zero-copy send where the kernel has none (a Unix stream): an error, no hang.
            let (x, y) = UnixStream::pair().unwrap();
            let (sent, _) = x.send_zc(common::message(&pool, b"zc")).await;
            match sent {
                Ok(n) => {
                    assert_eq!(n, 2);
                    let (got, _) = y.recv_exact(common::message(&pool, b"..")).await;
                    got.unwrap();
                }
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
            }
            let long = std::env::temp_dir().join("x".repeat(200));
            let e = UnixStream::connect(&long).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            let e = UnixListener::bind(&long).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        }))
        .unwrap();
    });
}

// ---- Ownership under drops -------------------------------------------------------------------

/// Attempted: a stream dropped while a receive on it is in flight, and a stream split and
/// its halves dropped in turn under their operations. The operations finish (they hold the
/// descriptor), and everything closes after.
#[test]
fn streams_dropped_under_their_operations_keep_them_whole() {
    attack(|rt| {
        rt.block_on(rt.spawn(async {
            let pool = regio_runtime::pool();
            let (ours, mut theirs) = tcp_pair().await;
            let recv = ours.recv(pool.try_acquire().unwrap());
            drop(ours);
            let task = spawn(recv);
            time::sleep(Duration::from_millis(5)).await;
            theirs.write_all(b"late").unwrap();
            let (n, msg) = task.await.unwrap();
            assert_eq!(&msg.as_slice()[..n.unwrap()], b"late");
            drop(theirs);

            let (ours, mut theirs) = tcp_pair().await;
            let (read, write) = ours.into_split();
            let recv = read.recv_exact(common::message(&pool, &[0; 8]));
            let send = write.send_all(common::message(&pool, b"12345678"));
            // The read half dropped under its receive; the write half once its send is done
            // (dropping it ends the stream: documented, and what tokio does).
            drop(read);
            let (recv, send) = (spawn(recv), spawn(send));
            send.await.unwrap().0.unwrap();
            drop(write);
            let mut got = [0; 8];
            theirs.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"12345678");
            theirs.write_all(b"87654321").unwrap();
            let (done, msg) = recv.await.unwrap();
            done.unwrap();
            assert_eq!(&msg.as_slice()[..8], b"87654321");
        }))
        .unwrap();
    });
}

/// Attempted: tasks running receives, exact receives and zero-copy sends aborted after every
/// number of their own steps (0 to 40 yields), with data arriving meanwhile; then every
/// buffer, descriptor and work queue must come back.
#[test]
fn tasks_aborted_at_every_poll_point_leave_nothing_behind() {
    attack(|rt| {
        rt.block_on(rt.spawn(async {
            let pool = regio_runtime::pool();
            for point in 0..40u32 {
                let (ours, theirs) = tcp_pair().await;
                let ours = Arc::new(ours);
                let tasks: Vec<_> = (0..3)
                    .map(|kind| {
                        let ours = Arc::clone(&ours);
                        let pool = pool.clone();
                        spawn(async move {
                            loop {
                                let buf = pool.acquire().await;
                                match kind {
                                    0 => drop(ours.recv(buf).await),
                                    1 => drop(ours.recv_exact(buf).await),
                                    _ => drop(ours.send_zc(buf).await),
                                }
                            }
                        })
                    })
                    .collect();
                let mut feeder = theirs.try_clone().unwrap();
                for _ in 0..point {
                    let _ = feeder.write(&[1u8; 512]);
                    regio_runtime::nop().await.unwrap();
                }
                for t in &tasks {
                    t.abort();
                }
                for t in tasks {
                    assert!(t.await.unwrap_err().is_cancelled());
                }
                common::reset_on_close(&theirs);
                drop((theirs, feeder));
            }
        }))
        .unwrap();
    });
}

// ---- Hangs ------------------------------------------------------------------------------------

/// A listener whose accept queue is full: connects to it go unanswered (their SYNs are
/// dropped), as to a blackholed address. Returns it and the connections that filled it.
fn blackhole() -> (OwnedFd, SocketAddr, Vec<std::net::TcpStream>) {
    // SAFETY: plain system calls on a descriptor made here; the address is a live
    // sockaddr_in of the size passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                len
            ),
            0
        );
        assert_eq!(libc::listen(fd.as_raw_fd(), 0), 0);
        let mut len = len;
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sin as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port)));
        let mut filled = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => filled.push(s),
                Err(_) => return (fd, addr, filled),
            }
        }
        panic!("the accept queue never filled");
    }
}

/// Attempted: a connect to an address that never answers, under a timeout (it ends with the
/// timeout and its socket closes), and a `recv_exact` on a peer that sends half, stalls, then
/// closes (it ends with `UnexpectedEof`).
#[test]
fn blackholed_connects_and_stalled_peers_end() {
    attack(|rt| {
        let (hole, addr, filled) = blackhole();
        rt.block_on(rt.spawn(async move {
            for _ in 0..3 {
                let connect = time::timeout(Duration::from_millis(50), TcpStream::connect(addr));
                assert!(connect.await.is_err(), "a blackholed connect succeeded");
            }
            let pool = regio_runtime::pool();
            let (ours, mut theirs) = tcp_pair().await;
            let peer = std::thread::spawn(move || {
                theirs.write_all(&[5u8; 50]).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                drop(theirs);
            });
            let (got, msg) = ours.recv_exact(common::message(&pool, &[0; 100])).await;
            assert_eq!(got.unwrap_err().kind(), ErrorKind::UnexpectedEof);
            assert_eq!(
                msg.descriptor().len(),
                100,
                "the descriptor comes back whole"
            );
            peer.join().unwrap();
        }))
        .unwrap();
        // The blackholed connects in block_on as well (each runs as a task on a worker).
        let connect = time::timeout(Duration::from_millis(50), TcpStream::connect(addr));
        assert!(rt.block_on(connect).is_err());
        drop((hole, filled));
    });
}

/// A future that stores its waker for another thread to wake, and is ready once woken.
struct Remote(Arc<Mutex<(bool, Option<Waker>)>>);

impl std::future::Future for Remote {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut state = self.0.lock().unwrap();
        if state.0 {
            return Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Attempted: a task's waker woken from another runtime's worker, a runtime dropped from
/// inside one of its own tasks (its workers stop; nothing waits for itself), a runtime
/// dropped inside another runtime's task, and a shutdown with tasks parked on receives and
/// sleeps (every buffer and descriptor comes back, every worker thread ends).
#[test]
fn runtimes_dropped_where_they_run_and_shut_down_under_parked_tasks() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        let (Some(a), Some(b)) = (common::runtime(1), common::runtime(1)) else {
            return;
        };
        let threads = common::worker_threads();
        let fds = common::open_fds();
        // A waker of `a` woken on `b`.
        let cell = Arc::new(Mutex::new((false, None::<Waker>)));
        let waiting = a.spawn(Remote(Arc::clone(&cell)));
        common::eventually("the task waits", || cell.lock().unwrap().1.is_some());
        let c = Arc::clone(&cell);
        b.block_on(b.spawn(async move {
            let waker = {
                let mut state = c.lock().unwrap();
                state.0 = true;
                state.1.take().unwrap()
            };
            waker.wake();
        }))
        .unwrap();
        regio_testkit::block_on(waiting).unwrap();

        // `b` dropped inside a task of `a`: `a`'s worker waits for `b`'s to stop.
        let (tx, rx) = std::sync::mpsc::channel::<Runtime>();
        let dropper = a.spawn(async move { drop(rx.recv().unwrap()) });
        tx.send(b).unwrap();
        regio_testkit::block_on(dropper).unwrap();

        // Tasks parked on receives and sleeps, then `a` dropped inside one of its own tasks.
        let pool = a.pool().clone();
        let parked: Vec<_> = (0..8)
            .map(|i| {
                a.spawn(async move {
                    let (ours, theirs) = tcp_pair().await;
                    if i % 2 == 0 {
                        let _ = ours.recv(regio_runtime::pool().acquire().await).await;
                    } else {
                        time::sleep(Duration::MAX).await;
                    }
                    drop(theirs);
                })
            })
            .collect();
        common::eventually("the tasks are parked", || {
            pool.available(0) <= pool.capacity(0) - 4
        });
        let (tx, rx) = std::sync::mpsc::channel::<Runtime>();
        let dropper = a.spawn(async move { drop(rx.recv().unwrap()) });
        tx.send(a).unwrap();
        regio_testkit::block_on(dropper).unwrap();
        for task in parked {
            assert!(regio_testkit::block_on(task).unwrap_err().is_cancelled());
        }
        common::eventually("the worker threads end", || {
            common::worker_threads() + 2 <= threads
        });
        common::eventually_pool_full(&pool, "every buffer is back");
        common::eventually("every descriptor is closed", || common::open_fds() <= fds);
    });
}

/// Attempted: `block_on` nested inside a worker (a clear panic in that task, not a deadlock;
/// the worker goes on).
#[test]
fn block_on_inside_a_worker_is_a_clear_error() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        let (Some(a), Some(b)) = (common::runtime(1), common::runtime(1)) else {
            return;
        };
        let b = Arc::new(b);
        let inner = Arc::clone(&b);
        let nested = a.block_on(a.spawn(async move { inner.block_on(async { 1 }) }));
        let panic = nested.unwrap_err().try_into_panic().unwrap();
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(text.contains("block_on inside a regio worker"), "{text}");
        assert_eq!(a.block_on(a.spawn(async { 2 })).unwrap(), 2);
        a.shutdown(Duration::from_secs(5));
        Arc::try_unwrap(b).unwrap().shutdown(Duration::from_secs(5));
    });
}

// ---- Credit -----------------------------------------------------------------------------------

/// Caught: the cancel of a dropped operation takes a credit of its work queue's send side,
/// like a send. With every send credit held by sends that a peer which never reads keeps in
/// the kernel, dropping them (timeouts) staged cancels that could never be posted: the sends
/// stayed in the kernel, their buffers never came back, and the worker kept the cancels
/// staged until shutdown gave up on them. A cancel now overdraws its queue by one.
#[test]
fn cancels_of_sends_that_hold_every_credit_still_go_out() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        // A shallow queue (cq_entries 16: a depth of 8 per side), as a configuration may set.
        let Some(rt) = common::build(common::builder(1).cq_entries(16)) else {
            return;
        };
        let pool = rt.pool().clone();
        let peer = rt.block_on(rt.spawn(async move {
            let (ours, theirs) = tcp_pair_with_small_buffers().await;
            let ours = Arc::new(ours);
            // More sends than credits, each given up after a while: the peer never reads.
            let sends: Vec<_> = (0..12)
                .map(|_| {
                    let ours = Arc::clone(&ours);
                    let msg = regio_runtime::pool().try_acquire().unwrap();
                    spawn(async move {
                        time::timeout(Duration::from_millis(100), ours.send(msg))
                            .await
                            .is_ok()
                    })
                })
                .collect();
            let mut dropped = 0;
            for send in sends {
                dropped += usize::from(!send.await.unwrap());
            }
            assert!(dropped > 8, "only {dropped} sends were left in flight");
            theirs
        }));
        let peer = peer.unwrap();
        common::eventually_pool_full(&pool, "every buffer is back (the cancels went out)");
        drop(peer);
        rt.shutdown(Duration::from_secs(5));
    });
}

/// Caught: an operation refused for want of credit stayed first in the worker's staging
/// queue and held up everything staged behind it, on every socket: one peer that stops
/// reading (its socket's send credits all held by sends it never lets finish, one more send
/// waiting) stalled every other operation of that worker, a DoS by one slow client. Only the
/// operations of the queue without credit wait now; the others go past them.
#[test]
fn a_peer_that_stops_reading_does_not_stall_the_other_sockets() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        let Some(rt) = common::build(common::builder(1).cq_entries(16)) else {
            return;
        };
        let pool = rt.pool().clone();
        let peers = rt.block_on(rt.spawn(async move {
            let (slow, stalled) = tcp_pair_with_small_buffers().await;
            let slow = Arc::new(slow);
            // More sends than the queue has credits: the peer never reads.
            let sends: Vec<_> = (0..12)
                .map(|_| {
                    let slow = Arc::clone(&slow);
                    let msg = regio_runtime::pool().try_acquire().unwrap();
                    spawn(async move { slow.send(msg).await.0.is_ok() })
                })
                .collect();
            time::sleep(Duration::from_millis(50)).await;
            // Another socket, and a nop, on the same worker.
            let (other, mut theirs) = tcp_pair().await;
            theirs.write_all(b"ping").unwrap();
            let got = time::timeout(
                Duration::from_secs(5),
                other.recv(regio_runtime::pool().try_acquire().unwrap()),
            )
            .await;
            let (n, _) = got.expect("a receive on another socket was stalled");
            assert_eq!(n.unwrap(), 4);
            time::timeout(Duration::from_secs(5), regio_runtime::nop())
                .await
                .expect("a nop was stalled")
                .unwrap();
            for send in &sends {
                send.abort();
            }
            for send in sends {
                let _ = send.await;
            }
            (stalled, theirs)
        }));
        let peers = peers.unwrap();
        common::eventually_pool_full(&pool, "every buffer is back");
        drop(peers);
        rt.shutdown(Duration::from_secs(5));
    });
}

// ---- Cancellation stress ---------------------------------------------------------------------

/// 1 if a timeout fired (its operation was dropped), else 0.
fn gone<T>(raced: Result<T, time::Elapsed>) -> usize {
    usize::from(raced.is_err())
}

/// Attempted: the cancellation stress over every kind of operation at once, on both
/// workers: 3000 operations (datagram receives, accepts with connections arriving now and
/// then, connects to a blackholed address, zero-copy sends, exact receives, file reads and
/// writes), each raced against a pseudo-random timeout or its task aborted, some completing.
/// Afterwards every buffer is in the pool and no descriptor is left open.
#[test]
fn cancellation_stress_over_every_operation() {
    attack(|rt| {
        let (hole, hole_addr, filled) = blackhole();
        let tasks: Vec<_> = (0..2u32)
            .map(|worker| {
                rt.spawn(async move {
                    let pool = regio_runtime::pool();
                    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                    let udp_addr = udp.local_addr().unwrap();
                    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    let listener = regio_runtime::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let listen_addr = listener.local_addr().unwrap();
                    let (stream, mut peer) = tcp_pair().await;
                    let file = fs::File::from_std(tempfile());
                    let mut clients = Vec::new();
                    let mut dropped = 0;
                    for i in 0..1500u32 {
                        let n = i.wrapping_mul(2_654_435_761) ^ worker;
                        let wait = Duration::from_micros(u64::from(n % 300));
                        match n % 7 {
                            0 => {
                                if n % 3 == 0 {
                                    sender.send_to(&i.to_le_bytes(), udp_addr).unwrap();
                                }
                                let buf = pool.acquire().await;
                                dropped += gone(time::timeout(wait, udp.recv_from(buf)).await);
                            }
                            1 => {
                                if n % 3 == 0 {
                                    clients.push(std::net::TcpStream::connect(listen_addr));
                                }
                                dropped += gone(time::timeout(wait, listener.accept()).await);
                            }
                            2 => {
                                dropped +=
                                    gone(time::timeout(wait, TcpStream::connect(hole_addr)).await);
                            }
                            3 => {
                                let buf = pool.acquire().await;
                                dropped += gone(time::timeout(wait, stream.send_zc(buf)).await);
                            }
                            4 => {
                                if n % 2 == 0 {
                                    let _ = peer.write(&[1u8; 1000]);
                                }
                                let buf = pool.acquire().await;
                                dropped += gone(time::timeout(wait, stream.recv_exact(buf)).await);
                            }
                            5 => {
                                let buf = pool.acquire().await;
                                let pos = u64::from(n % 8) * 4096;
                                if n % 2 == 0 {
                                    dropped +=
                                        gone(time::timeout(wait, file.write_at(buf, pos)).await);
                                } else {
                                    dropped +=
                                        gone(time::timeout(wait, file.read_at(buf, pos)).await);
                                }
                            }
                            _ => {
                                let buf = pool.acquire().await;
                                let op = spawn(async move {
                                    let (s, p) = tcp_pair().await;
                                    let _ = s.recv(buf).await;
                                    drop(p);
                                });
                                regio_runtime::nop().await.unwrap();
                                op.abort();
                                let _ = op.await;
                            }
                        }
                        if clients.len() > 16 {
                            clients.clear();
                        }
                        // Drain what the peer was sent, so sends keep going.
                        peer.set_nonblocking(true).unwrap();
                        let mut sink = [0u8; 65536];
                        while peer.read(&mut sink).is_ok_and(|n| n > 0) {}
                        peer.set_nonblocking(false).unwrap();
                    }
                    common::reset_on_close(&peer);
                    dropped
                })
            })
            .collect();
        let dropped: usize = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).sum();
        assert!(
            dropped > 300,
            "only {dropped} operations were dropped by their timeouts"
        );
        drop((hole, filled));
    });
}

// ---- Hostile configuration -------------------------------------------------------------------

/// Attempted: hostile builder arguments (no workers, empty or absurd pool classes, queue sizes
/// of 0 and `u32::MAX`, a `Duration::MAX` spin, an SQPOLL idle of `Duration::MAX`). Each is
/// refused with a `BuildError`, or makes a runtime that works; none panics or aborts.
#[test]
fn hostile_builder_arguments_are_refused_or_work() {
    let _serial = common::serial();
    let cases: Vec<(&str, regio_runtime::Builder)> = vec![
        ("no workers", common::builder(0)),
        (
            "a class of empty buffers",
            common::builder(1).pool_class(0, 4),
        ),
        (
            "a class of no buffers",
            regio_runtime::Builder::new()
                .worker_threads(1)
                .pool_class(4096, 0),
        ),
        (
            "a 4 GiB buffer class",
            regio_runtime::Builder::new()
                .worker_threads(1)
                .pool_class(u32::MAX, 1),
        ),
        (
            "u32::MAX buffers",
            regio_runtime::Builder::new()
                .worker_threads(1)
                .pool_class(4096, u32::MAX),
        ),
        ("no SQ", common::builder(1).sq_entries(0)),
        ("a huge SQ", common::builder(1).sq_entries(u32::MAX)),
        ("a huge CQ", common::builder(1).cq_entries(u32::MAX)),
        (
            "a CQ below the SQ",
            common::builder(1).sq_entries(256).cq_entries(4),
        ),
        ("no file table", common::builder(1).max_files(0)),
        ("a huge file table", common::builder(1).max_files(u32::MAX)),
        (
            "a huge pool cache",
            common::builder(1).pool_cache(usize::MAX),
        ),
        (
            "a spin of Duration::MAX",
            common::builder(1).spin_before_park(Duration::MAX),
        ),
        (
            "an SQPOLL idle of Duration::MAX",
            common::builder(1).ring_mode(RingMode::SqPoll {
                idle: Duration::MAX,
                cpu: Some(u32::MAX),
            }),
        ),
    ];
    for (what, builder) in cases {
        let built = regio_testkit::within(LIMIT, what, move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match builder.build() {
                Ok(rt) => {
                    let out = rt.block_on(rt.spawn(async { regio_runtime::nop().await }));
                    rt.shutdown(Duration::from_secs(5));
                    format!("built, nop: {out:?}")
                }
                Err(e) => format!("refused: {e}"),
            }))
        });
        match built {
            Ok(outcome) => println!("{what}: {outcome}"),
            Err(_) => panic!("{what}: the build panicked"),
        }
    }
}

// ---- Hostile wakers --------------------------------------------------------------------------

/// A waker that panics when woken.
struct Bomb;

impl std::task::Wake for Bomb {
    fn wake(self: Arc<Self>) {
        panic!("a hostile waker");
    }
}

/// Caught: a task may poll a regio future (or a join handle) with a waker of its own (a
/// hand-made combinator); the worker wakes it from its loop, outside the task's poll, when the
/// timer fires, the operation completes or the joined task finishes. A waker that panicked
/// there unwound the worker loop: the worker shut down and took every other task on it along
/// (cancelled). The worker now contains such a panic (it is logged) and goes on.
#[test]
fn a_panicking_waker_does_not_take_its_worker_down() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        let Some(rt) = common::runtime(1) else { return };
        let bystander = rt.spawn(async {
            time::sleep(Duration::from_millis(100)).await;
            7
        });
        let hostile = rt.spawn(async {
            let mut sleep = Box::pin(time::sleep(Duration::from_millis(5)));
            let mut nop = Box::pin(regio_runtime::nop());
            let mut joined = spawn(time::sleep(Duration::from_millis(5)));
            {
                let bomb = Waker::from(Arc::new(Bomb));
                let mut cx = std::task::Context::from_waker(&bomb);
                assert!(sleep.as_mut().poll(&mut cx).is_pending());
                assert!(nop.as_mut().poll(&mut cx).is_pending());
                assert!(std::pin::Pin::new(&mut joined).poll(&mut cx).is_pending());
            }
            // Both fire or complete meanwhile, and their wakers are woken by the worker.
            time::sleep(Duration::from_millis(20)).await;
            drop((sleep, nop, joined));
        });
        rt.block_on(hostile).unwrap();
        assert_eq!(
            rt.block_on(bystander).unwrap(),
            7,
            "the bystander was cancelled"
        );
        assert_eq!(rt.block_on(rt.spawn(async { 8 })).unwrap(), 8);
        rt.shutdown(Duration::from_secs(5));
    });
}

/// Attempted: sockets and files that outlive their runtime (used on its workers, the runtime
/// shut down, then dropped on a plain thread, or used again by another runtime: refused with
/// `EXDEV`). Every descriptor closes and every buffer comes back.
#[test]
fn sockets_and_files_that_outlive_their_runtime_close() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the attack", || {
        let Some(b) = common::runtime(1) else { return };
        b.block_on(b.spawn(async { regio_runtime::nop().await }))
            .unwrap()
            .unwrap();
        // Before the first runtime: its rings close too, once nothing holds them.
        let fds = common::open_fds();
        let Some(a) = common::runtime(2) else { return };
        let pool = a.pool().clone();
        let (stream, theirs, file) = a
            .block_on(a.spawn(async {
                let (ours, mut theirs) = tcp_pair().await;
                let pool = regio_runtime::pool();
                let (sent, _) = ours.send_all(common::message(&pool, b"once")).await;
                sent.unwrap();
                let mut got = [0; 4];
                theirs.read_exact(&mut got).unwrap();
                let file = fs::File::from_std(tempfile());
                let (n, _) = file.write_at(common::message(&pool, b"data"), 0).await;
                n.unwrap();
                (ours, theirs, file)
            }))
            .unwrap();
        a.shutdown(Duration::from_secs(5));
        let (stream, file) = b
            .block_on(b.spawn(async move {
                let pool = regio_runtime::pool();
                let (sent, _) = stream.send(common::message(&pool, b"again")).await;
                assert_eq!(sent.unwrap_err().raw_os_error(), Some(libc::EXDEV));
                let (n, _) = file.read_at(common::message(&pool, b"...."), 0).await;
                assert_eq!(n.unwrap_err().raw_os_error(), Some(libc::EXDEV));
                (stream, file)
            }))
            .unwrap();
        drop((stream, theirs, file));
        common::eventually_pool_full(&pool, "every buffer of the first runtime is back");
        common::eventually("every descriptor is closed", || common::open_fds() <= fds);
        b.shutdown(Duration::from_secs(5));
    });
}

const RESPAWN_CHILD: &str = "a_task_that_respawns_itself_when_dropped_child";

/// Caught: a task whose destructor spawns its own replacement (a supervisor guard that
/// restarts a worker task when dropped) made shutdown recurse without end: the spawn is
/// refused once the runtime closes, and a refused task is dropped at once, in the spawner's
/// stack, which spawns again. The process died of a stack overflow. A refused spawn made
/// while the same thread is already dropping refused tasks now queues its task, and the first
/// refusal drops them one after the other (a chain of a million is cut: the rest is leaked,
/// with an error, rather than dropped for ever). Runs in a child process (the overflow is
/// fatal).
#[test]
fn a_task_that_respawns_itself_when_dropped_does_not_overflow_at_shutdown() {
    let _serial = common::serial();
    common::run_child_test(RESPAWN_CHILD);
}

/// Spawns a task holding a `Respawn` of one less when dropped, until 0.
struct Respawn(u32);

impl Drop for Respawn {
    fn drop(&mut self) {
        if self.0 == 0 {
            return;
        }
        let guard = Respawn(self.0 - 1);
        drop(spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }));
    }
}

/// The child of the test above.
#[test]
#[ignore = "run by a_task_that_respawns_itself_when_dropped_does_not_overflow_at_shutdown"]
fn a_task_that_respawns_itself_when_dropped_child() {
    let Some(rt) = common::runtime(1) else { return };
    rt.block_on(rt.spawn(async {
        drop(spawn(async {
            // A chain far deeper than a stack holds, and ends (nothing leaks).
            let _guard = Respawn(100_000);
            std::future::pending::<()>().await;
        }));
        regio_runtime::nop().await.unwrap();
    }))
    .unwrap();
    rt.shutdown(Duration::from_secs(5));
}
