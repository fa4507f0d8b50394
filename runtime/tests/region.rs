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

#[test]
fn a_send_in_flight_keeps_the_region_and_its_memory_until_its_final_completion() {
    let Some(rt) = runtime() else { return };
    // Far more than the socket buffers hold: the send waits for a reader that never comes.
    let len = 64 << 20;
    let image = image(len);
    let (std_client, std_server) = regio_testkit::loopback();
    let server = TcpStream::from_std(std_server).unwrap();
    let region = rt.block_on(async { Region::register(Arc::clone(&image)).unwrap() });
    let send = rt.spawn({
        let region = region.clone();
        async move { server.send_region(&region, 0, len).unwrap().await }
    });
    // Wait until the send is under way: the first bytes reach the client.
    let mut first = [0; 1];
    let mut reader = &std_client;
    reader.read_exact(&mut first).unwrap();
    assert_eq!(first[0], image[0]);
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
