//! Attacks on the newer helpers from safe code: `fs::read` of endless and odd files,
//! `read_full_at` / `write_all_at` with lengths and offsets past what fits, `send_file` with
//! ranges past the largest file offset. Each ends in a typed error, with every buffer back in
//! the pool and no descriptor left open.
//!
//! The tests count the process's open descriptors, so they run one at a time (`common::serial`).

mod common;

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use regio_runtime::fs::{self, File};
use regio_runtime::net::TcpStream;
use regio_runtime::Runtime;
use regio_testkit::TempFile;

/// `fs::read` of a device with no end (`/dev/zero`) must not grow its `Vec` without bound: it
/// refuses anything but a regular file.
#[test]
fn reading_an_endless_device_whole_is_refused() {
    let _serial = common::serial();
    read_whole_fails_with("/dev/zero".into(), ErrorKind::InvalidInput);
}

/// A directory is an error, not a hang or an empty `Vec`.
#[test]
fn reading_a_directory_whole_is_an_error() {
    let _serial = common::serial();
    read_whole_fails_with(std::env::temp_dir(), ErrorKind::InvalidInput);
}

/// Lengths above the message, offsets at `u64::MAX` and a length of 0: typed errors or 0, no
/// panic on `pos + done` overflow.
#[test]
fn positioned_reads_and_writes_at_extreme_lengths_and_offsets() {
    let _serial = common::serial();
    on_a_clean_runtime_with(ten_digits("extreme"), move |rt, path| {
        rt.block_on(rt.spawn(async move {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let msg = regio_runtime::pool().acquire().await;
            let cap = msg.capacity();
            let (n, msg) = f.read_full_at(msg, cap + 1, 0).await;
            assert_eq!(n.unwrap_err().kind(), ErrorKind::InvalidInput);
            let (n, msg) = f.read_full_at(msg, usize::MAX, 0).await;
            assert_eq!(n.unwrap_err().kind(), ErrorKind::InvalidInput);
            let (n, msg) = f.read_full_at(msg, 0, u64::MAX).await;
            assert_eq!(n.unwrap(), 0);
            let (n, msg) = f.read_full_at(msg, 16, u64::MAX).await;
            assert!(n.is_err(), "a read at u64::MAX gave {n:?}");
            let (n, msg) = f.read_full_at(msg, 16, 4).await;
            assert_eq!(n.unwrap(), 6, "a length past the end reads to the end");
            let (w, msg) = f.write_all_at(msg, 16, u64::MAX).await;
            assert!(w.is_err(), "a write at u64::MAX succeeded");
            let (w, msg) = f.write_all_at(msg, cap + 1, 0).await;
            assert_eq!(w.unwrap_err().kind(), ErrorKind::InvalidInput);
            drop(msg);
        }))
        .unwrap();
    });
}

