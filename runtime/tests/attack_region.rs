//! Attacks on regions from safe code: registrations that could leak fixed-buffer slots,
//! runtimes dropped under stuck zero-copy sends, and a region sent on another runtime's socket.

mod common;

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::time::Duration;

use regio_runtime::net::TcpStream;
use regio_runtime::region::{Region, RegionError};
use regio_runtime::{BuildError, RingMode, Runtime};

/// Bytes `i * 7 % 253`: never 0xFF, the mark written once the region lets go of the memory.
fn image(len: usize) -> Arc<Box<[u8]>> {
    Arc::new(image_bytes(len).into_boxed_slice())
}

const MARK: u8 = 0xFF;

fn runtime(mode: RingMode) -> Option<Runtime> {
    regio_testkit::ok_or_skip(
        Runtime::builder()
            .worker_threads(1)
            .pool_class(4096, 16)
            .ring_mode(mode)
            .build(),
        BuildError::is_io_uring_disabled,
    )
}

/// Register/drop cycles, many more than the fixed-buffer table has slots, never run out of
/// slots: each dropped region gives its slots back.
#[test]
fn register_drop_cycles_do_not_leak_fixed_buffer_slots() {
    let Some(rt) = runtime(RingMode::Interrupt) else {
        return;
    };
    let image = image(4096);
    for cycle in 0..300 {
        let region = rt.block_on(async { Region::register(Arc::clone(&image)) });
        let region = region.unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        drop(region);
    }
    assert_eq!(Arc::strong_count(&image), 1);
}

/// A single-issuer adapter takes registrations only on the thread that owns its ring: a region
/// registered there (the only worker, inside a task) and dropped anywhere else could not be
/// unregistered, leaking its slot (and its pinned pages) for the life of the runtime. Such an
/// adapter refuses regions (as the docs of `RegionError::Register` promise), so no cycle leaks.
#[test]
fn a_single_issuer_runtime_refuses_regions_rather_than_leak_them() {
    let Some(rt) = runtime(RingMode::SingleIssuer) else {
        return;
    };
    let image = image(4096);
    for cycle in 0..100 {
        let registered = rt
            .block_on(rt.spawn({
                let image = Arc::clone(&image);
                async move { Region::register(image) }
            }))
            .unwrap();
        match registered {
            // Dropped here, off the ring's owner thread.
            Ok(region) => drop(region),
            Err(RegionError::Register {
                source: regio_adapters::Error::NotOwner,
                ..
            }) => {}
            Err(e) => panic!("cycle {cycle}: {e}"),
        }
    }
    assert_eq!(Arc::strong_count(&image), 1);
}

/// Reads `client` until end of file or error (bounded by a generous read timeout) and tells
/// whether any byte read was the mark.
fn drain_seeing_mark(mut client: std::net::TcpStream) -> bool {
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0; 1 << 16];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) if buf[..n].contains(&MARK) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A runtime dropped (and so its rings) while a zero-copy send is stuck behind a peer that does
/// not read: if the region then gave its memory back, the owner could rewrite it while the
/// kernel still holds the bytes the send queued. The bytes the peer reads afterwards must be
/// the region's, never what the owner wrote after getting its memory back.
///
/// The stuck send's lease is leaked on purpose (the ring teardown leaks what the kernel may
/// still read rather than free it), so the test runs in a child process whose leak check is off:
/// under AddressSanitizer the leak would fail the whole test binary.
#[test]
fn a_runtime_dropped_under_a_stuck_send_never_sends_memory_given_back() {
    common::run_child_test_leaking(STUCK_SEND_CHILD);
}

const STUCK_SEND_CHILD: &str = "a_runtime_dropped_under_a_stuck_send_child";

