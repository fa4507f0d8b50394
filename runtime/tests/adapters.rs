//! Runtimes with several adapters: each carries its own I/O in its own mode, a sleeping worker
//! wakes for a completion on any of its rings, bad settings are typed errors, and a shutdown
//! with operations in flight on every adapter gives back every buffer and descriptor.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regio_runtime::net::{TcpListener, TcpStream};
use regio_runtime::{fs, AdapterError, AdapterSpec, BuildError, Builder, RingMode, Runtime};
use regio_testkit::TempFile;

const LIMIT: Duration = Duration::from_secs(60);

fn sqpoll() -> AdapterSpec {
    AdapterSpec::new().sqpoll(Duration::from_millis(10))
}

/// On the current adapter: `rounds` echoes of 300 bytes over a loopback TCP connection (the
/// server a task of its own), then `file` read whole and at a position. Returns the adapter
/// it ran on and the bytes echoed.
async fn traffic(rounds: u8, file: PathBuf) -> std::io::Result<(usize, usize)> {
    let adapter = regio_runtime::current_adapter();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = regio_runtime::spawn(async move {
        assert_eq!(
            regio_runtime::current_adapter(),
            adapter,
            "the task inherits"
        );
        let (stream, _) = listener.accept().await?;
        let mut total = 0;
        loop {
            let (n, mut msg) = stream.recv(regio_runtime::pool().acquire().await).await;
            let n = n?;
            if n == 0 {
                return Ok::<_, std::io::Error>(total);
            }
            total += n;
            msg.descriptor_mut().truncate(n);
            stream.send_all(msg).await.0?;
        }
    });
    let client = TcpStream::connect(addr).await?;
    for i in 0..rounds {
        let msg = common::message(&regio_runtime::pool(), &[i; 300]);
        let (sent, msg) = client.send_all(msg).await;
        sent?;
        let (got, msg) = client.recv_exact(msg).await;
        got?;
        assert_eq!(msg.as_slice()[..300], [i; 300]);
    }
    drop(client);
    let echoed = server.await.expect("the echo server")?;
    let whole = fs::read(&file).await?;
    assert_eq!(
        whole,
        (0..whole.len())
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
    );
    let opened = fs::File::open(&file)?;
    let (n, msg) = opened
        .read_at(regio_runtime::pool().acquire().await, 1000)
        .await;
    let n = n?;
    assert!(n > 0);
    assert_eq!(msg.as_slice()[..n], whole[1000..1000 + n]);
    Ok((regio_runtime::current_adapter(), echoed))
}

/// Two adapters in different modes carry TCP echoes and file reads at once, each its own:
/// its rings reap what its tasks started.
#[test]
fn two_adapters_in_different_modes_carry_io_at_the_same_time() {
    let _serial = common::serial();
    for (first, second, second_mode) in [
        (
            sqpoll(),
            AdapterSpec::new().interrupt(),
            RingMode::Interrupt,
        ),
        (
            AdapterSpec::new().interrupt(),
            AdapterSpec::new().single_issuer(),
            RingMode::SingleIssuer,
        ),
    ] {
        regio_testkit::within(LIMIT, "the test", move || {
            let builder = common::builder(2).adapter(first).adapter(second);
            let Some(rt) = common::build(builder) else {
                return;
            };
            let modes = rt.adapter_modes();
            // SQPOLL falls back to interrupt-driven rings where the kernel refuses it.
            println!("adapter modes: {modes:?}");
            assert_eq!(modes[1], second_mode);
            let file = TempFile::pattern("adapters", 64 * 1024);
            let fds = common::open_fds_after_warm_up(&rt);
            let (few, many) = (5u8, 60u8);
            let a = rt.spawn(
                rt.adapter(0)
                    .unwrap()
                    .scope(traffic(few, file.path().to_owned())),
            );
            let b = rt.spawn(
                rt.adapter(1)
                    .unwrap()
                    .scope(traffic(many, file.path().to_owned())),
            );
            let (a, b) = rt.block_on(async { (a.await.unwrap(), b.await.unwrap()) });
            assert_eq!(a.unwrap(), (0, 300 * usize::from(few)));
            assert_eq!(b.unwrap(), (1, 300 * usize::from(many)));
            // Each echo round is at least four operations (a send and a receive on each side),
            // so adapter 1 reaped at least 4 * 60; adapter 0, with 5 rounds, far fewer.
            let (on_first, on_second) = (
                common::completions_on(&rt, 0),
                common::completions_on(&rt, 1),
            );
            assert!(
                on_second >= 4 * u64::from(many) && on_first < on_second,
                "completions: {on_first} on adapter 0, {on_second} on adapter 1: {:?}",
                rt.ring_stats()
            );
            for ring in rt.ring_stats() {
                assert!(ring.ring.completed >= ring.completions, "{ring:?}");
            }
            let summed: u64 = rt.stats().iter().map(|w| w.completions).sum();
            assert!(summed >= on_first + on_second);
            common::eventually_pool_full(rt.pool(), "every buffer is back");
            common::assert_clean(&rt, fds);
            rt.shutdown(Duration::from_secs(5));
        });
    }
}

