//! Regression tests for the ways safe code could once make the kernel touch memory its caller
//! does not own, or make a thread wait for itself: each test here failed (or hung) before the
//! fix it names.

mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{is_open, small_config as config, small_pool};
use regio_adapters::{DescriptorError, Op, Target};
use regio_pool::{DescFlags, Message, MessagePool, Opcode};

const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn a_descriptor_cannot_point_a_message_at_another_message() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let pool = small_pool();
    pool.attach(adapter.registrar()).unwrap();
    let (wq, _scratch) = common::file_queue(&adapter, b'F');
    let cq = wq.ring();
    let mut victim = pool.try_acquire().unwrap();
    victim.as_mut_slice().fill(b'V');

    // Aimed with set_slices.
    let mut a = pool.try_acquire().unwrap();
    a.descriptor_mut().set_slices(&[victim.key()]).unwrap();
    wq.post(Op::read_fixed(a, 0, 1)).unwrap();
    let c = common::wait_one(&cq);
    assert!(
        matches!(c.rejected(), Some(DescriptorError::NotOwned { .. })),
        "{c:?}"
    );
    assert!(
        common::only(victim.as_slice(), b'V'),
        "the kernel wrote into a message nobody posted"
    );

    // Aimed by copying the victim's whole descriptor.
    let mut b = c.buf.unwrap();
    *b.descriptor_mut() = victim.descriptor().clone();
    wq.post(Op::read_fixed(b, 0, 2)).unwrap();
    let c = common::wait_one(&cq);
    assert!(
        matches!(c.rejected(), Some(DescriptorError::NotOwned { .. })),
        "{c:?}"
    );
    assert!(common::only(victim.as_slice(), b'V'));

    // A slice inside the message's own buffer is fine.
    let mut own = c.buf.unwrap();
    let mut key = own.key();
    key.offset += 100;
    key.len = 10;
    own.descriptor_mut().set_slices(&[key]).unwrap();
    wq.post(Op::read_fixed(own, 0, 3)).unwrap();
    let c = common::wait_one(&cq);
    assert_eq!((c.result, c.rejected()), (10, None));
    let own = c.buf.unwrap();
    assert_eq!(&own.as_slice()[100..110], &[b'F'; 10]);
}

#[test]
fn two_pools_on_one_adapter_never_share_a_fixed_buffer() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let (a, b) = (small_pool(), small_pool());
    a.attach(adapter.registrar()).unwrap();
    b.attach(adapter.registrar()).unwrap();
    let (wq, _scratch) = common::file_queue(&adapter, b'F');
    let mut bs: Vec<Message> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    for m in &mut bs {
        m.as_mut_slice().fill(b'B');
    }
    let mut msg = a.try_acquire().unwrap();
    msg.as_mut_slice().fill(b'A');
    wq.post(Op::read_fixed(msg, 0, 1)).unwrap();
    let c = common::wait_one(&wq.ring());
    assert_eq!((c.result, c.rejected()), (4096, None));
    assert!(common::only(c.buf.unwrap().as_slice(), b'F'));
    for m in &bs {
        assert!(
            common::only(m.as_slice(), b'B'),
            "a read into pool A landed in pool B"
        );
    }
}

#[test]
fn a_message_of_a_pool_that_was_never_attached_is_rejected() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let attached = small_pool();
    attached.attach(adapter.registrar()).unwrap();
    let stranger = small_pool();
    let (wq, _scratch) = common::file_queue(&adapter, b'F');
    let mut held: Vec<Message> = (0..4).map(|_| attached.try_acquire().unwrap()).collect();
    for m in &mut held {
        m.as_mut_slice().fill(b'H');
    }
    wq.post(Op::read_fixed(stranger.try_acquire().unwrap(), 0, 1))
        .unwrap();
    let c = common::wait_one(&wq.ring());
    assert_eq!(
        c.rejected(),
        Some(&DescriptorError::NotAttached {
            pool: stranger.id()
        })
    );
    for m in &held {
        assert!(
            common::only(m.as_slice(), b'H'),
            "the read used another pool's buffer"
        );
    }
}