/// The body of [`a_runtime_dropped_under_a_stuck_send_never_sends_memory_given_back`].
#[test]
#[ignore = "run in a child process, with the leak check off, by its parent test"]
fn a_runtime_dropped_under_a_stuck_send_child() {
    for shutdown in [true, false] {
        let Some(rt) = runtime(RingMode::Interrupt) else {
            return;
        };
        let len = 32 << 20;
        let mut image = image(len);
        let (client, server) = regio_testkit::loopback();
        let server = TcpStream::from_std(server).unwrap();
        let region = rt.block_on(async { Region::register(Arc::clone(&image)).unwrap() });
        let _send = rt.spawn({
            let region = region.clone();
            async move { server.send_region(&region, 0, len).unwrap().await }
        });
        let mut first = [0; 1];
        (&client).read_exact(&mut first).unwrap();
        drop(region);
        if shutdown {
            rt.shutdown(Duration::from_millis(200));
        } else {
            drop(rt);
        }
        // If the region let go of the memory, it is the test's again: mark it.
        if let Some(bytes) = Arc::get_mut(&mut image) {
            bytes.fill(MARK);
        }
        assert!(
            !drain_seeing_mark(client),
            "shutdown={shutdown}: the peer got bytes written after the region gave its memory back"
        );
    }
}

/// A region of one runtime sent on a socket of another (of more adapters) fails cleanly and
/// sends nothing; the region stays usable on its own runtime.
#[test]
fn a_region_sent_on_another_runtimes_socket_fails_and_sends_nothing() {
    let Some(a) = runtime(RingMode::Interrupt) else {
        return;
    };
    let Some(b) = common::build(common::two_interrupt_adapters(common::builder(1))) else {
        return;
    };
    let image = image(64 << 10);
    let region = a.block_on(async { Region::register(Arc::clone(&image)).unwrap() });
    for adapter in 0..2 {
        let (client, server) = regio_testkit::loopback();
        let region = region.clone();
        let sent = b
            .block_on(b.spawn(b.adapter(adapter).unwrap().scope(async move {
                let server = TcpStream::from_std(server).unwrap();
                server.send_region(&region, 0, 64 << 10).unwrap().await
            })))
            .unwrap();
        assert!(
            sent.is_err(),
            "adapter {adapter}: a foreign region was sent"
        );
        // The server's socket closed with its task: the client reads its end, and nothing.
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        (&client).read_to_end(&mut got).unwrap();
        assert!(
            got.is_empty(),
            "adapter {adapter}: {} bytes arrived",
            got.len()
        );
    }
    drop(b);
    drop(region);
    drop(a);
    assert_eq!(Arc::strong_count(&image), 1);
}

/// Regions registered and dropped over and over on one task while tasks on both workers send
/// from another region: registration takes the fixed-buffer tables' lock and every ring, and
/// must neither stall the sends nor mix their bytes up.
#[test]
fn registrations_while_other_tasks_send_neither_hang_nor_mix_bytes() {
    let Some(rt) = regio_testkit::ok_or_skip(
        Runtime::builder()
            .worker_threads(2)
            .pool_class(4096, 16)
            .build(),
        BuildError::is_io_uring_disabled,
    ) else {
        return;
    };
    let len = 256 << 10;
    let served = image(len);
    let region = rt.block_on(async { Region::register(Arc::clone(&served)).unwrap() });
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (client, server) = regio_testkit::loopback();
            let region = region.clone();
            let send = rt.spawn(async move {
                let server = TcpStream::from_std(server).unwrap();
                for _ in 0..16 {
                    server.send_region(&region, 0, len).unwrap().await.unwrap();
                }
            });
            let reader = std::thread::spawn(move || {
                client
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let (want, mut got) = (image_bytes(len), vec![0; len]);
                for _ in 0..16 {
                    (&client).read_exact(&mut got).unwrap();
                    assert!(got == want, "the bytes differ");
                }
            });
            (send, reader)
        })
        .collect();
    let churn = rt.spawn(async {
        let other = image(64 << 10);
        for cycle in 0..200 {
            let region = Region::register(Arc::clone(&other));
            drop(region.unwrap_or_else(|e| panic!("cycle {cycle}: {e}")));
        }
    });
    rt.block_on(churn).unwrap();
    for (send, reader) in senders {
        rt.block_on(send).unwrap();
        reader.join().unwrap();
    }
    drop(region);
    drop(rt);
    assert_eq!(Arc::strong_count(&served), 1);
}

fn image_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}