/// A worker asleep with a receive in flight on its second adapter wakes for that receive's
/// completion, with no other thread ringing it: it sleeps on the eventfds of all its rings.
#[test]
fn a_sleeping_worker_wakes_on_a_completion_on_its_second_adapter() {
    let _serial = common::serial();
    for second in [
        AdapterSpec::new().interrupt(),
        sqpoll(),
        AdapterSpec::new().single_issuer(),
    ] {
        regio_testkit::within(LIMIT, "the test", move || {
            let builder = common::builder(1)
                .spin_before_park(Duration::ZERO)
                .adapter(AdapterSpec::new().interrupt())
                .adapter(second.clone());
            let Some(rt) = common::build(builder) else {
                return;
            };
            let rt = Arc::new(rt);
            let (theirs, ours) = regio_testkit::loopback();
            let ours = TcpStream::from_std(ours).unwrap();
            // The worker's park count just before the receive starts (MAX: not yet).
            let parks_before = Arc::new(AtomicU64::new(u64::MAX));
            let task = {
                let (rt2, mark) = (Arc::clone(&rt), Arc::clone(&parks_before));
                rt.spawn(rt.adapter(1).unwrap().scope(async move {
                    let buf = regio_runtime::pool().acquire().await;
                    // SeqCst: a test flag; the order against the other atomics is not at stake.
                    mark.store(rt2.stats()[0].parks, Ordering::SeqCst);
                    drop(rt2);
                    let (n, msg) = ours.recv(buf).await;
                    msg.as_slice()[..n.unwrap()].to_vec()
                }))
            };
            // The receive is started in the poll that read the count, and submitted at the
            // end of that loop turn: a later park sleeps with it in flight.
            common::eventually("the worker sleeps with the receive in flight", || {
                // SeqCst: as above.
                let mark = parks_before.load(Ordering::SeqCst);
                mark != u64::MAX && rt.stats()[0].parks > mark
            });
            let signals = rt.stats()[0].wakeup_signals;
            (&theirs).write_all(b"wake").unwrap();
            let got = regio_testkit::block_on(task).unwrap();
            assert_eq!(got, b"wake", "{second:?}");
            assert_eq!(
                rt.stats()[0].wakeup_signals,
                signals,
                "{second:?}: another thread rang the worker; the completion did not wake it"
            );
            assert!(common::completions_on(&rt, 1) >= 1);
            Arc::try_unwrap(rt)
                .expect("the task has let go of the runtime")
                .shutdown(Duration::from_secs(5));
        });
    }
}

