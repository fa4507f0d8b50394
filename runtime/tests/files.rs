//! Whole-file helpers (`fs::read`, `fs::write`), `File::read_full_at` and
//! `File::write_all_at`, `fs::OpenOptions` and `O_DIRECT`: contents
//! come back byte for byte, options do what std's do, a dropped helper leaves every buffer in
//! the pool and no descriptor open.
//!
//! The tests count the process's open descriptors, so they run one at a time (`common::serial`).

mod common;

use std::future::Future;
use std::io::ErrorKind;
use std::task::Poll;

use regio_runtime::fs::{self, OpenOptions};
use regio_testkit::TempFile;

/// `len` bytes, none of them zero.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 241 + 1) as u8).collect()
}

#[test]
fn write_then_read_a_file_of_many_chunks_byte_for_byte() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(2) else { return };
    let file = TempFile::new("whole");
    let path = file.path().to_owned();
    // Not a multiple of the 64 KiB chunk: the last chunk is short.
    let data = pattern((1 << 20) + 123);
    let fds = common::open_fds();
    let back = rt
        .block_on(rt.spawn({
            let data = data.clone();
            async move {
                fs::write(&path, &data).await?;
                fs::read(&path).await
            }
        }))
        .unwrap()
        .unwrap();
    assert!(back == data, "read gave other bytes than write wrote");
    assert!(file.contents() == data, "the file holds other bytes");
    common::assert_clean(&rt, fds);
}

#[test]
fn small_empty_and_sizeless_files_read_whole() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let empty = TempFile::new("empty");
    let small = TempFile::new("small");
    let (empty_path, small_path) = (empty.path().to_owned(), small.path().to_owned());
    let (empty_back, small_back, status) = rt
        .block_on(async move {
            fs::write(&small_path, b"seven b").await?;
            fs::write(&empty_path, b"").await?;
            Ok::<_, std::io::Error>((
                fs::read(&empty_path).await?,
                fs::read(&small_path).await?,
                // A /proc file reports size 0 and has bytes all the same.
                fs::read("/proc/self/status").await?,
            ))
        })
        .unwrap();
    assert!(empty_back.is_empty());
    assert_eq!(small_back, b"seven b");
    assert!(
        status.starts_with(b"Name:"),
        "{:?}",
        &status[..status.len().min(20)]
    );
    common::assert_pool_full(rt.pool());
}

#[test]
fn full_reads_and_whole_writes_at_an_offset_and_their_bad_lengths() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let file = TempFile::new("exact");
    let path = file.path().to_owned();
    let fds = common::open_fds();
    let data = pattern(3000);
    let pool = rt.pool().clone();
    let (read, back, too_long_read, too_long_write) = rt
        .block_on(rt.spawn({
            let data = data.clone();
            async move {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let (written, _) = file
                    .write_all_at(common::message(&pool, &data), data.len(), 100)
                    .await;
                written?;
                // Asks past the end: the count says where the file ended.
                let (read, msg) = file
                    .read_full_at(pool.try_acquire().unwrap(), 4000, 100)
                    .await;
                let back = msg.as_slice()[..3000].to_vec();
                let capacity = msg.capacity();
                let (too_long_read, msg) = file.read_full_at(msg, capacity + 1, 0).await;
                let (too_long_write, _) = file.write_all_at(msg, capacity + 1, 0).await;
                Ok::<_, std::io::Error>((read?, back, too_long_read, too_long_write))
            }
        }))
        .unwrap()
        .unwrap();
    assert_eq!(read, 3000, "the read stops at the end of the file");
    assert!(
        back == data,
        "read_full_at gave other bytes than write_all_at wrote"
    );
    assert_eq!(
        file.contents()[..100],
        [0; 100],
        "the hole before the offset"
    );
    assert!(file.contents()[100..] == data, "the file holds other bytes");
    assert_eq!(too_long_read.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(too_long_write.unwrap_err().kind(), ErrorKind::InvalidInput);
    common::assert_clean(&rt, fds);
}

