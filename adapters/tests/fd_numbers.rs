//! Tests that watch fd *numbers*: a number closed by one part of the process and taken by
//! another, or the count of open descriptors. A test running beside them in the same process
//! could take or close a number between a check and a `dup2`, and make them close a descriptor
//! they do not own, so they live in this binary of their own and run one at a time.
//!
//! `unsafe` appears only for observation (`fcntl` to see whether an fd is open) or to make fd
//! numbers collide (`dup2`), never in the attack itself.

mod common;

use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{is_open, small_config as config, small_pool};
use regio_adapters::{Op, Target};
use regio_pool::Message;
use regio_testkit::TempFile;

const PATIENCE: Duration = Duration::from_secs(10);

/// Serializes the tests of this binary: each one owns the process's fd numbers while it runs.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_message_never_reaches_a_ring_that_reused_its_targets_fd_number() {
    let _serial = serial();
    let cfg = || config().sqpoll(None);
    let Some(source) = common::adapter_or_skip::<Message>(cfg()) else {
        return;
    };
    let target = common::adapter_or_skip::<Message>(cfg()).unwrap();
    let wq = source.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
    let (scq, tcq) = (wq.ring(), target.ring(0).unwrap());
    let old_fd = tcq.ring_fd();

    // The message's SQE is built (and its target's fd read) but not yet submitted.
    let mut batch = scq.batch().expect("nobody else owns the ring");
    batch.post(&wq, Op::msg_ring(&tcq, 77, 0, 1)).unwrap();

    // Meanwhile the target is resized, and its old ring retires and closes.
    target.resize_completion_queue(0, 256).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while is_open(old_fd) && Instant::now() < deadline {
        tcq.reap(&mut out, 16).unwrap();
    }
    assert!(!is_open(old_fd), "the retired ring was closed");

    // Another ring takes the old fd number.
    let stranger = common::adapter_or_skip::<Message>(cfg()).unwrap();
    let scq_fd = stranger.ring(0).unwrap().ring_fd();
    if scq_fd != old_fd {
        // SAFETY: `old_fd` is closed (checked above), so dup2 closes nothing; the duplicate
        // names the stranger's ring and is closed at the end of the test.
        assert_eq!(unsafe { libc::dup2(scq_fd, old_fd) }, old_fd);
    }

    batch.commit().unwrap();
    drop(batch);
    let c = common::wait_one(&scq);
    assert_eq!(c.cookie, 1);
    let mut got = Vec::new();
    let stranger_cq = stranger.ring(0).unwrap();
    stranger_cq
        .wait(&mut got, 4, Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        got.iter().all(|m| m.cookie != 77),
        "a message for the target reached another ring: {got:?}"
    );
    if scq_fd != old_fd {
        // SAFETY: the duplicate made above, owned by this test alone.
        unsafe { libc::close(old_fd) };
    }
}

#[test]
fn a_work_queue_keeps_its_file_when_the_caller_closes_its_fd() {
    let _serial = serial();
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let pool = small_pool();
    pool.attach(adapter.registrar()).unwrap();
    let (ours, ours_path) = TempFile::filled("adapters", b'O', 4096).keep();
    let number = ours.as_raw_fd();
    let wq = adapter.work_queue(0, Target::Fd(number), 8, 8).unwrap();
    // The caller closes its fd, and another file takes the number.
    drop(ours);
    let theirs = common::scratch(b'T');
    let taken = theirs.file().as_raw_fd();
    if taken != number {
        // SAFETY: `number` is closed (the file above was dropped), so dup2 closes nothing.
        assert_eq!(unsafe { libc::dup2(taken, number) }, number);
    }
    let mut msg = pool.try_acquire().unwrap();
    msg.as_mut_slice().fill(b'W');
    wq.post(Op::write_fixed(msg, 0, 1)).unwrap();
    let c = common::wait_one(&wq.ring());
    assert_eq!((c.result, c.rejected()), (4096, None));
    assert!(
        common::only(&theirs.contents(), b'T'),
        "the write went to the file that took the closed fd's number"
    );
    assert!(common::only(&std::fs::read(&ours_path).unwrap(), b'W'));
    if taken != number {
        // SAFETY: the duplicate made above, owned by this test alone.
        unsafe { libc::close(number) };
    }
    std::fs::remove_file(ours_path).unwrap();
}

#[test]
fn a_work_queue_on_a_number_that_names_no_file_is_refused() {
    let _serial = serial();
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
    let closed = file.as_raw_fd();
    drop(file);
    std::fs::remove_file(path).unwrap();
    assert!(!is_open(closed));
    assert!(matches!(
        adapter.work_queue(0, Target::Fd(closed), 8, 8),
        Err(regio_adapters::Error::Sys { .. })
    ));
}