#[test]
fn dropping_the_last_message_of_a_pool_while_reaping_returns() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    regio_testkit::within(
        PATIENCE,
        "dropping a pool's last message in reap_each",
        move || {
            let pool = small_pool();
            pool.attach(adapter.registrar()).unwrap();
            let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
            let mut msg = pool.try_acquire().unwrap();
            msg.descriptor_mut().opcode = Opcode::Nop;
            wq.post(Op::from_message(msg).unwrap()).unwrap();
            drop(pool); // the message in flight is now the pool's last user
            let cq = wq.ring();
            let deadline = Instant::now() + PATIENCE;
            let mut seen = 0;
            while seen == 0 && Instant::now() < deadline {
                // The completion, and with it the pool, is dropped inside the closure, with the
                // ring owned: the pool unregisters its region from this very ring.
                seen += cq.reap_each(8, drop).unwrap();
            }
            assert_eq!(seen, 1);
        },
    );
}

#[test]
fn growing_a_pool_inside_a_batch_returns() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    regio_testkit::within(PATIENCE, "pool.grow inside a Batch", move || {
        let pool = small_pool();
        pool.attach(adapter.registrar()).unwrap();
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let cq = wq.ring();
        let mut batch = cq.batch().expect("nobody else owns the ring");
        pool.grow(0, 4).unwrap();
        let mut msg = pool.try_acquire_class(0).unwrap();
        msg.descriptor_mut().opcode = Opcode::Nop;
        batch.post(&wq, Op::from_message(msg).unwrap()).unwrap();
        batch.commit().unwrap();
        drop(batch);
        let c = common::wait_one(&cq);
        assert_eq!((c.result, c.rejected()), (0, None));
    });
}

#[test]
fn a_low_watermark_callback_that_grows_inside_a_batch_returns() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    regio_testkit::within(
        PATIENCE,
        "a growing low-watermark callback inside a Batch",
        move || {
            let grown = Arc::new(AtomicUsize::new(0));
            let slot: Arc<std::sync::Mutex<Option<MessagePool>>> = Arc::default();
            let (g, s) = (Arc::clone(&grown), Arc::clone(&slot));
            let pool = MessagePool::builder()
                .class(4096, 4)
                .cache_size(0)
                .low_watermark(0, 2, move |ev| {
                    if let Some(pool) = s.lock().unwrap().as_ref() {
                        pool.grow(ev.class, 4).unwrap();
                        // Relaxed: read on this thread after the callback returns.
                        g.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()
                .unwrap();
            pool.attach(adapter.registrar()).unwrap();
            *slot.lock().unwrap() = Some(pool.clone());
            let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
            let cq = wq.ring();
            let batch = cq.batch().expect("nobody else owns the ring");
            let held: Vec<Message> = (0..3).map(|_| pool.try_acquire().unwrap()).collect();
            // Relaxed: written on this thread, by the callback.
            assert_eq!(
                grown.load(Ordering::Relaxed),
                1,
                "the callback grew the pool"
            );
            assert_eq!(pool.capacity(0), 8);
            drop((batch, held));
            // The pool holds itself through the callback's slot; break the cycle.
            slot.lock().unwrap().take();
        },
    );
}

#[test]
fn growth_racing_a_batch_on_another_thread_returns() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    regio_testkit::within(
        PATIENCE,
        "two threads growing one pool, one of them in a Batch",
        move || {
            let pool = small_pool();
            pool.attach(adapter.registrar()).unwrap();
            let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
            let cq = wq.ring();
            let batch = cq.batch().expect("nobody else owns the ring");
            // The other thread grows while this one owns the ring: it must not wait for it.
            let other = {
                let pool = pool.clone();
                std::thread::spawn(move || pool.grow(0, 4).map(drop))
            };
            std::thread::sleep(Duration::from_millis(100));
            pool.grow(0, 4).unwrap();
            other.join().unwrap().unwrap();
            drop(batch);
            assert_eq!(pool.capacity(0), 12);
        },
    );
}

#[test]
fn a_pool_grows_after_its_adapter_is_dropped_and_a_registrar_detaches() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let pool = small_pool();
    let registrar = adapter.registrar();
    pool.attach(Arc::clone(&registrar)).unwrap();
    drop(adapter);
    pool.grow(0, 4)
        .expect("a dropped adapter no longer holds the pool back");

    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let registrar = adapter.registrar();
    pool.attach(Arc::clone(&registrar)).unwrap();
    let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let nop = |pool: &MessagePool| {
        let msg = pool.try_acquire().unwrap();
        wq.post(Op::from_message(msg).unwrap()).unwrap();
        common::wait_one(&wq.ring())
    };
    assert_eq!(nop(&pool).rejected(), None);
    assert!(pool.detach(&registrar));
    assert!(!pool.detach(&registrar), "detached once only");
    assert_eq!(
        nop(&pool).rejected(),
        Some(&DescriptorError::NotAttached { pool: pool.id() })
    );
    pool.attach(registrar).expect("attached again");
    assert_eq!(nop(&pool).rejected(), None);
}

