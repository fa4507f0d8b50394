//! Fixed files across rings: a slot accepted on one CQ shared to another with `share_file`, and
//! fixed files (set with `set_file`, accepted directly or by a multishot accept) carried through
//! a resize of their CQ.

mod common;

use regio_testkit::TempFile;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use common::{config, Region, TestBuf};
use regio_adapters::{Adapter, Completion, DescriptorError, FileSlot, Op, Target, WorkQueue};

/// Posts `op` on `wq` and returns its completion's result.
fn run(wq: &WorkQueue<TestBuf>, op: Op<TestBuf>) -> Completion<TestBuf> {
    let cookie = op.cookie();
    wq.post(op).unwrap();
    let mut c = common::collect(&wq.ring(), 1);
    assert_eq!(c[0].cookie, cookie);
    c.pop().unwrap()
}

/// An adapter of `rings` CQs with a 64 KiB region and a listening socket; `None` (after a
/// `SKIP:` line) where io_uring is disabled.
fn setup(rings: usize, sqpoll: bool) -> Option<(Adapter<TestBuf>, Arc<Region>, TcpListener)> {
    let adapter = common::adapter_or_skip::<TestBuf>(config(rings, sqpoll))?;
    let region = Region::new(&adapter, 1 << 16);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    Some((adapter, region, listener))
}

/// Accepts one connection into `slot` of `cq` with `accept_direct`; returns the client side.
fn accept_into(
    adapter: &Adapter<TestBuf>,
    listener: &TcpListener,
    cq: usize,
    slot: FileSlot,
) -> TcpStream {
    let lwq = adapter
        .work_queue(cq, Target::Fd(listener.as_raw_fd()), 4, 4)
        .unwrap();
    lwq.post(Op::accept_direct(slot, 100)).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = common::collect(&lwq.ring(), 1);
    assert_eq!((c[0].cookie, c[0].result), (100, 0), "{c:?}");
    adapter.remove_work_queue(&lwq);
    client
}

/// Receives what `client` sends through `wq` (a work queue on the server side's fixed slot), and
/// sends an answer back through it.
fn talk(wq: &WorkQueue<TestBuf>, region: &Arc<Region>, client: &mut TcpStream, tag: &[u8]) {
    wq.post(Op::recv(region.buf(0, 64), 0, 1)).unwrap();
    client.write_all(tag).unwrap();
    let c = common::collect(&wq.ring(), 1);
    assert_eq!(c[0].result, tag.len() as i32, "{c:?}");
    assert_eq!(
        &c[0].buf.as_ref().unwrap().contents()[..tag.len()],
        tag,
        "received through the slot"
    );
    let answer = region.buf(4096, tag.len() as u32);
    answer.write(tag);
    let c = run(wq, Op::send(answer, 0, 2));
    assert_eq!(c.result, tag.len() as i32);
    let mut back = vec![0u8; tag.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, tag, "sent through the slot");
}

fn share_an_accepted_socket(sqpoll: bool) {
    let Some((adapter, region, listener)) = setup(2, sqpoll) else {
        return;
    };
    let cq1 = adapter.ring(1).unwrap();
    if !adapter.supports(&Op::share_file(FileSlot(0), &cq1, FileSlot(0), 0)) {
        return regio_testkit::skip("the kernel lacks msg_ring (Linux 5.18)");
    }
    let mut client = accept_into(&adapter, &listener, 0, FileSlot(3));
    // A share goes on a work queue of the slot it shares.
    let wq3 = adapter
        .work_queue(0, Target::Fixed(FileSlot(3)), 4, 4)
        .unwrap();
    let wq1 = adapter
        .work_queue(1, Target::Fixed(FileSlot(3)), 4, 4)
        .unwrap();

    // The accepted socket is in CQ 0's table only.
    let c = run(&wq1, Op::recv(region.buf(0, 64), 0, 5));
    assert_eq!(
        c.result,
        -libc::EBADF,
        "slot 3 of CQ 1 is empty before the share"
    );

    // Shared into the same slot of CQ 1: a work queue there carries the connection.
    let c = run(&wq3, Op::share_file(FileSlot(3), &cq1, FileSlot(3), 6));
    assert_eq!(c.result, 0, "{c:?}");
    assert_eq!(c.wq, Some(wq3.id()));
    talk(&wq1, &region, &mut client, b"over on cq 1");
    // A shared slot is carried through a resize of the CQ it was shared to.
    adapter.resize_completion_queue(1, 1024).unwrap();
    talk(&wq1, &region, &mut client, b"after the resize of cq 1");

    // And into another slot of CQ 1, from where the first copy is.
    let c = run(&wq3, Op::share_file(FileSlot(3), &cq1, FileSlot(9), 7));
    assert_eq!(c.result, 0, "{c:?}");
    let wq9 = adapter
        .work_queue(1, Target::Fixed(FileSlot(9)), 4, 4)
        .unwrap();
    talk(&wq9, &region, &mut client, b"slot 9 too");
    // CQ 0 still has its own copy.
    talk(&wq3, &region, &mut client, b"and cq 0");
    assert_eq!(wq3.credits(), (4, 4));
}