/// `send_file` of ranges past the largest file offset is refused before any pipe is made;
/// a length of 0 sends nothing.
#[test]
fn send_file_of_overflowing_ranges_is_refused() {
    let _serial = common::serial();
    on_a_clean_runtime_with(ten_digits("range"), move |rt, path| {
        let (addr, peer) = accept_one(|stream| stream);
        rt.block_on(rt.spawn(async move {
            let f = File::open(&path).unwrap();
            let s = TcpStream::connect(addr).await.unwrap();
            for (offset, len) in [
                (u64::MAX, 1),
                (1, u64::MAX),
                (0, u64::MAX),
                (i64::MAX as u64, 1),
            ] {
                let got = s.send_file(&f, offset, len).await;
                assert_eq!(
                    got.unwrap_err().kind(),
                    ErrorKind::InvalidInput,
                    "{offset} {len}"
                );
            }
            assert_eq!(
                s.send_file(&f, u64::MAX, 0).await.unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(s.send_file(&f, 3, 0).await.unwrap(), 0);
            for (offset, len) in [(4, 100), (0, i64::MAX as u64), (i64::MAX as u64 - 10, 10)] {
                let past = s.send_file(&f, offset, len).await;
                assert_eq!(
                    past.unwrap_err().kind(),
                    ErrorKind::UnexpectedEof,
                    "{offset} {len}"
                );
            }
        }))
        .unwrap();
        drop(peer.join().unwrap());
    });
}

/// `fs::read` of a FIFO with no writer: `open(2)` would wait for a writer on the worker,
/// stalling every task on it; it is refused at once instead.
#[test]
fn reading_a_fifo_whole_is_refused_without_waiting_for_a_writer() {
    let _serial = common::serial();
    let file = TempFile::new("fifo");
    let path = fifo_in_place_of(&file);
    read_whole_fails_with(path, ErrorKind::InvalidInput);
}

/// `fs::read` of a sparse file far larger than memory: the `Vec` it would size to the file
/// cannot be had, which is an [`ErrorKind::OutOfMemory`] error (as `std::fs::read` gives), not
/// an abort of the process.
#[test]
fn reading_a_file_larger_than_memory_whole_is_an_error_not_an_abort() {
    let _serial = common::serial();
    let file = TempFile::new("sparse");
    // 8 TiB of holes (ext4 allows 16 TiB): no memory on this machine holds it.
    std::fs::File::options()
        .write(true)
        .open(file.path())
        .unwrap()
        .set_len(8 << 40)
        .unwrap();
    let path = file.path().to_owned();
    read_whole_fails_with(path, ErrorKind::OutOfMemory);
}

/// `send_file` to a peer that closed (without a reset) before the call: the splice into the
/// socket fails with `EPIPE` or `ECONNRESET`, the process is not killed, and the pipe closes.
#[test]
fn send_file_to_a_peer_that_already_closed_is_an_error_and_leaks_nothing() {
    let _serial = common::serial();
    on_a_clean_runtime_with(TempFile::filled("closed", 7, 4 << 20), move |rt, path| {
        let (addr, peer) = accept_one(drop);
        let got = rt
            .block_on(rt.spawn(async move {
                let f = File::open(&path)?;
                let s = TcpStream::connect(addr).await?;
                // Two rounds: the first may land in the socket's buffer before the peer's
                // FIN is answered with a reset.
                let first = s.send_file(&f, 0, 4 << 20).await;
                let second = s.send_file(&f, 0, 4 << 20).await;
                Ok::<_, std::io::Error>((first, second))
            }))
            .unwrap();
        peer.join().unwrap();
        let (first, second) = got.unwrap();
        let err = first.and(second).expect_err("the peer had closed");
        assert!(
            matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
            "{err}"
        );
    });
}

/// A plain `Vec` of length 0 and a large capacity reads and receives nothing (its length
/// names its bytes), and comes back with its capacity.
#[test]
fn an_empty_vector_with_a_large_capacity_moves_nothing() {
    let _serial = common::serial();
    on_a_clean_runtime_with(ten_digits("emptyvec"), move |rt, path| {
        rt.block_on(rt.spawn(async move {
            let f = File::open(&path).unwrap();
            let (n, buf) = f.read_at(Vec::<u8>::with_capacity(16 << 20), 0).await;
            assert_eq!(n.unwrap(), 0);
            assert_eq!(buf.len(), 0);
            assert!(buf.capacity() >= 16 << 20);
            let (n, _) = f.read_at(vec![0u8; 4], u64::MAX).await;
            assert_eq!(n.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        }))
        .unwrap();
    });
}

/// `fs::write` dropped after its first poll (chunks in flight): every buffer back in the pool
/// and the file closed.
#[test]
fn a_dropped_whole_write_leaks_nothing() {
    let _serial = common::serial();
    on_a_clean_runtime_with(TempFile::new("dropwrite"), move |rt, path| {
        let finished = rt.block_on(rt.spawn(async move {
            let data = vec![3u8; 4 << 20];
            let mut write = Box::pin(fs::write(&path, &data));
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(write.as_mut().poll(cx).is_ready())
            })
            .await;
            drop(write);
            polled
        }));
        assert!(
            !finished.unwrap(),
            "4 MiB written in one poll: nothing was dropped midway"
        );
        common::eventually_pool_full(rt.pool(), "the dropped write's buffers are back");
    });
}

