//! Plain buffers (`Vec<u8>`, `Box<[u8]>`, `bytes::BytesMut`) on sockets and files: copied
//! through pool messages, the bytes arrive intact, counts are capped at one pool buffer for
//! single operations and not for `send_all`/`recv_exact`, a dropped operation leaks nothing,
//! and a plain buffer outside a runtime is an error that gives the buffer back.
//!
//! The tests count the process's open descriptors, so they run one at a time (`common::serial`).

mod common;

use std::time::Duration;

use bytes::BytesMut;
use regio_runtime::fs::File;
use regio_runtime::net::{TcpListener, TcpStream};
use regio_runtime::{spawn, time};
use regio_testkit::TempFile;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 239 + 1) as u8).collect()
}

/// A connected pair on loopback, both ends on the runtime: (client, server).
async fn pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let accept = spawn(async move { listener.accept().await });
    let client = TcpStream::connect(addr).await?;
    let (server, _) = accept.await.unwrap()?;
    Ok((client, server))
}

#[test]
fn vectors_boxes_and_bytes_cross_a_tcp_connection_intact() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(2) else { return };
    let fds = common::open_fds();
    // Larger than the test pool's largest buffer (64 KiB): several messages' worth.
    let big = pattern(200_000);
    let (small_got, big_got, bytes_got, sent) = rt
        .block_on(rt.spawn({
            let big = big.clone();
            async move {
                let (client, server) = pair().await?;
                let (n, small) = client.send(b"hello".to_vec()).await;
                assert_eq!(
                    (n?, &small[..]),
                    (5, &b"hello"[..]),
                    "the Vec comes back as it was"
                );
                let (n, small_got) = server.recv(vec![0u8; 16]).await;
                let n = n?;
                let sender = spawn(async move {
                    let (sent, big) = client.send_all(big).await;
                    sent.map(|()| (client, big.len()))
                });
                let (got, big_got) = server
                    .recv_exact(vec![0u8; 200_000].into_boxed_slice())
                    .await;
                got?;
                let (client, sent) = sender.await.unwrap()?;
                let (n2, _) = client.send(BytesMut::from(&b"bytes!"[..])).await;
                assert_eq!(n2?, 6);
                let (got, bytes_got) = server.recv_exact(BytesMut::zeroed(6)).await;
                got?;
                Ok::<_, std::io::Error>((small_got[..n].to_vec(), big_got, bytes_got, sent))
            }
        }))
        .unwrap()
        .unwrap();
    assert_eq!(small_got, b"hello");
    assert_eq!(sent, 200_000);
    assert!(big_got[..] == big[..], "the large buffer arrived changed");
    assert_eq!(&bytes_got[..], b"bytes!");
    common::assert_clean(&rt, fds);
}

#[test]
fn a_file_reads_and_writes_plain_buffers_one_pool_buffer_at_a_time() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let temp = TempFile::new("plainbuf");
    let path = temp.path().to_owned();
    let data = pattern(100_000);
    let (written, read, part, boxed, empty) = rt
        .block_on(rt.spawn({
            let data = data.clone();
            async move {
                let file = File::create(&path)?;
                // One write moves at most one pool buffer (64 KiB here).
                let (n, data) = file.write_at(data, 0).await;
                let first = n?;
                let (n, _) = file.write_at(data[first..].to_vec(), first as u64).await;
                let written = first + n?;
                let (n, back) = file.read_at(vec![0u8; 100_000], 0).await;
                let read = n?;
                let (n, part) = file.read_at(BytesMut::zeroed(10), 50).await;
                assert_eq!(n?, 10);
                let (n, boxed) = file.read_at(vec![0u8; 7].into_boxed_slice(), 99_995).await;
                assert_eq!(n?, 5, "a read at the end of the file comes back short");
                let (n, _) = file.write_at(Vec::new(), 0).await;
                Ok::<_, std::io::Error>((written, (read, back), part, boxed, n?))
            }
        }))
        .unwrap()
        .unwrap();
    assert_eq!(written, 100_000);
    assert_eq!(read.0, 65536, "a single read moves one pool buffer's worth");
    assert!(read.1[..read.0] == data[..read.0]);
    assert!(
        read.1[read.0..].iter().all(|&b| b == 0),
        "bytes past the count untouched"
    );
    assert_eq!(&part[..], &data[50..60]);
    assert_eq!(&boxed[..5], &data[99_995..]);
    assert_eq!(empty, 0);
    assert!(temp.contents() == data);
    common::assert_pool_full(rt.pool());
}

#[test]
fn a_dropped_receive_into_a_vector_leaks_nothing() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let fds = common::open_fds_after_warm_up(&rt);
    let timed_out = rt
        .block_on(rt.spawn(async {
            let (client, server) = pair().await?;
            // Nobody sends: the receive waits until the timeout drops it.
            let outcome =
                time::timeout(Duration::from_millis(50), server.recv(vec![0u8; 1000])).await;
            drop(client);
            Ok::<_, std::io::Error>(outcome.is_err())
        }))
        .unwrap()
        .unwrap();
    assert!(timed_out, "a receive with no sender completed");
    common::eventually_pool_full(rt.pool(), "every buffer is back");
    common::eventually("the descriptors are closed", || common::open_fds() == fds);
}

#[test]
fn a_plain_buffer_outside_a_runtime_is_an_error_and_comes_back() {
    // Its sockets would count in another test's descriptor check.
    let _serial = common::serial();
    let (client, _server) = regio_testkit::loopback();
    let stream = TcpStream::from_std(client).unwrap();
    let (result, buf) = regio_testkit::block_on(stream.send(vec![1u8, 2, 3]));
    let err = result.unwrap_err();
    assert!(err.to_string().contains("inside a regio runtime"), "{err}");
    assert_eq!(buf, [1, 2, 3]);
}