#[test]
fn an_accepted_socket_shared_to_another_cq_carries_traffic_sqpoll() {
    share_an_accepted_socket(true);
}

#[test]
fn an_accepted_socket_shared_to_another_cq_carries_traffic_interrupt_driven() {
    share_an_accepted_socket(false);
}

#[test]
fn a_share_that_cannot_be_done_reports_the_kernels_error() {
    let Some((adapter, _region, _listener)) = setup(2, true) else {
        return;
    };
    let cq0 = adapter.ring(0).unwrap();
    let cq1 = adapter.ring(1).unwrap();
    if !adapter.supports(&Op::share_file(FileSlot(0), &cq1, FileSlot(0), 0)) {
        return regio_testkit::skip("the kernel lacks msg_ring (Linux 5.18)");
    }
    let wq = adapter
        .work_queue(0, Target::Fixed(FileSlot(5)), 4, 4)
        .unwrap();
    let c = run(&wq, Op::share_file(FileSlot(5), &cq1, FileSlot(5), 1));
    assert_eq!(c.result, -libc::EBADF, "an empty source slot");
    // A slot outside the table has no work queue: on any other, a share is refused.
    let plain = adapter.work_queue(0, Target::Fd(-1), 4, 4).unwrap();
    for (slot, cookie) in [(100_000, 2), (5, 8)] {
        let c = run(
            &plain,
            Op::share_file(FileSlot(slot), &cq1, FileSlot(5), cookie),
        );
        assert!(
            matches!(c.rejected(), Some(DescriptorError::WrongQueue(_))),
            "slot {slot} shared from another work queue: {c:?}"
        );
    }
    let other = adapter
        .work_queue(0, Target::Fixed(FileSlot(7)), 4, 4)
        .unwrap();
    let c = run(&other, Op::share_file(FileSlot(5), &cq1, FileSlot(5), 9));
    assert!(
        matches!(c.rejected(), Some(DescriptorError::WrongQueue(_))),
        "shared from another slot's work queue: {c:?}"
    );

    let file = std::fs::File::open("/dev/null").unwrap();
    adapter.set_file(FileSlot(5), file.as_raw_fd()).unwrap();
    let c = run(&wq, Op::share_file(FileSlot(5), &cq0, FileSlot(6), 3));
    assert_eq!(c.result, -libc::EINVAL, "to its own ring");
    let c = run(&wq, Op::share_file(FileSlot(5), &cq1, FileSlot(100_000), 4));
    assert_eq!(c.result, -libc::EINVAL, "a target slot outside the table");
    let c = run(&wq, Op::share_file(FileSlot(5), &cq1, FileSlot(6), 5));
    assert_eq!(c.result, 0, "a good one after the failures");
    assert_eq!(wq.credits(), (4, 4));
}