/// Settings no adapter can have are typed build errors, found before any ring is set up.
#[test]
fn zero_adapters_and_invalid_specs_are_typed_build_errors() {
    let refused = |builder: Builder| builder.build().expect_err("the build must be refused");
    assert!(matches!(
        refused(common::builder(1).adapters([])),
        BuildError::NoAdapters
    ));
    assert!(matches!(
        refused(
            common::builder(1)
                .adapter(AdapterSpec::new())
                .adapter(AdapterSpec::new().cq_entries(1))
        ),
        BuildError::InvalidAdapter { adapter: 1, .. }
    ));
    assert!(matches!(
        refused(common::builder(1).adapter(AdapterSpec::new().interrupt().sqpoll_cpu(0))),
        BuildError::InvalidAdapter { adapter: 0, .. }
    ));
    assert!(matches!(
        refused(common::builder(1).adapter(AdapterSpec::new().sqpoll_cpu(0))),
        BuildError::InvalidAdapter { adapter: 0, .. }
    ));
    assert!(matches!(
        refused(
            common::builder(1)
                .adapter(AdapterSpec::new())
                .adapter(sqpoll().sqpoll_cpu(u32::MAX))
        ),
        BuildError::InvalidAdapter { adapter: 1, .. }
    ));
    assert!(matches!(
        refused(common::builder(1).ring_mode(RingMode::SqPoll {
            idle: Duration::from_millis(10),
            cpu: Some(u32::MAX),
        })),
        BuildError::InvalidAdapter { adapter: 0, .. }
    ));
    assert!(matches!(
        refused(common::builder(1).adapters(std::iter::repeat_n(
            AdapterSpec::new(),
            regio_runtime::MAX_ADAPTERS + 1
        ))),
        BuildError::Invalid(_)
    ));
}

/// An adapter the runtime does not have: a typed error from `Runtime::adapter` and
/// `regio_runtime::adapter`, and `ENODEV` for the operations of a scope that names one (their
/// buffers come back).
#[test]
fn a_missing_adapter_is_an_error_not_a_panic() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the test", || {
        let (Some(two), Some(one)) = (
            common::build(
                common::builder(1)
                    .adapter(AdapterSpec::new())
                    .adapter(AdapterSpec::new()),
            ),
            common::runtime(1),
        ) else {
            return;
        };
        assert_eq!(
            two.adapter(2),
            Err(AdapterError::OutOfRange { index: 2, count: 2 })
        );
        assert_eq!(regio_runtime::adapter(0), Err(AdapterError::NoRuntime));
        assert_eq!(
            two.block_on(async { regio_runtime::adapter(1).map(|a| a.index()) }),
            Ok(1)
        );
        assert_eq!(
            one.block_on(async { regio_runtime::adapter(1) }),
            Err(AdapterError::OutOfRange { index: 1, count: 1 })
        );
        let absent = two.adapter(1).unwrap();
        let nop = one.block_on(one.spawn(absent.scope(regio_runtime::nop())));
        assert_eq!(nop.unwrap().unwrap_err().raw_os_error(), Some(libc::ENODEV));
        let file = TempFile::pattern("adapters-missing", 4096);
        let path = file.path().to_owned();
        let read = one.block_on(one.spawn(absent.scope(async move {
            let opened = fs::File::open(&path)?;
            let (n, msg) = opened
                .read_at(regio_runtime::pool().acquire().await, 0)
                .await;
            drop(msg);
            n
        })));
        assert_eq!(
            read.unwrap().unwrap_err().raw_os_error(),
            Some(libc::ENODEV)
        );
        common::eventually_pool_full(one.pool(), "the refused buffer is back");
        one.shutdown(Duration::from_secs(5));
        two.shutdown(Duration::from_secs(5));
    });
}