#[test]
fn a_missing_file_and_a_missing_directory_are_errors() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let (read, write) = rt.block_on(async {
        (
            fs::read("/nonexistent/regio/file").await,
            fs::write("/nonexistent/regio/file", b"x").await,
        )
    });
    assert_eq!(read.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(write.unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_dropped_read_cancels_its_chunks_and_leaks_nothing() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let file = TempFile::new("dropped");
    std::fs::write(file.path(), pattern(4 << 20)).unwrap();
    let path = file.path().to_owned();
    let fds = common::open_fds();
    let first_poll = rt
        .block_on(rt.spawn(async move {
            let mut read = Box::pin(fs::read(&path));
            let first =
                std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx).is_pending())).await;
            drop(read);
            first
        }))
        .unwrap();
    assert!(first_poll, "the read was in flight when it was dropped");
    common::eventually_pool_full(rt.pool(), "every buffer is back");
    common::eventually("the descriptors are closed", || common::open_fds() == fds);
}

#[test]
fn open_options_append_create_new_truncate_and_read_only() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let file = TempFile::new("options");
    let path = file.path().to_owned();
    std::fs::write(&path, b"start").unwrap();
    let pool = rt.pool().clone();
    let outcome = rt
        .block_on(rt.spawn(async move {
            let msg = |bytes: &[u8]| common::message(&pool, bytes);
            // Append: the offset is ignored, the bytes go to the end.
            let appender = OpenOptions::new().append(true).open(&path)?;
            appender.write_at(msg(b"+more"), 0).await.0?;
            let after_append = std::fs::read(&path)?;
            // create_new on an existing file.
            let exists = OpenOptions::new().write(true).create_new(true).open(&path);
            // A read-only file refuses writes.
            let reader = OpenOptions::new().read(true).open(&path)?;
            let refused = reader.write_at(msg(b"x"), 0).await.0;
            // Truncate, with a custom flag added.
            let truncated = OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_DSYNC)
                .open(&path)?;
            drop(truncated);
            let len_after_truncate = std::fs::metadata(&path)?.len();
            Ok::<_, std::io::Error>((
                after_append,
                exists.err(),
                refused.err(),
                len_after_truncate,
            ))
        }))
        .unwrap()
        .unwrap();
    let (after_append, exists, refused, len) = outcome;
    assert_eq!(after_append, b"start+more");
    assert_eq!(exists.map(|e| e.kind()), Some(ErrorKind::AlreadyExists));
    assert_eq!(refused.and_then(|e| e.raw_os_error()), Some(libc::EBADF));
    assert_eq!(len, 0);
    common::assert_pool_full(rt.pool());
}

#[test]
fn direct_io_reads_and_writes_aligned_pool_buffers() {
    let _serial = common::serial();
    let Some(rt) = common::runtime(1) else { return };
    let file = TempFile::new("direct");
    let path = file.path().to_owned();
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .direct(true)
        .open(&path);
    let direct = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            regio_testkit::skip(&format!(
                "the file system of {} refuses O_DIRECT",
                path.display()
            ));
            return;
        }
        Err(e) => panic!("opening with O_DIRECT: {e}"),
    };
    let data = pattern(8192);
    let pool = rt.pool().clone();
    let back = rt
        .block_on(rt.spawn({
            let data = data.clone();
            async move {
                // Two pages from offset 4096; pool buffers are page aligned.
                for (i, page) in data.chunks(4096).enumerate() {
                    let mut msg = pool.try_acquire().unwrap();
                    msg.as_mut_slice().copy_from_slice(page);
                    let (n, _) = direct.write_at(msg, 4096 * (i as u64 + 1)).await;
                    assert_eq!(n?, 4096);
                }
                direct.sync_data().await?;
                let mut back = Vec::new();
                for i in 0..2u64 {
                    let (n, msg) = direct
                        .read_at(pool.try_acquire().unwrap(), 4096 * (i + 1))
                        .await;
                    assert_eq!(n?, 4096);
                    back.extend_from_slice(msg.as_slice());
                }
                // At the end of the file: nothing more.
                let (n, _) = direct.read_at(pool.try_acquire().unwrap(), 3 * 4096).await;
                assert_eq!(n?, 0);
                Ok::<_, std::io::Error>(back)
            }
        }))
        .unwrap()
        .unwrap();
    assert!(back == data, "O_DIRECT read other bytes than it wrote");
    assert!(file.contents()[4096..] == data[..]);
    common::assert_pool_full(rt.pool());
}