/// `fs::write` into a full device or a directory, and `send_file` from a directory or a file
/// opened only for writing: each a typed error, with nothing left open or borrowed.
#[test]
fn writes_to_odd_targets_and_sends_from_odd_sources_are_errors() {
    let _serial = common::serial();
    on_a_clean_runtime_with(ten_digits("odd"), move |rt, path| {
        let (addr, peer) = accept_one(drop);
        rt.block_on(rt.spawn(async move {
            let full = fs::write("/dev/full", vec![1u8; 200_000]).await;
            assert_eq!(full.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
            let dir = fs::write(std::env::temp_dir(), b"x").await;
            assert_eq!(dir.unwrap_err().raw_os_error(), Some(libc::EISDIR));
            let s = TcpStream::connect(addr).await.unwrap();
            let from_dir = File::open(std::env::temp_dir()).unwrap();
            assert!(s.send_file(&from_dir, 0, 10).await.is_err());
            let write_only = fs::OpenOptions::new().write(true).open(&path).unwrap();
            let got = s.send_file(&write_only, 0, 10).await;
            assert_eq!(got.unwrap_err().raw_os_error(), Some(libc::EBADF));
        }))
        .unwrap();
        peer.join().unwrap();
    });
}

/// `fs::write` into a FIFO a reader drains: the bytes arrive in order (a pipe has no
/// positions, so chunks written side by side would interleave).
#[test]
fn a_whole_write_into_a_fifo_arrives_in_order() {
    use std::io::Read;
    let _serial = common::serial();
    let file = TempFile::new("fifo-write");
    let path = fifo_in_place_of(&file);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let reader = std::thread::spawn({
        let path = path.clone();
        move || {
            let mut got = Vec::new();
            std::fs::File::open(path)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            got
        }
    });
    common::with_runtime(1, Duration::from_secs(60), {
        let data = data.clone();
        move |rt| {
            let got = rt.block_on(rt.spawn(async move { fs::write(path, data).await }));
            got.unwrap().unwrap();
        }
    });
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the FIFO's reader got the bytes out of order");
}

/// `fs::read` of `path` on a fresh runtime fails with `kind`, and leaves no buffer or
/// descriptor behind.
fn read_whole_fails_with(path: PathBuf, kind: ErrorKind) {
    on_a_clean_runtime(move |rt| {
        let got = rt
            .block_on(rt.spawn(async move { fs::read(path).await }))
            .unwrap();
        assert_eq!(got.unwrap_err().kind(), kind);
    });
}

/// Runs `test` on a fresh one-worker runtime (60 s at most) and asserts that it left every
/// buffer in the pool and no descriptor open.
fn on_a_clean_runtime(test: impl FnOnce(&Runtime) + Send + 'static) {
    common::with_runtime(1, Duration::from_secs(60), move |rt| {
        let fds = common::open_fds_after_warm_up(rt);
        test(rt);
        common::assert_clean(rt, fds);
    });
}

/// Runs `test` with the path of `file` on a clean runtime ([`on_a_clean_runtime`]), then
/// removes the file.
fn on_a_clean_runtime_with(file: TempFile, test: impl FnOnce(&Runtime, PathBuf) + Send + 'static) {
    let path = file.path().to_owned();
    on_a_clean_runtime(move |rt| test(rt, path));
    drop(file);
}

/// A temporary file tagged `tag` that holds the ten bytes `0123456789`.
fn ten_digits(tag: &str) -> TempFile {
    let file = TempFile::new(tag);
    std::fs::write(file.path(), b"0123456789").unwrap();
    file
}

/// A thread that accepts one connection on a new loopback listener and returns `then` of it:
/// (the listener's address, the thread).
fn accept_one<T: Send + 'static>(
    then: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || then(listener.accept().unwrap().0));
    (addr, peer)
}

/// Replaces `file` with a FIFO at its path (which `file` still removes when dropped) and
/// returns that path.
fn fifo_in_place_of(file: &TempFile) -> PathBuf {
    let path = file.path().to_owned();
    std::fs::remove_file(&path).ok();
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    path
}