/// A shutdown while receives wait on every adapter (SQPOLL, interrupt-driven, single-issuer)
/// cancels them all: every buffer is back in the pool, every worker and ring descriptor closed.
#[test]
fn shutdown_with_operations_in_flight_on_every_adapter_leaves_nothing_behind() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the test", || {
        let builder = || {
            common::builder(2)
                .adapter(sqpoll())
                .adapter(AdapterSpec::new().interrupt())
                .adapter(AdapterSpec::new().single_issuer())
        };
        // A first runtime makes whatever the process sets up once.
        let Some(warm) = common::build(builder()) else {
            return;
        };
        warm.shutdown(Duration::from_secs(5));
        let fds = common::open_fds();
        let rt = common::build(builder()).expect("built once already");
        let pool = rt.pool().clone();
        let per_adapter = 4;
        let mut peers = Vec::new();
        let mut tasks = Vec::new();
        for adapter in 0..rt.adapters() {
            let on = rt.adapter(adapter).unwrap();
            for _ in 0..per_adapter {
                let (theirs, ours) = regio_testkit::loopback();
                peers.push(theirs);
                let ours = TcpStream::from_std(ours).unwrap();
                tasks.push(rt.spawn(on.scope(async move {
                    let _ = ours.recv(regio_runtime::pool().acquire().await).await;
                })));
            }
        }
        let held = per_adapter * rt.adapters();
        common::eventually("every receive holds its buffer", || {
            pool.available(0) + held <= pool.capacity(0)
        });
        for adapter in 0..rt.adapters() {
            common::eventually("each adapter has its receives", || {
                rt.ring_stats()
                    .iter()
                    .filter(|r| r.adapter == adapter)
                    .map(|r| r.ops_submitted)
                    .sum::<u64>()
                    >= per_adapter as u64
            });
        }
        rt.shutdown(Duration::from_secs(5));
        for task in tasks {
            assert!(regio_testkit::block_on(task).unwrap_err().is_cancelled());
        }
        common::assert_pool_full(&pool);
        drop(peers);
        common::eventually("every descriptor is closed", || common::open_fds() <= fds);
    });
}

/// The operations submitted to adapter `adapter`'s rings so far.
fn submitted_on(rt: &Runtime, adapter: usize) -> u64 {
    rt.ring_stats()
        .iter()
        .filter(|r| r.adapter == adapter)
        .map(|r| r.ops_submitted)
        .sum()
}

/// Scopes nest and unwind to the outer adapter, spawned tasks inherit theirs, and a socket
/// stays on the adapter of its first operation when a task on another adapter uses it.
#[test]
fn the_current_adapter_follows_scopes_spawns_and_a_sockets_first_use() {
    let _serial = common::serial();
    regio_testkit::within(LIMIT, "the test", || {
        let builder = common::builder(1)
            .adapter(AdapterSpec::new())
            .adapter(AdapterSpec::new());
        let Some(rt) = common::build(builder) else {
            return;
        };
        let (zero, one) = (rt.adapter(0).unwrap(), rt.adapter(1).unwrap());
        let (theirs, ours) = regio_testkit::loopback();
        let ours = TcpStream::from_std(ours).unwrap();
        let ours = rt
            .block_on(rt.spawn(one.scope(async move {
                assert_eq!(regio_runtime::current_adapter(), 1);
                let inner = zero.scope(async { regio_runtime::current_adapter() }).await;
                assert_eq!(inner, 0, "the inner scope");
                assert_eq!(regio_runtime::current_adapter(), 1, "back to the outer one");
                let local = regio_runtime::spawn_local(async { regio_runtime::current_adapter() });
                assert_eq!(local.await.unwrap(), 1, "spawn_local inherits");
                let msg = common::message(&regio_runtime::pool(), b"first");
                ours.send_all(msg).await.0.unwrap();
                ours
            })))
            .unwrap();
        assert_eq!(regio_runtime::current_adapter(), 0, "no scope leaks out");
        let before = submitted_on(&rt, 1);
        let sends = 10;
        rt.block_on(rt.spawn(zero.scope(async move {
            for _ in 0..sends {
                let msg = common::message(&regio_runtime::pool(), b"again");
                ours.send_all(msg).await.0.unwrap();
            }
        })))
        .unwrap();
        assert!(
            submitted_on(&rt, 1) >= before + sends,
            "the socket's sends went to adapter 1: {:?}",
            rt.ring_stats()
        );
        let mut got = vec![0u8; 5 + 5 * sends as usize];
        std::io::Read::read_exact(&mut &theirs, &mut got).unwrap();
        assert_eq!(&got[..5], b"first");
        common::eventually_pool_full(rt.pool(), "every buffer is back");
        rt.shutdown(Duration::from_secs(5));
    });
}