#[test]
fn every_descriptor_flag_reaches_the_sqe_or_is_refused() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let pool = small_pool();
    pool.attach(adapter.registrar()).unwrap();
    let (wq, scratch) = common::file_queue(&adapter, b'F');
    let cq = wq.ring();

    // DRAIN: the NOP waits for the timeout posted before it.
    wq.post(Op::timeout(Duration::from_millis(200), 1)).unwrap();
    let mut msg = pool.try_acquire().unwrap();
    msg.descriptor_mut().flags = DescFlags::DRAIN;
    msg.descriptor_mut().cookie = 2;
    wq.post(Op::from_message(msg).unwrap()).unwrap();
    let order: Vec<u64> = common::collect(&cq, 2).iter().map(|c| c.cookie).collect();
    assert_eq!(order, [1, 2], "the drained NOP completed after the timeout");

    // FUA and ASYNC on a write: durable, and completed as usual.
    let mut msg = pool.try_acquire().unwrap();
    msg.as_mut_slice().fill(b'W');
    let d = msg.descriptor_mut();
    (d.opcode, d.flags, d.cookie) = (Opcode::WriteFixed, DescFlags::FUA | DescFlags::ASYNC, 3);
    wq.post(Op::from_message(msg).unwrap()).unwrap();
    let c = common::wait_one(&cq);
    assert_eq!((c.cookie, c.result, c.rejected()), (3, 4096, None));
    assert!(common::only(&scratch.contents(), b'W'));

    // Refused: FUA on a read, unknown bits, an offset on a send.
    let refused = |opcode, flags, offset| {
        let mut msg = pool.try_acquire().unwrap();
        let d = msg.descriptor_mut();
        (d.opcode, d.flags, d.offset) = (opcode, flags, offset);
        match Op::from_message(msg) {
            Err((_, DescriptorError::Invalid(why))) => why,
            Err((_, e)) => panic!("{e}"),
            Ok(_) => panic!("{opcode:?} {flags:?} at {offset} was taken"),
        }
    };
    assert!(refused(Opcode::ReadFixed, DescFlags::FUA, 0).contains("FUA"));
    assert!(refused(Opcode::WriteFixed, DescFlags(1 << 0), 0).contains("flags"));
    assert!(refused(Opcode::Send, DescFlags::NONE, 7).contains("offset"));
}

#[test]
fn a_scatter_message_is_refused_whole_rather_than_cut() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let pool = small_pool();
    pool.attach(adapter.registrar()).unwrap();
    let (client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(client.as_raw_fd()), 8, 8)
        .unwrap();
    let mut msg = pool.try_acquire_len(8192).unwrap();
    assert_eq!(msg.buf_count(), 2);
    msg.descriptor_mut().opcode = Opcode::Send;
    wq.post(Op::from_message(msg).unwrap()).unwrap();
    let c = common::wait_one(&wq.ring());
    assert_eq!(c.rejected(), Some(&DescriptorError::Scatter { slices: 2 }));
    // Nothing reached the socket.
    server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    let got = std::io::Read::read(&mut &server, &mut buf);
    assert!(
        matches!(got, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{got:?}"
    );
}

#[test]
fn a_close_cannot_take_a_plain_fd_queues_file_from_under_it() {
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let (wq, scratch) = common::file_queue(&adapter, b'F');
    wq.post(Op::close(1)).unwrap();
    let c = common::wait_one(&wq.ring());
    assert!(
        matches!(c.rejected(), Some(DescriptorError::WrongQueue(_))),
        "{c:?}"
    );
    // The caller's own fd is untouched, and so is the queue's.
    assert!(is_open(scratch.file().as_raw_fd()));
    wq.post(Op::fsync(2)).unwrap();
    assert_eq!(common::wait_one(&wq.ring()).result, 0);
}
