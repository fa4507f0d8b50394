//! Single-issuer mode (`Config::single_issuer`): one owner thread per ring, set up with
//! `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{config, Region, TestBuf};
use regio_adapters::probe::{KernelProbe, SetupFlag};
use regio_adapters::{Adapter, Config, Error, FileSlot, Op, Ring, SingleIssuer, Target, WorkQueue};
use regio_testkit::TempFile;

/// Generous bound on every wait: a hang fails the test instead of blocking it.
const LONG: Duration = Duration::from_secs(10);

fn single_issuer(rings: usize) -> Config {
    config(rings, false).single_issuer(true)
}

/// The errno of a raw system call's result `r`, or 0 when it succeeded.
fn errno_of(r: libc::c_long) -> i32 {
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    } else {
        0
    }
}

/// `io_uring_enter(fd, 0, 0, GETEVENTS)` on the calling thread: its errno, or 0.
fn enter_getevents(ring_fd: i32) -> i32 {
    const GETEVENTS: libc::c_uint = 1;
    // SAFETY: no SQE is submitted and no argument pointer is passed; the kernel only checks
    // the caller and runs or waits for nothing (min_complete 0).
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring_fd,
            0,
            0,
            GETEVENTS,
            std::ptr::null::<libc::sigset_t>(),
            0,
        )
    };
    errno_of(r)
}

/// `io_uring_register(fd, IORING_REGISTER_PROBE, NULL, 0)` on the calling thread: its errno,
/// or 0. The NULL argument fails for the owner; only the errno matters.
fn register_probe(ring_fd: i32) -> i32 {
    const IORING_REGISTER_PROBE: libc::c_uint = 8;
    // SAFETY: a NULL argument with a count of 0: the kernel reads and writes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            IORING_REGISTER_PROBE,
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    errno_of(r)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Waits (bounded) until thread `tid` of this process sleeps, read from procfs: the proof that
/// an owner is asleep in `wait`, with no sleep in the test.
fn until_asleep(tid: libc::pid_t) {
    let path = format!("/proc/self/task/{tid}/stat");
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(&path).expect("the owner thread's stat");
        // The state follows the parenthesised command name.
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        if state == Some('S') {
            return;
        }
        std::thread::yield_now();
    }
    panic!("the owner never went to sleep in wait");
}

