//! Regions of the program's own memory, registered with the rings and sent without a copy:
//! what arrives, the ranges refused, sockets without zero-copy sends, the lease a send holds
//! until its final completion, and a registration refused for the memlock limit.

mod common;

use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regio_runtime::net::{TcpListener, TcpStream, UnixStream};
use regio_runtime::region::{Region, RegionError};
use regio_runtime::{BuildError, Runtime};

const CHILD_ENV: &str = "REGIO_REGION_MEMLOCK_CHILD";

fn runtime() -> Option<Runtime> {
    regio_testkit::ok_or_skip(
        Runtime::builder()
            .worker_threads(1)
            .pool_class(4096, 16)
            .build(),
        BuildError::is_io_uring_disabled,
    )
}

fn image(len: usize) -> Arc<Box<[u8]>> {
    Arc::new((0..len).map(|i| (i * 7 % 253) as u8).collect())
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[test]
fn a_range_arrives_as_it_is_in_memory_and_bad_ranges_are_refused() {
    let Some(rt) = runtime() else { return };
    let image = image(1 << 20);
    let got = rt.block_on(async {
        let region = Region::register(Arc::clone(&image)).unwrap();
        assert_eq!(region.len(), 1 << 20);
        let (client, server) = pair().await;
        for (offset, len) in [(1 << 20, 1), (usize::MAX, 2), (1000, usize::MAX)] {
            assert!(
                matches!(
                    server.send_region(&region, offset, len),
                    Err(RegionError::OutOfRange { size, .. }) if size == 1 << 20
                ),
                "{offset}+{len}"
            );
        }
        // The client reads meanwhile: the socket buffers hold less than the region.
        let reader = regio_runtime::spawn(async move {
            let (got, buf) = client.recv_exact(vec![0; 1 << 20]).await;
            got.unwrap();
            buf
        });
        // Nothing for an empty range, and the whole region at once.
        let empty = server.send_region(&region, 1 << 20, 0).unwrap();
        empty.await.unwrap();
        let whole = server.send_region(&region, 0, 1 << 20).unwrap();
        whole.await.unwrap();
        reader.await.unwrap()
    });
    assert!(got == image[..], "the bytes differ");
}

#[test]
fn empty_memory_and_no_runtime_are_refused() {
    assert!(matches!(
        Region::register(image(16)),
        Err(RegionError::NoRuntime)
    ));
    let Some(rt) = runtime() else { return };
    rt.block_on(async {
        assert!(matches!(
            Region::register(image(0)),
            Err(RegionError::Empty)
        ));
    });
}

#[test]
fn a_unix_socket_refuses_zero_copy_sends_and_nothing_is_sent() {
    let Some(rt) = runtime() else { return };
    let image = image(65536);
    rt.block_on(async {
        let region = Region::register(Arc::clone(&image)).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let err = a.send_region(&region, 0, 65536).unwrap().await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
    });
}

/// Waits (a bounded loop, nothing timed) until only the test holds `image`.
fn wait_for_release(image: &Arc<Box<[u8]>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Arc::strong_count(image) > 1 {
        assert!(
            Instant::now() < deadline,
            "the region still holds its memory"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Far more than the socket buffers hold: a send of it waits for a reader that never comes.
const STUCK_LEN: usize = 64 << 20;

/// A send of the whole of `image` (registered as a region on `rt`), zero-copy or copied, to a
/// client that reads only its first byte: returns the client, the region and the send's task,
/// with the send under way.
fn stuck_send(
    rt: &Runtime,
    image: &Arc<Box<[u8]>>,
    zero_copy: bool,
) -> (
    std::net::TcpStream,
    Region,
    regio_runtime::JoinHandle<std::io::Result<()>>,
) {
    let (std_client, std_server) = regio_testkit::loopback();
    let server = TcpStream::from_std(std_server).unwrap();
    let region = rt.block_on(async { Region::register(Arc::clone(image)).unwrap() });
    let len = image.len();
    let send = rt.spawn({
        let region = region.clone();
        async move {
            let send = if zero_copy {
                server.send_region(&region, 0, len)
            } else {
                server.send_region_copied(&region, 0, len)
            };
            send.unwrap().await
        }
    });
    // Wait until the send is under way: the first bytes reach the client.
    let mut first = [0; 1];
    let mut reader = &std_client;
    reader.read_exact(&mut first).unwrap();
    assert_eq!(first[0], image[0]);
    (std_client, region, send)
}

#[test]
fn a_send_in_flight_keeps_the_region_and_its_memory_until_its_final_completion() {
    let Some(rt) = runtime() else { return };
    let image = image(STUCK_LEN);
    let (std_client, region, send) = stuck_send(&rt, &image, true);
    drop(region);
    // The send's lease keeps the registration and the memory.
    assert_eq!(Arc::strong_count(&image), 2);
    // Aborting the task cancels the send, but the bytes it queued stay with the kernel (and
    // the lease with the send) until the connection lets them go: here, until the client
    // closes. Then the final completion releases everything.
    send.abort();
    assert!(rt.block_on(send).is_err());
    assert_eq!(Arc::strong_count(&image), 2);
    drop(std_client);
    wait_for_release(&image);
}

#[test]
fn a_client_that_reads_everything_releases_the_region_at_once() {
    let Some(rt) = runtime() else { return };
    let image = image(4 << 20);
    let got = rt.block_on(async {
        let region = Region::register(Arc::clone(&image)).unwrap();
        let (client, server) = pair().await;
        let reader = regio_runtime::spawn(async move {
            let (got, buf) = client.recv_exact(vec![0; 4 << 20]).await;
            got.unwrap();
            buf
        });
        server
            .send_region(&region, 0, 4 << 20)
            .unwrap()
            .await
            .unwrap();
        drop(region);
        reader.await.unwrap()
    });
    assert!(got == image[..]);
    wait_for_release(&image);
}

fn child() {
    regio_testkit::limit_memlock(64 * 1024).expect("dropping CAP_IPC_LOCK and lowering the limit");
    let rt = Runtime::builder()
        .worker_threads(1)
        .pool_class(4096, 4)
        .build()
        .expect("a runtime whose pool fits in 64 KiB");
    let err = rt
        .block_on(async { Region::register(image(8 << 20)) })
        .expect_err("8 MiB cannot be pinned under a 64 KiB limit");
    assert!(
        matches!(
            &err,
            RegionError::Register {
                source: regio_adapters::Error::MemlockTooLow { .. },
                ..
            }
        ),
        "{err:?}"
    );
    println!("CHILD-ERROR: {err}");
}

#[test]
fn a_registration_past_the_memlock_limit_is_a_clear_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    if runtime().is_none() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_registration_past_the_memlock_limit_is_a_clear_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CHILD-ERROR: registering a region"),
        "{stdout}"
    );
}

#[test]
fn a_region_may_outlive_its_runtime() {
    let Some(rt) = runtime() else { return };
    let image = image(1 << 20);
    let region = rt.block_on(async { Region::register(Arc::clone(&image)).unwrap() });
    // The region does not keep the rings open: they close with the runtime, taking the
    // registration with them; the region then only releases its memory.
    rt.shutdown(Duration::from_secs(5));
    assert_eq!(region.len(), 1 << 20);
    drop(region);
    assert_eq!(Arc::strong_count(&image), 1);
}

/// With two adapters, a region is registered on both, and a socket of each sends from the
/// registration of its own adapter.
#[test]
fn sockets_of_two_adapters_send_from_one_region() {
    let Some(rt) = common::build(common::two_interrupt_adapters(common::builder(1))) else {
        return;
    };
    let image = image(256 << 10);
    let region = rt.block_on(async { Region::register(Arc::clone(&image)).unwrap() });
    let completions = |adapter: usize| -> u64 {
        rt.ring_stats()
            .iter()
            .filter(|r| r.adapter == adapter)
            .map(|r| r.completions)
            .sum()
    };
    for adapter in 0..2 {
        let before = completions(adapter);
        let (region, len) = (region.clone(), image.len());
        let got = rt
            .block_on(rt.spawn(rt.adapter(adapter).unwrap().scope(async move {
                let (client, server) = pair().await;
                let reader = regio_runtime::spawn(async move {
                    let (got, buf) = client.recv_exact(vec![0; len]).await;
                    got.unwrap();
                    buf
                });
                server.send_region(&region, 0, len).unwrap().await.unwrap();
                reader.await.unwrap()
            })))
            .unwrap();
        assert!(got == image[..], "adapter {adapter}: the bytes differ");
        // At least the send's result and its notification.
        assert!(
            completions(adapter) >= before + 2,
            "adapter {adapter} did not carry the send"
        );
    }
}

/// `send_region_copied` refuses ranges outside the region at once (past its end, overflowing),
/// resolves an empty range (at the very end too) without sending, and sends a range of 16 MiB
/// (far more than the socket buffers hold: many short sends, each followed by one of the rest)
/// as it is in memory, over TCP and a Unix socket (which has no zero-copy sends, but copied
/// ones); then the region lets go of its memory.
#[test]
fn copied_sends_refuse_bad_ranges_and_send_what_is_in_memory_over_tcp_and_unix() {
    let Some(rt) = runtime() else { return };
    let len = 16 << 20;
    let image = image(len);
    rt.block_on(async {
        let region = Region::register(Arc::clone(&image)).unwrap();
        let (mut client, server) = pair().await;
        let (mut unix_client, unix_server) = UnixStream::pair().unwrap();
        for (offset, len) in [(len + 1, 0), (len, 1), (usize::MAX, 2), (1000, usize::MAX)] {
            for refused in [
                server.send_region_copied(&region, offset, len),
                unix_server.send_region_copied(&region, offset, len),
            ] {
                assert!(
                    matches!(
                        refused,
                        Err(RegionError::OutOfRange { size, .. }) if size == 16 << 20
                    ),
                    "{offset}+{len}"
                );
            }
        }
        for (offset, count) in [(0, len), (12_345, len - 12_345 - 7)] {
            let tcp_reader = regio_runtime::spawn(async move {
                let (got, buf) = client.recv_exact(vec![0; count]).await;
                got.unwrap();
                (client, buf)
            });
            let unix_reader = regio_runtime::spawn(async move {
                let (got, buf) = unix_client.recv_exact(vec![0; count]).await;
                got.unwrap();
                (unix_client, buf)
            });
            for empty in [0, len] {
                server
                    .send_region_copied(&region, empty, 0)
                    .unwrap()
                    .await
                    .unwrap();
                unix_server
                    .send_region_copied(&region, empty, 0)
                    .unwrap()
                    .await
                    .unwrap();
            }
            let sends = (
                server.send_region_copied(&region, offset, count).unwrap(),
                unix_server
                    .send_region_copied(&region, offset, count)
                    .unwrap(),
            );
            sends.0.await.unwrap();
            sends.1.await.unwrap();
            let (tcp, got) = tcp_reader.await.unwrap();
            assert!(got == image[offset..offset + count], "TCP {offset}+{count}");
            let (unix, got) = unix_reader.await.unwrap();
            assert!(
                got == image[offset..offset + count],
                "Unix {offset}+{count}"
            );
            (client, unix_client) = (tcp, unix);
        }
        drop(region);
    });
    wait_for_release(&image);
}

/// A copied send of far more than the socket buffers hold, whose task is aborted while it waits
/// for room (its future dropped mid-send): the send keeps its lease on the region until its
/// completion, which the cancellation brings without waiting for the client (a copied send
/// leaves no pages with the kernel); what the client got is a prefix of the region.
#[test]
fn a_copied_send_dropped_mid_send_keeps_its_lease_until_its_completion() {
    let Some(rt) = runtime() else { return };
    let len = 64 << 20;
    let image = image(len);
    let (std_client, std_server) = regio_testkit::loopback();
    let server = TcpStream::from_std(std_server).unwrap();
    let region = rt.block_on(async { Region::register(Arc::clone(&image)).unwrap() });
    let send = rt.spawn({
        let region = region.clone();
        async move { server.send_region_copied(&region, 0, len).unwrap().await }
    });
    let mut first = vec![0; 4096];
    let mut reader = &std_client;
    reader.read_exact(&mut first).unwrap();
    assert!(first == image[..4096]);
    drop(region);
    // The send in flight holds the registration and the memory.
    assert_eq!(Arc::strong_count(&image), 2);
    send.abort();
    assert!(rt.block_on(send).is_err());
    // The client is still connected, reading nothing: the cancelled send completed anyway.
    wait_for_release(&image);
    std_client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std_client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        rest == image[4096..4096 + rest.len()],
        "the bytes after the first 4 KiB are the region's"
    );
}

/// A peer that resets its connection while a copied send of far more than the socket buffers
/// hold waits for room: the send fails (the reset, or a broken pipe), the region's memory is
/// released, and the runtime goes on.
#[test]
fn a_peer_that_resets_mid_copied_send_fails_it_and_releases_the_region() {
    let Some(rt) = runtime() else { return };
    let image = image(STUCK_LEN);
    let (std_client, region, send) = stuck_send(&rt, &image, false);
    drop(region);
    common::reset_on_close(&std_client);
    drop(std_client);
    let err = rt.block_on(send).unwrap().unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ECONNRESET) | Some(libc::EPIPE)
        ),
        "{err}"
    );
    wait_for_release(&image);
    let again = rt.block_on(async {
        let region = Region::register(Arc::clone(&image)).unwrap();
        let (client, server) = pair().await;
        server
            .send_region_copied(&region, 5, 3)
            .unwrap()
            .await
            .unwrap();
        let (got, buf) = client.recv_exact(vec![0; 3]).await;
        got.unwrap();
        buf
    });
    assert_eq!(again, image[5..8]);
    wait_for_release(&image);
}
