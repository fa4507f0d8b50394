//! The adapter with regio-pool: the pool registers its regions through the adapter, messages are
//! the operations' buffers, and a send_zc buffer returns to the pool only after `F_NOTIF`.

mod common;

use regio_testkit::TempFile;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use regio_adapters::{Completion, Config, DescriptorError, Op, Target};
use regio_pool::Message;

#[test]
fn pool_messages_are_fixed_buffers_on_every_ring() {
    let Some(adapter) = common::adapter_or_skip::<Message>(Config::default().rings(2)) else {
        return;
    };
    let pool = common::message_pool(&adapter, 4096);
    let (file, path) = TempFile::pattern("adapters", 0).keep();
    for cq in 0..2 {
        let wq = adapter
            .work_queue(cq, Target::Fd(file.as_raw_fd()), 4, 4)
            .unwrap();
        let mut msg = pool.try_acquire().unwrap();
        msg.as_mut_slice().fill(b'a' + cq as u8);
        wq.post(Op::write_fixed(msg, 4096 * cq as u64, 1)).unwrap();
        let c = common::wait_one(&wq.ring());
        assert_eq!(c.result, 4096, "{c:?}");
        let back = c.buf.expect("the message comes back");
        assert_eq!(back.as_slice()[0], b'a' + cq as u8);
        wq.post(Op::read_fixed(back, 0, 2)).unwrap();
        let c = common::wait_one(&wq.ring());
        assert_eq!(c.result, 4096);
        assert!(c.buf.unwrap().as_slice().iter().all(|b| *b == b'a'));
    }
    assert_eq!(pool.available(0), 16, "every message went back to the pool");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_send_zc_buffer_returns_to_the_pool_only_after_f_notif() {
    let Some(adapter) = common::adapter_or_skip::<Message>(Config::default()) else {
        return;
    };
    let pool = common::message_pool(&adapter, 4096);
    let (client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 4, 4)
        .unwrap();
    let cq = wq.ring();
    let mut msg = pool.try_acquire().unwrap();
    if !adapter.supports(&Op::send_zc(pool.try_acquire().unwrap(), 0, 0)) {
        return regio_testkit::skip("the kernel lacks send_zc (Linux 6.0)");
    }
    msg.as_mut_slice().fill(7);
    assert_eq!(pool.available(0), 15);
    wq.post(Op::send_zc(msg, 0, 1)).unwrap();
    let first = common::wait_one(&cq);
    assert_eq!(first.result, 4096);
    assert!(!first.is_final() && first.buf.is_none(), "{first:?}");
    assert_eq!(
        pool.available(0),
        15,
        "the kernel may still read the buffer: it is not back"
    );
    let mut data = vec![0u8; 4096];
    (&client).read_exact(&mut data).unwrap();
    assert!(data.iter().all(|b| *b == 7));
    let notif = common::wait_one(&cq);
    assert!(notif.is_notification() && notif.is_final(), "{notif:?}");
    assert_eq!(
        pool.available(0),
        15,
        "held by the completion until dropped"
    );
    drop(notif);
    assert_eq!(pool.available(0), 16);
}

#[test]
fn dropping_the_adapter_cancels_in_flight_operations_and_returns_their_buffers() {
    let Some(adapter) = common::adapter_or_skip::<Message>(Config::default()) else {
        return;
    };
    let pool = common::message_pool(&adapter, 4096);
    let (_client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 4, 4)
        .unwrap();
    for i in 0..3 {
        wq.post(Op::recv(pool.try_acquire().unwrap(), 0, i))
            .unwrap();
    }
    let mut out = Vec::new();
    wq.ring()
        .wait(&mut out, 4, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(out.is_empty(), "nothing was sent: the receives are pending");
    assert_eq!(pool.available(0), 13);
    drop(wq);
    drop(adapter);
    assert_eq!(
        pool.available(0),
        16,
        "the ring cancelled its receives and gave the buffers back after their final CQEs"
    );
}

#[test]
fn multishot_recv_fills_pool_buffers_from_a_provided_ring() {
    use regio_pool::BufFeed;
    use std::io::Write;

    let Some(adapter) = common::adapter_or_skip::<Message>(Config::default()) else {
        return;
    };
    let pool = common::message_pool(&adapter, 2048);
    let ring = match adapter.provided_ring(0, 7, 8) {
        Ok(r) => r,
        Err(regio_adapters::Error::Unsupported { what, since }) => {
            return regio_testkit::skip(&format!("{what} needs Linux {since}"));
        }
        Err(e) => panic!("{e}"),
    };
    let feed = BufFeed::new(&pool, 0, 8, ring).unwrap();
    assert_eq!(pool.available(0), 8, "eight buffers lent to the ring");

    let (mut client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 4, 4)
        .unwrap();
    let cq = wq.ring();
    wq.post(Op::recv_multishot(7, 1)).unwrap();

    let mut got = Vec::new();
    for word in ["one", "two", "three"] {
        client.write_all(word.as_bytes()).unwrap();
        let c = common::wait_one(&cq);
        assert!(c.result > 0 && !c.is_final(), "{c:?}");
        let bid = c.buffer_id().expect("a provided buffer");
        // SAFETY: the kernel picked `bid` for this completion, taken once.
        let msg = unsafe { feed.take(bid, c.result as u32) }.unwrap();
        got.push(String::from_utf8(msg.data().to_vec()).unwrap());
        // Dropping the received message puts its buffer back into the ring.
    }
    assert_eq!(got.concat(), "onetwothree");
    assert_eq!(wq.credits().1, 3, "the multishot holds one receive credit");

    wq.post(Op::cancel(1, 2)).unwrap();
    let mut out = Vec::new();
    while !out
        .iter()
        .any(|c: &Completion<Message>| c.cookie == 1 && c.is_final())
    {
        cq.wait(&mut out, 4, Some(Duration::from_secs(5))).unwrap();
    }
    drop(feed);
    assert_eq!(pool.available(0), 16, "every buffer is back in the pool");
}

#[test]
fn a_pool_descriptor_becomes_an_operation_on_its_work_queue() {
    use regio_pool::{FileSlot, Opcode};

    let Some(adapter) = common::adapter_or_skip::<Message>(Config::default()) else {
        return;
    };
    let pool = common::message_pool(&adapter, 4096);
    let (file, path) = TempFile::pattern("adapters", 8192).keep();
    let wq = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 4, 4)
        .unwrap();
    let mut msg = pool.try_acquire().unwrap();
    msg.as_mut_slice().fill(b'z');
    let d = msg.descriptor_mut();
    d.opcode = Opcode::WriteFixed;
    d.offset = 4096;
    d.cookie = 42;
    wq.post_message(msg).unwrap();
    let c = common::wait_one(&wq.ring());
    assert_eq!((c.cookie, c.result), (42, 4096));
    assert!(std::fs::read(&path).unwrap()[4096..]
        .iter()
        .all(|b| *b == b'z'));

    // A descriptor naming another file, or an offset on an operation without one, comes
    // straight back.
    let mut msg = c.buf.unwrap();
    msg.descriptor_mut().file = Some(FileSlot(3));
    let back = wq.post_message(msg).unwrap_err();
    assert!(
        matches!(back, regio_adapters::MessageError::Descriptor(..)),
        "{back}"
    );
    let mut msg = back.into_message();
    msg.descriptor_mut().file = None;
    msg.descriptor_mut().opcode = Opcode::Send;
    let back = wq.post_message(msg).unwrap_err();
    assert!(
        matches!(
            back,
            regio_adapters::MessageError::Descriptor(_, DescriptorError::Invalid(_))
        ),
        "{back}"
    );

    // A post the work queue refuses hands the message back with the reason.
    let mut msg = back.into_message();
    msg.descriptor_mut().opcode = Opcode::WriteFixed;
    adapter.remove_work_queue(&wq);
    let back = wq.post_message(msg).unwrap_err();
    assert!(
        matches!(
            back,
            regio_adapters::MessageError::Post(_, regio_adapters::PostError::Closed(()))
        ),
        "{back}"
    );
    assert_eq!(back.to_string(), "post failed: the work queue was removed");
    assert_eq!(back.into_message().descriptor().cookie, 42);
    std::fs::remove_file(path).unwrap();
}