fn set_file_survives_a_resize(cfg: regio_adapters::Config) {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(cfg) else {
        return;
    };
    let region = Region::new(&adapter, 1 << 16);
    let (file, path) = TempFile::pattern("adapters", 8192).keep();
    adapter.set_file(FileSlot(2), file.as_raw_fd()).unwrap();
    // Enough slots for several chunks of transfers.
    let many: Vec<FileSlot> = (100..130).map(FileSlot).collect();
    for &slot in &many {
        adapter.set_file(slot, file.as_raw_fd()).unwrap();
    }
    drop(file); // the rings hold their own references
    let cq = adapter.ring(0).unwrap();
    let old_fd = cq.ring_fd();
    adapter.resize_completion_queue(0, 512).unwrap();
    assert_ne!(cq.ring_fd(), old_fd, "a new ring took over");
    assert_eq!(cq.entries(), 512);
    for ring in 0..2 {
        let wq = adapter
            .work_queue(ring, Target::Fixed(FileSlot(2)), 4, 4)
            .unwrap();
        let c = run(&wq, Op::read_fixed(region.buf(0, 100), 1000, 1));
        assert_eq!(c.result, 100, "read through slot 2 on CQ {ring}: {c:?}");
        let data = c.buf.unwrap().contents();
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((1000 + i) % 251) as u8));
    }
    for &slot in &many {
        let wq = adapter.work_queue(0, Target::Fixed(slot), 1, 1).unwrap();
        let c = run(&wq, Op::read_fixed(region.buf(0, 4), 0, 9));
        assert_eq!(c.result, 4, "read through slot {slot:?}");
        adapter.remove_work_queue(&wq);
    }
    // Again (the reaps above drained the old ring): the files go on to the next ring.
    adapter.resize_completion_queue(0, 128).unwrap();
    let wq = adapter
        .work_queue(0, Target::Fixed(FileSlot(2)), 4, 4)
        .unwrap();
    assert_eq!(run(&wq, Op::read_fixed(region.buf(0, 10), 0, 2)).result, 10);
    // clear_file still empties the slot on every ring, the resized one included.
    adapter.clear_file(FileSlot(2)).unwrap();
    assert_eq!(
        run(&wq, Op::read_fixed(region.buf(0, 10), 0, 3)).result,
        -libc::EBADF
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_set_file_slot_is_carried_through_a_resize_sqpoll() {
    set_file_survives_a_resize(config(2, true));
}

#[test]
fn a_set_file_slot_is_carried_through_a_resize_interrupt_driven() {
    set_file_survives_a_resize(config(2, false));
}

#[test]
fn a_set_file_slot_is_carried_through_a_resize_coop_taskrun() {
    set_file_survives_a_resize(config(2, false).coop_taskrun(true));
}

fn accepted_slots_survive_a_resize(sqpoll: bool) {
    let Some((adapter, region, listener)) = setup(1, sqpoll) else {
        return;
    };
    let mut direct = accept_into(&adapter, &listener, 0, FileSlot(4));
    // A multishot accept: the kernel picks the slot.
    let lwq = adapter
        .work_queue(0, Target::Fd(listener.as_raw_fd()), 4, 4)
        .unwrap();
    lwq.post(Op::accept_multishot(10)).unwrap();
    let mut multi = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = common::collect(&lwq.ring(), 1);
    assert!(c[0].result >= 0 && !c[0].is_final(), "{c:?}");
    let allocated = FileSlot(c[0].result as u32);
    assert_ne!(allocated, FileSlot(4));
    lwq.post(Op::cancel(10, 11)).unwrap();
    let mut c = common::collect(&lwq.ring(), 2);
    c.sort_by_key(|c| c.cookie);
    assert_eq!((c[0].cookie, c[0].result), (10, -libc::ECANCELED));

    adapter.resize_completion_queue(0, 1024).unwrap();

    let wq4 = adapter
        .work_queue(0, Target::Fixed(FileSlot(4)), 4, 4)
        .unwrap();
    talk(&wq4, &region, &mut direct, b"accepted directly");
    let wqm = adapter
        .work_queue(0, Target::Fixed(allocated), 4, 4)
        .unwrap();
    talk(&wqm, &region, &mut multi, b"accepted by the multishot");
    // A slot nobody filled stays empty.
    let empty = FileSlot(200);
    assert_ne!(allocated, empty);
    let wqe = adapter.work_queue(0, Target::Fixed(empty), 4, 4).unwrap();
    assert_eq!(
        run(&wqe, Op::recv(region.buf(0, 8), 0, 1)).result,
        -libc::EBADF
    );
}

#[test]
fn accepted_slots_are_carried_through_a_resize_sqpoll() {
    accepted_slots_survive_a_resize(true);
}

#[test]
fn accepted_slots_are_carried_through_a_resize_interrupt_driven() {
    accepted_slots_survive_a_resize(false);
}

#[test]
fn a_set_file_slot_closed_on_one_ring_is_not_resurrected_by_a_resize() {
    let Some((adapter, region, _listener)) = setup(1, true) else {
        return;
    };
    let (file, path) = TempFile::pattern("adapters", 4096).keep();
    adapter.set_file(FileSlot(2), file.as_raw_fd()).unwrap();
    adapter.set_file(FileSlot(3), file.as_raw_fd()).unwrap();
    // Closing slot 2 through the ring empties it there, though the adapter still counts it as
    // set: the resize tries to carry it, the kernel refuses, and that stays internal.
    let wq2 = adapter
        .work_queue(0, Target::Fixed(FileSlot(2)), 4, 4)
        .unwrap();
    assert_eq!(run(&wq2, Op::close(1)).result, 0);
    adapter.resize_completion_queue(0, 512).unwrap();
    let c = run(&wq2, Op::read_fixed(region.buf(0, 10), 0, 2));
    assert_eq!(c.result, -libc::EBADF, "slot 2 stays closed");
    let wq3 = adapter
        .work_queue(0, Target::Fixed(FileSlot(3)), 4, 4)
        .unwrap();
    assert_eq!(
        run(&wq3, Op::read_fixed(region.buf(0, 10), 0, 3)).result,
        10
    );
    // The refused transfer's CQE was consumed, not handed out: the reaps above saw only their
    // own completions, and the old ring drained, so the next resize goes ahead.
    adapter.resize_completion_queue(0, 256).unwrap();
    assert_eq!(adapter.ring(0).unwrap().entries(), 256);
    assert_eq!(
        run(&wq3, Op::read_fixed(region.buf(0, 10), 0, 4)).result,
        10
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn an_accept_in_flight_across_a_resize_fills_the_old_ring_only() {
    // The documented limit: a multishot accept posted before the resize keeps accepting on the
    // old ring, whose table no work queue reaches any more.
    let Some((adapter, region, listener)) = setup(1, true) else {
        return;
    };
    let lwq = adapter
        .work_queue(0, Target::Fd(listener.as_raw_fd()), 4, 4)
        .unwrap();
    lwq.post(Op::accept_multishot(10)).unwrap();
    adapter.resize_completion_queue(0, 512).unwrap();
    let _late = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = common::collect(&lwq.ring(), 1);
    assert!(c[0].result >= 0 && !c[0].is_final(), "{c:?}");
    let wq = adapter
        .work_queue(0, Target::Fixed(FileSlot(c[0].result as u32)), 4, 4)
        .unwrap();
    assert_eq!(
        run(&wq, Op::recv(region.buf(0, 8), 0, 1)).result,
        -libc::EBADF,
        "the slot is on the old ring only"
    );
    // Posted again after the resize, the accept fills the current ring.
    lwq.post(Op::cancel(10, 11)).unwrap();
    assert_eq!(common::collect(&lwq.ring(), 2).len(), 2);
    let mut client = accept_into(&adapter, &listener, 0, FileSlot(7));
    let wq7 = adapter
        .work_queue(0, Target::Fixed(FileSlot(7)), 4, 4)
        .unwrap();
    talk(&wq7, &region, &mut client, b"accepted after the resize");
    // The old ring retired with the late connection (a warning names its slot): another
    // resize goes ahead.
    adapter.resize_completion_queue(0, 256).unwrap();
}
