//! Single-queue operation tests on real files and loopback sockets.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{config, Region, TestBuf};
use regio_adapters::{Completion, Op, PostError, Target};
use regio_testkit::TempFile;

#[test]
fn read_and_write_fixed_on_a_file_with_and_without_sqpoll() {
    for sqpoll in [true, false] {
        let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, sqpoll)) else {
            return;
        };
        let region = Region::new(&adapter, 1 << 16);
        let (file, path) = TempFile::pattern("adapters", 8192).keep();
        let wq = adapter
            .work_queue(0, Target::Fd(file.as_raw_fd()), 4, 4)
            .unwrap();
        let cq = wq.ring();
        wq.post(Op::read_fixed(region.buf(4096, 4096), 4096, 1))
            .unwrap();
        let c = common::wait_one(&cq);
        assert_eq!((c.cookie, c.result, c.wq), (1, 4096, Some(wq.id())));
        let buf = c.buf.expect("buffer handed back");
        assert!(buf
            .contents()
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((4096 + i) % 251) as u8));
        buf.write(&[0xAB; 4096]);
        wq.post(Op::write_fixed(buf, 0, 2)).unwrap();
        let c = common::wait_one(&cq);
        assert_eq!((c.cookie, c.result), (2, 4096));
        wq.post(Op::fdatasync(3)).unwrap();
        assert_eq!(common::wait_one(&cq).result, 0);
        wq.post(Op::fsync(4)).unwrap();
        assert_eq!(common::wait_one(&cq).result, 0);
        wq.post(Op::fallocate(0, 0, 1 << 20, 5)).unwrap();
        assert_eq!(common::wait_one(&cq).result, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        let data = std::fs::read(&path).unwrap();
        assert!(data[..4096].iter().all(|b| *b == 0xAB));
        assert_eq!(adapter.sqpoll(), sqpoll);
        if !sqpoll {
            assert_eq!(
                cq.sqpoll_sleeping(),
                Some(false),
                "no SQPOLL thread to sleep"
            );
        }
        let s = adapter.stats();
        assert_eq!((s.submitted, s.completed), (5, 5));
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn credits_are_taken_and_returned() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let wq = adapter.work_queue(0, Target::Fd(-1), 2, 1).unwrap();
    let cq = wq.ring();
    wq.post(Op::nop(1)).unwrap();
    wq.post(Op::nop(2)).unwrap();
    match wq.post(Op::nop(3)) {
        Err(PostError::NoCredit(op)) => assert_eq!(op.cookie(), 3),
        other => panic!("expected NoCredit, got {other:?}"),
    }
    let mut out = Vec::new();
    while out.len() < 2 {
        cq.wait(&mut out, 8, Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(wq.credits(), (2, 1));
    adapter.resize_work_queue(&wq, 1, 1);
    assert_eq!(wq.credits(), (1, 1));
    adapter.remove_work_queue(&wq);
    assert!(matches!(wq.post(Op::nop(4)), Err(PostError::Closed(_))));
}

#[test]
fn tcp_send_recv_send_zc_connect_and_accept_direct() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, true)) else {
        return;
    };
    let region = Region::new(&adapter, 1 << 16);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    // Accept straight into fixed slot 3 on the listener's queue.
    let lwq = adapter
        .work_queue(0, Target::Fd(listener.as_raw_fd()), 4, 4)
        .unwrap();
    lwq.post(Op::accept_direct(regio_adapters::FileSlot(3), 10))
        .unwrap();

    // Connect through io_uring from a plain socket.
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: fd was just created and is owned here.
    let client = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let cwq = adapter.work_queue(0, Target::Fd(fd), 8, 8).unwrap();
    cwq.post(Op::connect(addr, 11)).unwrap();
    let cq = cwq.ring();
    let mut got = Vec::new();
    while got.len() < 2 {
        cq.wait(&mut got, 8, Some(Duration::from_secs(10))).unwrap();
    }
    for c in &got {
        assert_eq!(c.result, 0, "{c:?}");
    }

    // The accepted connection is slot 3: a work queue on it receives what the client sends.
    let swq = adapter
        .work_queue(0, Target::Fixed(regio_adapters::FileSlot(3)), 8, 8)
        .unwrap();
    let b = region.buf(0, 5);
    b.write(b"hello");
    cwq.post(Op::send(b, 0, 12)).unwrap();
    swq.post(Op::recv(region.buf(100, 64), 0, 13)).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        cq.wait(&mut got, 8, Some(Duration::from_secs(10))).unwrap();
    }
    let r = got.iter().find(|c| c.cookie == 13).unwrap();
    assert_eq!(r.wq, Some(swq.id()));
    assert_eq!(r.result, 5);
    assert_eq!(&r.buf.as_ref().unwrap().contents()[..5], b"hello");

    // Zero-copy send: two completions, the buffer only with the F_NOTIF one.
    let z = region.buf(4096, 3);
    if !adapter.supports(&Op::send_zc(region.buf(0, 1), 0, 0)) {
        return regio_testkit::skip("the kernel lacks send_zc (Linux 6.0)");
    }
    z.write(b"zc!");
    swq.post(Op::send_zc(z, 0, 14)).unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|c: &Completion<TestBuf>| c.is_final()) {
        cq.wait(&mut seen, 8, Some(Duration::from_secs(10)))
            .unwrap();
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].result, 3);
    assert!(!seen[0].is_final() && seen[0].buf.is_none());
    assert!(seen[1].is_notification() && seen[1].buf.is_some());
    let mut client = client;
    let mut buf = [0u8; 3];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"zc!");
    client.write_all(b"x").unwrap();
}

#[test]
fn a_completion_with_a_pool_message_fits_in_72_bytes() {
    // Every CQE becomes a `Completion`; the rare rejection reason is boxed so that the common
    // case stays small.
    assert!(std::mem::size_of::<Completion<regio_pool::Message>>() <= 72);
}