#[test]
fn the_rings_are_single_issuer_with_defer_taskrun_where_the_kernel_has_it() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(single_issuer(1)) else {
        return;
    };
    let probe = KernelProbe::run().expect("probe");
    let expected = if probe.setup_flag(SetupFlag::DeferTaskrun) {
        SingleIssuer::DeferTaskrun
    } else if probe.setup_flag(SetupFlag::SingleIssuer) {
        SingleIssuer::CoopTaskrun
    } else {
        SingleIssuer::Plain
    };
    assert_eq!(adapter.single_issuer(), Some(expected));
    let cq = adapter.ring(0).unwrap();
    cq.bind_owner().unwrap();
    cq.bind_owner()
        .expect("binding again from the owner does nothing");
    let fd = cq.ring_fd();
    if expected == SingleIssuer::DeferTaskrun {
        // The kernel itself refuses another task: with DEFER_TASKRUN only the submitter task
        // may wait for completions.
        assert_eq!(enter_getevents(fd), 0, "the owner may enter");
        let other = std::thread::spawn(move || enter_getevents(fd))
            .join()
            .unwrap();
        assert_eq!(other, libc::EEXIST, "a non-owner's GETEVENTS is refused");
    }
    if expected != SingleIssuer::Plain {
        // And any registration from another thread, whatever it asks (checked first).
        assert_ne!(register_probe(fd), libc::EEXIST, "the owner may register");
        let other = std::thread::spawn(move || register_probe(fd))
            .join()
            .unwrap();
        assert_eq!(other, libc::EEXIST, "a non-owner's registration is refused");
    }
    let default = common::adapter_or_skip::<TestBuf>(config(1, false)).unwrap();
    assert_eq!(default.single_issuer(), None);
    assert!(matches!(
        default.ring(0).unwrap().bind_owner(),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn single_issuer_with_sqpoll_is_refused() {
    let cfg = config(1, true).single_issuer(true);
    match Adapter::<TestBuf>::new(cfg) {
        Err(Error::Invalid(what)) => assert!(what.contains("sqpoll"), "{what}"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

/// Runs `test` as owner of a single-issuer ring with a 64 KiB region and a queue on an 8 KiB file.
fn with_an_owned_file_queue(
    test: impl FnOnce(&Adapter<TestBuf>, &Arc<Region>, &WorkQueue<TestBuf>, &Ring<TestBuf>),
) {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(single_issuer(1)) else {
        return;
    };
    // Registered before the bind, from the thread that will own the ring.
    let region = Region::new(&adapter, 1 << 16);
    let (file, path) = TempFile::pattern("adapters", 8192).keep();
    let wq = adapter
        .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
        .unwrap();
    let cq = wq.ring();
    cq.bind_owner().unwrap();
    test(&adapter, &region, &wq, &cq);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_owner_posts_and_reaps_nops_and_file_reads() {
    with_an_owned_file_queue(|adapter, region, wq, cq| {
        for i in 0..4 {
            wq.post(Op::nop(i)).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            let c = common::wait_one(cq);
            assert_eq!(c.result, 0);
            got.push(c.cookie);
        }
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
        // Reads complete through task work, which DEFER_TASKRUN runs only when the owner reaps.
        for round in 0..3u64 {
            let offset = 1024 * round;
            wq.post(Op::read_fixed(region.buf(0, 4096), offset, 10 + round))
                .unwrap();
            let c = common::wait_one(cq);
            assert_eq!((c.cookie, c.result), (10 + round, 4096));
            let buf = c.buf.expect("the buffer comes back");
            assert!(buf
                .contents()
                .iter()
                .enumerate()
                .all(|(i, b)| *b == ((offset as usize + i) % 251) as u8));
        }
        // A timeout completes from a kernel timer, always through task work.
        wq.post(Op::timeout(Duration::from_millis(20), 20)).unwrap();
        let c = common::wait_one(cq);
        assert_eq!((c.cookie, c.result), (20, -libc::ETIME));
        let mut batch = cq.batch().expect("the owner takes a batch");
        batch.post(wq, Op::nop(30)).unwrap();
        batch.commit().unwrap();
        drop(batch);
        assert_eq!(common::wait_one(cq).cookie, 30);
        let s = adapter.stats();
        assert_eq!((s.submitted, s.completed), (9, 9));
    });
}

#[test]
fn a_post_from_another_thread_wakes_the_owner_asleep_in_wait() {
    with_an_owned_file_queue(|_adapter, region, wq, cq| {
        // SAFETY: gettid has no preconditions.
        let owner_tid = unsafe { libc::gettid() };
        let (go, rounds) = mpsc::channel::<u64>();
        let poster = {
            let (wq, region) = (wq.clone(), Arc::clone(region));
            std::thread::spawn(move || {
                for round in rounds {
                    until_asleep(owner_tid);
                    let op = if round % 2 == 0 {
                        Op::nop(round)
                    } else {
                        Op::read_fixed(region.buf(0, 512), 0, round)
                    };
                    wq.post(op).expect("a foreign post is taken");
                    // Nothing may be reaped off the owner thread.
                    let mut out = Vec::new();
                    assert_eq!(wq.ring().reap(&mut out, 8).unwrap(), 0);
                }
            })
        };
        for round in 0..6u64 {
            go.send(round).unwrap();
            let c = common::wait_one(cq);
            assert_eq!(c.cookie, round);
            let expected = if round % 2 == 0 { 0 } else { 512 };
            assert_eq!(c.result, expected);
        }
        drop(go);
        poster.join().unwrap();
    });
}

#[test]
fn a_non_owner_cannot_reap_batch_wait_bind_or_register() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(single_issuer(2)) else {
        return;
    };
    let cq = adapter.ring(0).unwrap();
    cq.bind_owner().unwrap();
    let wq = adapter.work_queue(0, Target::Fd(-1), 4, 4).unwrap();
    let other = adapter.clone();
    std::thread::spawn(move || {
        let cq = other.ring(0).unwrap();
        let mut out = Vec::new();
        assert_eq!(cq.reap(&mut out, 8).unwrap(), 0);
        assert!(cq.batch().is_none());
        assert!(matches!(
            cq.wait(&mut out, 8, Some(LONG)),
            Err(Error::NotOwner)
        ));
        assert!(matches!(cq.bind_owner(), Err(Error::NotOwner)));
        assert!(matches!(
            other.set_file(FileSlot(0), 0),
            Err(Error::NotOwner)
        ));
        let mut memory = vec![0u8; 4096];
        // SAFETY: refused before the kernel sees it; the memory outlives the call anyway.
        let registered = unsafe { other.register_region(memory.as_mut_ptr(), memory.len()) };
        assert!(matches!(registered, Err(Error::NotOwner)));
        // Ring 1 has no owner: this thread may bind it, and then owns it.
        let cq1 = other.ring(1).unwrap();
        cq1.bind_owner().unwrap();
        assert!(cq1.batch().is_some());
        // Registration now needs one thread owning both rings: nobody has them both.
        assert!(matches!(
            other.set_file(FileSlot(0), 0),
            Err(Error::NotOwner)
        ));
    })
    .join()
    .unwrap();
    // The owner of ring 0 does not own ring 1 either.
    assert!(matches!(
        adapter.set_file(FileSlot(0), 0),
        Err(Error::NotOwner)
    ));
    wq.post(Op::nop(1)).unwrap();
    assert_eq!(common::wait_one(&cq).cookie, 1);
}

#[test]
fn posts_before_the_bind_wait_for_the_owner_and_one_owner_may_register_everywhere() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(single_issuer(2)) else {
        return;
    };
    let wq = adapter.work_queue(1, Target::Fd(-1), 4, 4).unwrap();
    // Nobody owns the ring yet: the post waits in the inbox, and nothing is submitted.
    wq.post(Op::nop(7)).unwrap();
    assert_eq!(adapter.stats().submitted, 0);
    let owner = {
        let adapter = adapter.clone();
        std::thread::spawn(move || {
            adapter.bind_owner().unwrap();
            let cq = adapter.ring(1).unwrap();
            let c = common::wait_one(&cq);
            assert_eq!((c.cookie, c.result), (7, 0));
            // Owning every ring, this thread may register on all of them.
            let region = Region::new(&adapter, 1 << 12);
            let (file, path) = TempFile::pattern("adapters", 4096).keep();
            adapter.set_file(FileSlot(3), file.as_raw_fd()).unwrap();
            let wq = adapter
                .work_queue(0, Target::Fixed(FileSlot(3)), 4, 4)
                .unwrap();
            wq.post(Op::read_fixed(region.buf(0, 100), 0, 8)).unwrap();
            let c = common::wait_one(&wq.ring());
            assert_eq!((c.cookie, c.result), (8, 100));
            std::fs::remove_file(path).unwrap();
            drop(wq);
            adapter.clear_file(FileSlot(3)).unwrap();
        })
    };
    owner.join().unwrap();
}

#[test]
fn dropping_the_adapter_on_the_owner_thread_cancels_what_is_in_flight() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(single_issuer(1)) else {
        return;
    };
    let region = Region::new(&adapter, 1 << 12);
    let (rx, tx) = pipe();
    let wq = adapter
        .work_queue(0, Target::Fd(rx.as_raw_fd()), 4, 4)
        .unwrap();
    let cq = wq.ring();
    cq.bind_owner().unwrap();
    // A read of an empty pipe and a long timeout: neither completes on its own.
    wq.post(Op::read_fixed(region.buf(0, 64), u64::MAX, 1))
        .unwrap();
    wq.post(Op::timeout(Duration::from_secs(3600), 2)).unwrap();
    let mut out = Vec::new();
    assert_eq!(cq.reap(&mut out, 8).unwrap(), 0);
    assert_eq!(Arc::strong_count(&region), 2, "the read holds its buffer");
    drop((wq, cq, adapter));
    // The drop cancelled both and collected their final completions: the buffer is back.
    assert_eq!(
        Arc::strong_count(&region),
        1,
        "the buffer was freed, not leaked"
    );
    drop(tx);
}

#[test]
fn a_pool_freed_off_the_owner_thread_gives_its_index_back_at_the_next_registration() {
    let cfg = single_issuer(1).max_regions(1);
    let Some(adapter) = common::adapter_or_skip::<regio_pool::Message>(cfg) else {
        return;
    };
    adapter.bind_owner().unwrap();
    let pool = || {
        regio_pool::MessagePool::builder()
            .class(4096, 4)
            .cache_size(0)
            .build()
            .unwrap()
    };
    let first = pool();
    first.attach(adapter.registrar()).unwrap();
    // The kernel refuses the removal off the owner thread: the region leaves the table, and its
    // kernel entry waits for the owner.
    std::thread::spawn(move || drop(first)).join().unwrap();
    let second = pool();
    second
        .attach(adapter.registrar())
        .expect("the only index is free again");
    let wq = adapter.work_queue(0, Target::Fd(-1), 4, 4).unwrap();
    wq.post(Op::from_message(second.try_acquire().unwrap()).unwrap())
        .unwrap();
    let c = common::wait_one(&wq.ring());
    assert_eq!((c.result, c.rejected()), (0, None));
}

#[test]
fn a_cqset_waits_only_on_completion_queues_its_thread_owns() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(single_issuer(2)) else {
        return;
    };
    let cqs = adapter.rings();
    cqs[0].bind_owner().unwrap();
    let other = cqs[1].clone();
    std::thread::spawn(move || other.bind_owner().unwrap())
        .join()
        .unwrap();
    let mut out = Vec::new();
    let mixed = regio_adapters::CqSet::new(cqs.clone()).unwrap();
    assert!(
        matches!(
            mixed.wait(&mut out, 4, Some(Duration::ZERO)),
            Err(Error::NotOwner)
        ),
        "waiting would reset the other owner's eventfd"
    );
    let mine = regio_adapters::CqSet::new([cqs[0].clone()]).unwrap();
    assert_eq!(mine.wait(&mut out, 4, Some(Duration::ZERO)).unwrap(), 0);
}
