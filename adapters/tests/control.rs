//! Control and remaining operations: timeout, cancel, msg_ring, splice, close, multishot accept.

mod common;

use regio_testkit::TempFile;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use common::{config, TestBuf};
use regio_adapters::{FileSlot, Op, Target};

#[test]
fn timeout_fires_and_cancel_stops_one() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let cq = wq.ring();
    let t0 = Instant::now();
    wq.post(Op::timeout(Duration::from_millis(20), 1)).unwrap();
    let c = common::collect(&cq, 1);
    assert_eq!((c[0].cookie, c[0].result), (1, -libc::ETIME));
    assert!(t0.elapsed() >= Duration::from_millis(20));

    wq.post(Op::timeout(Duration::from_secs(30), 2)).unwrap();
    wq.post(Op::cancel(2, 3)).unwrap();
    let mut c = common::collect(&cq, 2);
    c.sort_by_key(|c| c.cookie);
    assert_eq!((c[0].cookie, c[0].result), (2, -libc::ECANCELED));
    assert_eq!((c[1].cookie, c[1].result), (3, 0));

    wq.post(Op::cancel(77, 4)).unwrap();
    let c = common::collect(&cq, 1);
    assert_eq!((c[0].cookie, c[0].result), (4, -libc::ENOENT));
    assert_eq!(wq.credits(), (8, 8));
}

#[test]
fn msg_ring_posts_a_message_on_another_cq() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(2, true)) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let other = adapter.ring(1).unwrap();
    if !adapter.supports(&Op::msg_ring(&other, 0, 0, 0)) {
        return regio_testkit::skip("the kernel lacks msg_ring (Linux 5.18)");
    }
    wq.post(Op::msg_ring(&other, 0xfeed, 42, 9)).unwrap();
    let sent = common::collect(&wq.ring(), 1);
    assert_eq!((sent[0].cookie, sent[0].result), (9, 0));
    let got = common::collect(&other, 1);
    assert_eq!(
        (got[0].wq, got[0].cookie, got[0].result),
        (None, 0xfeed, 42)
    );
}

#[test]
fn splice_moves_file_bytes_into_a_pipe() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let (file, path) = TempFile::pattern("adapters", 1000).keep();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let wq = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 4, 4)
        .unwrap();
    wq.post(Op::splice(10, Target::Fd(fds[1]), -1, 100, 1))
        .unwrap();
    let c = common::collect(&wq.ring(), 1);
    assert_eq!(c[0].result, 100);
    let mut buf = [0u8; 100];
    // SAFETY: reads into a valid 100-byte buffer.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 100) };
    assert_eq!(n, 100);
    assert!(buf
        .iter()
        .enumerate()
        .all(|(i, b)| *b == ((10 + i) % 251) as u8));
    // SAFETY: closing the pipe this test opened.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    std::fs::remove_file(path).unwrap();
}

#[test]
fn splice_into_holds_its_output_open_until_the_final_completion() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let (file, path) = TempFile::pattern("adapters", 1000).keep();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 made both; each is owned once, here.
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::sync::Arc::new(std::os::fd::OwnedFd::from_raw_fd(fds[1])),
        )
    };
    let wq = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 4, 4)
        .unwrap();
    let out: std::sync::Arc<dyn AsRawFd + Send + Sync> = write.clone();
    wq.post(Op::splice_into(10, out, -1, 100, 1)).unwrap();
    assert_eq!(
        std::sync::Arc::strong_count(&write),
        2,
        "the operation holds the output"
    );
    let c = common::collect(&wq.ring(), 1);
    assert_eq!(c[0].result, 100);
    assert_eq!(
        std::sync::Arc::strong_count(&write),
        1,
        "let go with the final completion"
    );
    let mut buf = [0u8; 100];
    (&read).read_exact(&mut buf).unwrap();
    assert!(buf
        .iter()
        .enumerate()
        .all(|(i, b)| *b == ((10 + i) % 251) as u8));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn multishot_accept_fills_slots_until_cancelled_and_close_empties_one() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lwq = adapter
        .work_queue(0, Target::Fd(listener.as_raw_fd()), 4, 4)
        .unwrap();
    let cq = lwq.ring();
    lwq.post(Op::accept_multishot(1)).unwrap();
    let clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let accepted = common::collect(&cq, 3);
    let mut slots = Vec::new();
    for c in &accepted {
        assert!(c.result >= 0, "{c:?}");
        assert!(!c.is_final(), "multishot keeps going");
        slots.push(c.result as u32);
    }
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 3, "three distinct fixed slots");
    assert_eq!(
        lwq.credits().1,
        3,
        "a multishot holds its credit until its last CQE"
    );

    // Close one accepted connection through its fixed slot: the client sees EOF.
    let cwq = adapter
        .work_queue(0, Target::Fixed(FileSlot(slots[0])), 4, 4)
        .unwrap();
    cwq.post(Op::close(2)).unwrap();
    assert_eq!(common::collect(&cq, 1)[0].result, 0);

    lwq.post(Op::cancel(1, 3)).unwrap();
    let done = common::collect(&cq, 2);
    let last = done.iter().find(|c| c.cookie == 1).unwrap();
    assert!(
        last.is_final(),
        "the cancelled multishot ends without F_MORE"
    );
    assert_eq!(lwq.credits().1, 4);

    let mut eof = 0;
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if matches!(c.read(&mut [0u8; 1]), Ok(0)) {
            eof += 1;
        }
    }
    assert_eq!(eof, 1, "exactly the closed slot's client sees EOF");
}

#[test]
fn set_file_installs_a_fixed_file_on_every_ring() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(2, true)) else {
        return;
    };
    let (file, path) = TempFile::pattern("adapters", 4096).keep();
    adapter.set_file(FileSlot(7), file.as_raw_fd()).unwrap();
    drop(file);
    for cq in 0..2 {
        let wq = adapter
            .work_queue(cq, Target::Fixed(FileSlot(7)), 4, 4)
            .unwrap();
        wq.post(Op::fsync(cq as u64)).unwrap();
        assert_eq!(common::collect(&wq.ring(), 1)[0].result, 0);
    }
    adapter.clear_file(FileSlot(7)).unwrap();
    let wq = adapter
        .work_queue(0, Target::Fixed(FileSlot(7)), 4, 4)
        .unwrap();
    wq.post(Op::fsync(9)).unwrap();
    assert_eq!(common::collect(&wq.ring(), 1)[0].result, -libc::EBADF);
    assert!(adapter
        .work_queue(0, Target::Fixed(FileSlot(100_000)), 4, 4)
        .is_err());
    std::fs::remove_file(path).unwrap();
}