/// The kernel looks up a plain fd when it *issues* an operation, not when it takes the SQE: a
/// drained operation waits in the kernel behind the operations before it. If the work queue is
/// removed and dropped meanwhile, its duplicate closes, another file takes the number, and the
/// write lands in that file.
///
/// The kernel resolves a plain fd at issue, which for a drained or `force_async` operation (and,
/// with SQPOLL, for any SQE the kernel thread has not taken yet) comes after the post returned:
/// a removed queue keeps its duplicate fd until its last operation's final completion.
#[test]
fn a_drained_write_never_reaches_a_file_that_took_its_removed_queues_fd_number() {
    let _serial = serial();
    regio_testkit::within(Duration::from_secs(30), "drained write", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        let pool = small_pool();
        pool.attach(adapter.registrar()).unwrap();
        let (ours, our_path) = TempFile::filled("adapters", b'O', 4096).keep();
        let wq = adapter
            .work_queue(0, Target::Fd(ours.as_raw_fd()), 8, 8)
            .unwrap();
        let cq = wq.ring();
        let number = wq.target();
        let Target::Fd(number) = number else {
            unreachable!()
        };
        // Something slow ahead of it on the ring, then the write, drained behind it.
        let mut msg = pool.try_acquire().unwrap();
        msg.as_mut_slice().fill(b'W');
        let write = Op::write_fixed(msg, 0, 2);
        let _timer = common::post_drained_behind_a_timeout(
            &adapter,
            0,
            Duration::from_millis(400),
            &wq,
            write,
        );

        // The queue goes away, with every handle, and its old table versions are reclaimed.
        adapter.remove_work_queue(&wq);
        drop(wq);
        adapter.domain().barrier();
        let closed = !is_open(number);
        // Another file takes the number (if it was closed).
        let (theirs, their_path) = TempFile::filled("adapters", b'T', 4096).keep();
        let collided = closed && theirs.as_raw_fd() != number;
        if collided {
            // SAFETY: `number` is closed (checked above), so dup2 closes nothing of anyone's.
            assert_eq!(unsafe { libc::dup2(theirs.as_raw_fd(), number) }, number);
        }

        let got = common::collect(&cq, 2);
        let write = got.iter().find(|c| c.cookie == 2).unwrap();
        let theirs_now = std::fs::read(&their_path).unwrap();
        if collided {
            // SAFETY: the duplicate made above, owned by this test alone.
            unsafe { libc::close(number) };
        }
        std::fs::remove_file(&our_path).unwrap();
        std::fs::remove_file(&their_path).unwrap();
        assert!(
            theirs_now.iter().all(|&b| b == b'T'),
            "the drained write (result {}) went to the file that took the removed queue's fd \
             number (closed before issue: {closed})",
            write.result
        );
        drop(theirs);
        drop(ours);
    });
}

/// The docs of `Target::Fd`: the duplicate closes once the queue is removed and its last handle
/// dropped. With nothing in flight, it must not wait for unrelated table writes.
#[test]
fn a_removed_queues_fd_closes_once_its_last_handle_drops() {
    let _serial = serial();
    let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
        return;
    };
    let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
    let wq = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
        .unwrap();
    let Target::Fd(dup) = wq.target() else {
        unreachable!()
    };
    assert!(is_open(dup));
    adapter.remove_work_queue(&wq);
    drop(wq);
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_open(dup) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = is_open(dup);
    std::fs::remove_file(path).unwrap();
    assert!(
        !open,
        "the removed queue's duplicate fd {dup} is still open"
    );
}

/// Work queues on a plain fd created and removed 1000 times, and CQ resizes: their fd
/// duplicates and retired rings close.
#[test]
fn queues_and_resizes_in_a_loop_leak_no_fd() {
    let _serial = serial();
    regio_testkit::within(Duration::from_secs(60), "fd loop", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
        let before = open_fds();
        for _ in 0..1000 {
            let wq = adapter
                .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
                .unwrap();
            wq.post(Op::fsync(1)).unwrap();
            common::wait_one(&wq.ring());
            adapter.remove_work_queue(&wq);
        }
        let cq = adapter.ring(0).unwrap();
        let mut out = Vec::new();
        for k in 0..20 {
            adapter
                .resize_completion_queue(0, if k % 2 == 0 { 128 } else { 64 })
                .unwrap();
            // The old ring retires at the next reap that finds it drained.
            cq.reap(&mut out, 16).unwrap();
        }
        let after = open_fds();
        std::fs::remove_file(path).unwrap();
        assert!(after <= before, "{before} fds before, {after} after");
    });
}

/// The number of open fds of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
