//! `send_file`: a file range reaches the peer byte for byte through splices; a peer that goes
//! away, a file that ends early and a dropped future each end cleanly, with every buffer back
//! in the pool and no descriptor left open.
//!
//! The tests count the process's open descriptors, so they run one at a time (`common::serial`).

mod common;

use std::future::Future;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::MutexGuard;
use std::time::Duration;

use regio_runtime::fs::File;
use regio_runtime::net::{TcpStream, UnixStream};
use regio_runtime::{time, JoinHandle, Runtime};
use regio_testkit::TempFile;

/// A file of `len` bytes, none of them zero: byte `i` is `i % 253 + 1`.
fn patterned(len: usize) -> TempFile {
    let file = TempFile::new("sendfile");
    let data: Vec<u8> = (0..len).map(|i| (i % 253 + 1) as u8).collect();
    std::fs::write(file.path(), data).unwrap();
    file
}

/// What every test starts from: the serial lock (to hold: descriptor counts are
/// process-wide), a runtime of `workers` workers, a [`patterned`] file of `len` bytes and the
/// descriptors open once it exists; `None` (skipped) where io_uring is disabled.
fn setup(
    workers: usize,
    len: usize,
) -> Option<(MutexGuard<'static, ()>, Runtime, TempFile, usize)> {
    let serial = common::serial();
    let rt = common::runtime(workers)?;
    let file = patterned(len);
    let fds = common::open_fds();
    Some((serial, rt, file, fds))
}

/// A loopback listener whose one connection `serve` handles on a thread: (address, the thread).
fn peer<T: Send + 'static>(
    serve: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || serve(listener.accept().unwrap().0));
    (addr, thread)
}

/// A peer that reads its connection to the end: (address, the bytes read).
fn sink() -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    peer(|mut conn| {
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    })
}

/// Spawns `send` on a worker of `rt` with `file` opened there by regio.
fn spawn_with_file<T, Fut>(
    rt: &Runtime,
    file: &TempFile,
    send: impl FnOnce(File) -> Fut + Send + 'static,
) -> JoinHandle<std::io::Result<T>>
where
    Fut: Future<Output = std::io::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let path = file.path().to_owned();
    rt.spawn(async move { send(File::open(&path)?).await })
}

/// A connection to `addr` with a 4 KiB send buffer, which a peer that stops reading fills fast.
async fn connect_with_small_send_buffer(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    common::set_socket_int(stream.as_raw_fd(), libc::SO_SNDBUF, 4096);
    Ok(stream)
}

#[test]
fn a_three_mib_range_from_an_offset_arrives_intact() {
    const OFFSET: u64 = 4097;
    const LEN: u64 = 3 << 20;
    let Some((_serial, rt, file, fds)) = setup(2, (OFFSET + LEN) as usize + 100) else {
        return;
    };
    let (addr, reader) = sink();
    let sent = regio_testkit::within(Duration::from_secs(60), "send_file", {
        let task = spawn_with_file(&rt, &file, move |file| async move {
            let stream = TcpStream::connect(addr).await?;
            stream.send_file(&file, OFFSET, LEN).await
        });
        move || regio_testkit::block_on(task)
    });
    assert_eq!(sent.unwrap().unwrap(), LEN);
    let got = reader.join().unwrap();
    let want = &file.contents()[OFFSET as usize..(OFFSET + LEN) as usize];
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the bytes received differ from the file's");
    common::assert_clean(&rt, fds);
}

#[test]
fn a_unix_stream_and_a_write_half_send_files_too() {
    let Some((_serial, rt, file, fds)) = setup(1, 200_000) else {
        return;
    };
    let got = rt
        .block_on(spawn_with_file(&rt, &file, move |file| async move {
            let (a, b) = UnixStream::pair()?;
            let reader = std::thread::spawn({
                let mut b = b.as_std().try_clone()?;
                move || {
                    let mut got = vec![0; 150_000];
                    b.read_exact(&mut got).map(|()| got)
                }
            });
            let (_read, write) = a.into_split();
            let first = write.send_file(&file, 10, 100_000).await?;
            let second = write.send_file(&file, 100_010, 50_000).await?;
            assert_eq!((first, second), (100_000, 50_000));
            drop(b);
            reader.join().unwrap()
        }))
        .unwrap()
        .unwrap();
    assert!(got == file.contents()[10..150_010], "the bytes differ");
    common::assert_clean(&rt, fds);
}

#[test]
fn a_file_that_ends_early_is_an_unexpected_eof_after_its_bytes_were_sent() {
    let Some((_serial, rt, file, fds)) = setup(1, 1000) else {
        return;
    };
    let (addr, reader) = sink();
    let err = rt
        .block_on(spawn_with_file(&rt, &file, move |file| async move {
            let stream = TcpStream::connect(addr).await?;
            stream.send_file(&file, 100, 5000).await
        }))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!(reader.join().unwrap() == file.contents()[100..]);
    common::assert_clean(&rt, fds);
}

#[test]
fn a_range_past_the_largest_offset_is_invalid_input() {
    let Some((_serial, rt, file, _)) = setup(1, 10) else {
        return;
    };
    let err = rt
        .block_on(spawn_with_file(&rt, &file, move |file| async move {
            let (a, _b) = UnixStream::pair()?;
            a.send_file(&file, i64::MAX as u64, 2).await
        }))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn a_peer_that_resets_midway_is_an_error_and_leaks_no_pipe() {
    let Some((_serial, rt, file, fds)) = setup(2, 3 << 20) else {
        return;
    };
    let (addr, peer) = peer(|mut conn| {
        let mut some = vec![0; 64 << 10];
        conn.read_exact(&mut some).unwrap();
        common::reset_on_close(&conn);
    });
    let result = rt
        .block_on(spawn_with_file(&rt, &file, move |file| async move {
            let stream = connect_with_small_send_buffer(addr).await?;
            stream.send_file(&file, 0, 3 << 20).await
        }))
        .unwrap();
    peer.join().unwrap();
    let err = result.expect_err("the peer reset the connection before the end");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
        "{err}"
    );
    common::assert_clean(&rt, fds);
}

#[test]
fn a_dropped_send_file_cancels_its_blocked_splice_and_closes_everything() {
    let Some((_serial, rt, file, fds)) = setup(2, 3 << 20) else {
        return;
    };
    // A peer that reads nothing until the sender has given up.
    let (gave_up, wait) = std::sync::mpsc::channel::<()>();
    let (addr, peer) = peer(move |conn| {
        wait.recv().unwrap();
        drop(conn);
    });
    let timed_out = regio_testkit::within(Duration::from_secs(60), "a dropped send_file", {
        let task = spawn_with_file(&rt, &file, move |file| async move {
            let stream = connect_with_small_send_buffer(addr).await?;
            let outcome = time::timeout(
                Duration::from_millis(200),
                stream.send_file(&file, 0, 3 << 20),
            )
            .await;
            Ok::<_, std::io::Error>(outcome.is_err())
        });
        move || regio_testkit::block_on(task)
    });
    gave_up.send(()).unwrap();
    peer.join().unwrap();
    assert!(
        timed_out.unwrap().unwrap(),
        "the send finished against a peer that read nothing"
    );
    common::assert_clean(&rt, fds);
}
