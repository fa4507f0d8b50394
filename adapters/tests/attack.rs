//! Red-team regression tests: attacks from safe code on buffer identity, registration,
//! threading and hostile arguments. Each test names what it tries. The attacks on fd numbers
//! are in `fd_numbers.rs`, which runs them one at a time.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{small_config as config, small_pool};
use regio_adapters::{Adapter, Completion, Op, Target, WorkQueue};
use regio_pool::{Message, MessagePool, Registrar};
use regio_testkit::TempFile;

/// `Duration::MAX` (or any timeout too long to add to the clock) as a wait's timeout: it must
/// wait as if it had none, not panic adding it to `Instant::now()`.
#[test]
fn a_wait_with_a_timeout_too_long_for_the_clock_is_not_a_panic() {
    regio_testkit::within(Duration::from_secs(20), "wait(Duration::MAX)", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let cq = wq.ring();
        wq.post(Op::nop(9)).unwrap();
        let mut out = Vec::new();
        let n = cq.wait(&mut out, 4, Some(Duration::MAX)).unwrap();
        assert_eq!((n, out[0].cookie), (1, 9));
        let set = regio_adapters::CqSet::new([cq.clone()]).unwrap();
        wq.post(Op::nop(10)).unwrap();
        out.clear();
        let n = set.wait(&mut out, 4, Some(Duration::MAX)).unwrap();
        assert_eq!((n, out[0].cookie), (1, 10));
    });
}

/// Every size, depth, count, index and slot at its extremes: an error or a harmless success,
/// never a panic, an abort or a hang.
#[test]
fn extreme_arguments_are_errors_not_crashes() {
    regio_testkit::within(Duration::from_secs(60), "extreme arguments", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        use regio_adapters::{FileSlot, RegionId};
        // Adapter configurations.
        for cfg in [
            config().sq_entries(0),
            config().sq_entries(u32::MAX),
            config().cq_entries(0),
            config().cq_entries(u32::MAX),
            config().rings(0),
            config().rings(usize::MAX),
            config().max_regions(0),
            config().max_regions(u32::MAX),
            config().max_files(1 << 30),
            config()
                .sqpoll(Some(regio_adapters::SqPoll {
                    idle: Duration::MAX,
                    cpu: Some(u32::MAX),
                }))
                .sqpoll_fallback(false),
        ] {
            let _ = regio_adapters::Adapter::<Message>::new(cfg);
        }
        // Queues, depths, resizes.
        assert!(adapter
            .work_queue(usize::MAX, Target::Fd(-1), 1, 1)
            .is_err());
        assert!(adapter.work_queue(0, Target::Fd(i32::MAX), 1, 1).is_err());
        assert!(adapter
            .work_queue(0, Target::Fixed(FileSlot(u32::MAX)), 1, 1)
            .is_err());
        let wq = adapter
            .work_queue(0, Target::Fd(-7), u32::MAX, u32::MAX)
            .unwrap();
        adapter.resize_work_queue(&wq, 0, 0);
        assert!(wq.post(Op::nop(1)).is_err(), "no credit at depth 0");
        adapter.resize_work_queue(&wq, u32::MAX, u32::MAX);
        adapter.resize_work_queue(&wq, u32::MAX, 0);
        for entries in [0, 1, 63, u32::MAX, u32::MAX / 2 + 1] {
            let _ = adapter.resize_completion_queue(0, entries);
        }
        assert!(adapter.resize_completion_queue(usize::MAX, 128).is_err());
        // Files and regions.
        assert!(adapter.set_file(FileSlot(u32::MAX), 0).is_err());
        assert!(
            adapter.set_file(FileSlot(0), -1).is_err() || adapter.clear_file(FileSlot(0)).is_ok()
        );
        assert!(adapter.set_file(FileSlot(1), i32::MIN).is_err());
        assert!(adapter.clear_file(FileSlot(u32::MAX)).is_err());
        assert!(adapter.unregister_region(RegionId(u16::MAX)).is_err());
        assert!(adapter.unregister_region(RegionId(0)).is_err());
        // Provided-buffer rings.
        for (cq, bgid, entries) in [
            (0, 0, 0),
            (0, u16::MAX, 1),
            (0, 1, u16::MAX),
            (0, 1, 32768),
            (usize::MAX, 1, 8),
        ] {
            let _ = adapter.provided_ring(cq, bgid, entries);
        }
        // Operations with extreme fields, on a queue with no file: each completes.
        let wq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
        let cq = wq.ring();
        let tq = adapter.work_queue(0, Target::Fd(-1), 64, 64).unwrap();
        let ops: Vec<Op<Message>> = vec![
            Op::fallocate(i32::MAX, u64::MAX, u64::MAX, u64::MAX),
            Op::splice(i64::MIN, Target::Fd(-1), i64::MAX, u32::MAX, 1 << 63),
            Op::splice(-1, Target::Fixed(FileSlot(u32::MAX)), -1, 0, 1 << 62),
            Op::accept_direct(FileSlot(u32::MAX), u64::MAX - 1),
            Op::accept_direct(FileSlot(u32::MAX - 1), 3),
            Op::share_file(FileSlot(u32::MAX), &cq, FileSlot(u32::MAX), 4),
            Op::recv_multishot(u16::MAX, 5),
            Op::cancel(u64::MAX, 6),
            Op::msg_ring(&cq, u64::MAX, i32::MIN, 7),
            Op::connect("0.0.0.0:0".parse().unwrap(), 8),
            Op::close(9),
        ];
        let n = ops.len();
        for op in ops {
            wq.post(op).unwrap();
        }
        // Timeouts at the extremes, cancelled afterwards.
        tq.post(Op::timeout(Duration::MAX, 100)).unwrap();
        tq.post(Op::timeout(Duration::ZERO, 101)).unwrap();
        tq.post(Op::timeout(Duration::new(u64::MAX, 999_999_999), 102))
            .unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n + 1 && Instant::now() < deadline {
            cq.wait(&mut got, 64, Some(Duration::from_millis(50)))
                .unwrap();
        }
        // Whatever is still pending ends when the adapter drops.
        assert!(got.len() > n / 2, "{got:?}");
    });
}

// `Adapter::registrar()` hands out an `Arc<dyn Registrar>`, whose `register` was a safe method
// taking a `PoolRegion` with public fields: safe code could register any memory (another
// message's buffer, a freed allocation) as the region of a pool, and the pool's messages were
// then read into it (a read of 4096 bytes landed in another pool's message). `register` is now an
// `unsafe fn` whose caller is the pool; the regression test is the `compile_fail` example in
// `regio_pool::Registrar`'s docs (`cargo test -p regio-pool --doc`), which is the attack.

/// Every registration call from inside a `reap_each` callback, with the ring owned by this
/// thread: attach, detach, grow, a new pool's drop, files, queues, a provided-buffer ring, and
/// a resize of another CQ. None may wait for the ring this thread holds.
#[test]
fn registration_from_inside_reap_each_returns() {
    regio_testkit::within(Duration::from_secs(30), "registration in reap_each", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config().rings(2)) else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let cq = wq.ring();
        wq.post(Op::nop(1)).unwrap();
        let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen == 0 && Instant::now() < deadline {
            cq.reap_each(8, |c| {
                seen += 1;
                assert_eq!(c.cookie, 1);
                let pool = small_pool();
                let registrar = adapter.registrar();
                pool.attach(std::sync::Arc::clone(&registrar)).unwrap();
                pool.grow(0, 4).unwrap();
                assert!(pool.detach(&registrar));
                pool.attach(adapter.registrar()).unwrap();
                let m = pool.try_acquire().unwrap();
                drop(pool);
                drop(m); // the pool's last user: its regions are unregistered here
                adapter
                    .set_file(regio_adapters::FileSlot(3), file.as_raw_fd())
                    .unwrap();
                adapter.clear_file(regio_adapters::FileSlot(3)).unwrap();
                let q = adapter.work_queue(0, Target::Fd(-1), 1, 1).unwrap();
                adapter.remove_work_queue(&q);
                if let Ok(ring) = adapter.provided_ring(0, 9, 8) {
                    drop(ring);
                }
                adapter.resize_completion_queue(1, 128).unwrap();
            })
            .unwrap();
        }
        std::fs::remove_file(path).unwrap();
        assert_eq!(seen, 1);
    });
}

/// A resize of a CQ that this thread holds a `Batch` of cannot own the ring: it must give up
/// (documented: after a few seconds), not hang; a resize of another CQ goes ahead.
#[test]
fn a_resize_from_a_thread_holding_a_batch_returns() {
    regio_testkit::within(Duration::from_secs(30), "resize under a batch", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config().rings(2)) else {
            return;
        };
        let cq = adapter.ring(0).unwrap();
        let batch = cq.batch().unwrap();
        adapter.resize_completion_queue(1, 256).unwrap();
        assert!(adapter.resize_completion_queue(0, 256).is_err());
        drop(batch);
        adapter.resize_completion_queue(0, 256).unwrap();
    });
}

/// Attach and detach 1000 times with room for one region only, in a pool of one region: an
/// index leaked by any of them makes a later attach fail. A pool too large for the table is
/// refused and leaves no index behind either.
#[test]
fn attach_and_detach_a_thousand_times_leaks_no_index() {
    regio_testkit::within(Duration::from_secs(60), "attach/detach", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config().max_regions(1).rings(2))
        else {
            return;
        };
        let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
        let wq = adapter
            .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
            .unwrap();
        let cq = wq.ring();
        let pool = small_pool();
        for i in 0..1000 {
            let registrar = adapter.registrar();
            pool.attach(std::sync::Arc::clone(&registrar)).unwrap();
            if i % 100 == 0 {
                // The index works: a read lands in the message.
                wq.post(Op::read_fixed(pool.try_acquire().unwrap(), 0, i))
                    .unwrap();
                let mut c = common::wait_one(&cq);
                assert_eq!(c.result, 4096, "{c:?}");
                assert!(c.buf.take().unwrap().as_slice().iter().all(|&b| b == b'F'));
            }
            assert!(pool.detach(&registrar));
        }
        // Two regions do not fit; the refusal takes nothing.
        let two = small_pool();
        two.grow(0, 4).unwrap();
        assert!(two.attach(adapter.registrar()).is_err());
        pool.attach(adapter.registrar()).unwrap();
        // A pool attached to a dropped adapter's registrar is forgotten, and frees nothing of
        // this one's.
        drop(pool);
        let other = small_pool();
        other.attach(adapter.registrar()).unwrap();
        std::fs::remove_file(path).unwrap();
    });
}

/// Fills every free message of `pool` with `byte` and keeps them, so that a write into any of
/// them later shows.
fn hold_all(pool: &MessagePool, byte: u8) -> Vec<Message> {
    let mut held = Vec::new();
    while let Ok(mut m) = pool.try_acquire() {
        m.as_mut_slice().fill(byte);
        held.push(m);
    }
    held
}

fn assert_all(held: &[Message], byte: u8, what: &str) {
    for m in held {
        assert!(
            m.as_slice().iter().all(|&b| b == byte),
            "{what}: a message someone else holds was written"
        );
    }
}

/// A small pool attached to `adapter`, and the registrar to detach it from.
fn attached_pool(adapter: &Adapter<Message>) -> (MessagePool, std::sync::Arc<dyn Registrar>) {
    let pool = small_pool();
    let registrar = adapter.registrar();
    pool.attach(std::sync::Arc::clone(&registrar)).unwrap();
    (pool, registrar)
}

/// Detaches `pool`, attaches a new pool that may take its index, and holds its messages as `b'B'`.
fn give_the_index_to_another_pool(
    adapter: &Adapter<Message>,
    pool: &MessagePool,
    registrar: &std::sync::Arc<dyn Registrar>,
) -> (MessagePool, Vec<Message>) {
    assert!(pool.detach(registrar));
    let other = small_pool();
    other.attach(adapter.registrar()).unwrap();
    let held = hold_all(&other, b'B');
    (other, held)
}

/// Posts on `wq` a read into a message of `pool` filled with `b'A'`, drained behind a timeout.
fn post_a_drained_read(
    adapter: &Adapter<Message>,
    cq: usize,
    wq: &WorkQueue<Message>,
    pool: &MessagePool,
) -> WorkQueue<Message> {
    let mut m = pool.try_acquire().unwrap();
    m.as_mut_slice().fill(b'A');
    let read = Op::read_fixed(m, 0, 2);
    common::post_drained_behind_a_timeout(adapter, cq, Duration::from_millis(300), wq, read)
}

/// A receive armed on a pool's message; meanwhile the pool is detached and another pool takes
/// its fixed-buffer index. The data must reach the armed message, and nothing of the other pool.
#[test]
fn a_region_detached_under_an_armed_receive_keeps_its_data_and_its_successor_untouched() {
    regio_testkit::within(Duration::from_secs(30), "detach under recv", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config().rings(2)) else {
            return;
        };
        let (a, ra) = attached_pool(&adapter);
        let (client, server) = regio_testkit::loopback();
        let wq = adapter
            .work_queue(1, Target::Fd(server.as_raw_fd()), 8, 8)
            .unwrap();
        let cq = wq.ring();
        wq.post(Op::recv(a.try_acquire().unwrap(), 0, 1)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (_b, held) = give_the_index_to_another_pool(&adapter, &a, &ra);
        use std::io::Write;
        (&client).write_all(&[b'D'; 4096]).unwrap();
        let mut c = common::wait_one(&cq);
        assert!(c.result > 0, "{c:?}");
        let m = c.buf.take().unwrap();
        assert!(m.as_slice()[..c.result as usize].iter().all(|&x| x == b'D'));
        assert_all(&held, b'B', "the successor pool");
    });
}

/// A read drained behind a slow operation reaches the kernel's buffer table only when it is
/// issued. Meanwhile its pool is detached and another pool takes the index: the kernel's range
/// check must fail it, and the other pool's messages stay as they were.
#[test]
fn a_drained_read_whose_index_changed_hands_touches_nothing_else() {
    regio_testkit::within(Duration::from_secs(30), "drained read", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config().rings(2)) else {
            return;
        };
        let (a, ra) = attached_pool(&adapter);
        let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
        for cq in [0, 1] {
            let wq = adapter
                .work_queue(cq, Target::Fd(file.as_raw_fd()), 8, 8)
                .unwrap();
            let _timer = post_a_drained_read(&adapter, cq, &wq, &a);
            let (b, held) = give_the_index_to_another_pool(&adapter, &a, &ra);
            let got = common::collect(&wq.ring(), 2);
            let read = got.iter().find(|c| c.cookie == 2).unwrap();
            assert!(read.result < 0 || read.result == 4096, "{read:?}");
            assert_all(&held, b'B', "the pool that took the index");
            // Make room for the next round.
            drop(held);
            drop(got);
            drop(b);
            a.attach(std::sync::Arc::clone(&ra)).unwrap();
        }
        std::fs::remove_file(path).unwrap();
    });
}

/// Asserts that the read with `cookie` in `got` read the whole file, 4096 bytes of `b'F'`.
fn assert_read_the_file(got: &mut [Completion<Message>], cookie: u64) {
    let read = got.iter_mut().find(|c| c.cookie == cookie).unwrap();
    assert_eq!(read.result, 4096, "{read:?}");
    assert!(read
        .buf
        .take()
        .unwrap()
        .as_slice()
        .iter()
        .all(|&x| x == b'F'));
}

/// The same, across a resize: the read waits in the old ring, whose table still holds the
/// pool's region, while the new ring gives the index to another pool.
#[test]
fn a_drained_read_across_a_resize_reads_into_its_own_message() {
    regio_testkit::within(
        Duration::from_secs(30),
        "drained read across resize",
        || {
            let Some(adapter) = common::adapter_or_skip::<Message>(config().rings(2)) else {
                return;
            };
            let (a, ra) = attached_pool(&adapter);
            let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
            let wq = adapter
                .work_queue(0, Target::Fd(file.as_raw_fd()), 8, 8)
                .unwrap();
            let _timer = post_a_drained_read(&adapter, 0, &wq, &a);
            adapter.resize_completion_queue(0, 128).unwrap();
            let (_b, held) = give_the_index_to_another_pool(&adapter, &a, &ra);
            // A read on the new ring at the same index lands in the other pool's message.
            let mut mine = held;
            let probe = mine.pop().unwrap();
            wq.post(Op::read_fixed(probe, 0, 3)).unwrap();
            let mut got = common::collect(&wq.ring(), 3);
            assert_read_the_file(&mut got, 2);
            assert_read_the_file(&mut got, 3);
            assert_all(&mine, b'B', "the pool that took the index");
            std::fs::remove_file(path).unwrap();
        },
    );
}

/// One pool attached to two adapters, with reads in flight on both; one adapter is dropped
/// (cancelling and waiting for its reads), the other keeps working, and every message comes
/// home.
#[test]
fn a_pool_shared_by_two_adapters_survives_one_of_them() {
    regio_testkit::within(Duration::from_secs(30), "shared pool", || {
        let Some(x) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        let y = common::adapter_or_skip::<Message>(config()).unwrap();
        let pool = small_pool();
        pool.attach(x.registrar()).unwrap();
        pool.attach(y.registrar()).unwrap();
        let (_cx, sx) = regio_testkit::loopback();
        let (cy, sy) = regio_testkit::loopback();
        let wx = x.work_queue(0, Target::Fd(sx.as_raw_fd()), 8, 8).unwrap();
        let wy = y.work_queue(0, Target::Fd(sy.as_raw_fd()), 8, 8).unwrap();
        wx.post(Op::recv(pool.try_acquire().unwrap(), 0, 1))
            .unwrap();
        wx.post(Op::recv(pool.try_acquire().unwrap(), 0, 2))
            .unwrap();
        wy.post(Op::recv(pool.try_acquire().unwrap(), 0, 3))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(wx);
        drop(x);
        assert_eq!(
            pool.available(0),
            3,
            "the dropped adapter's reads came home"
        );
        use std::io::Write;
        (&cy).write_all(b"hello").unwrap();
        let c = common::wait_one(&wy.ring());
        assert_eq!(c.result, 5);
        drop(c);
        pool.grow(0, 4).unwrap();
        let m = pool.try_acquire_class(0).unwrap();
        wy.post(Op::recv(m, 0, 4)).unwrap();
        (&cy).write_all(b"again").unwrap();
        assert_eq!(common::wait_one(&wy.ring()).result, 5);
        assert_eq!(pool.available(0), pool.capacity(0));
    });
}

/// A cancel carries its target's in-flight slot, read when it is posted. Sent to the kernel's
/// async workers, it runs later: if its target completed meanwhile and another work queue's
/// operation took the slot, the cancel must not hit that operation. (Before the slot's
/// `user_data` carried a generation, the first round cancelled the other queue's timeout.)
#[test]
fn a_late_cancel_never_cancels_another_queues_operation() {
    regio_testkit::within(Duration::from_secs(60), "late cancel", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        let mine = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let theirs = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let cq = mine.ring();
        let mut hits = 0;
        for round in 0..20u64 {
            let base = round * 10;
            let mut out: Vec<regio_adapters::Completion<Message>> = Vec::new();
            {
                let mut batch = cq.batch().unwrap();
                batch.post(&mine, Op::nop(base + 1)).unwrap();
                batch
                    .post(&mine, Op::cancel(base + 1, base + 2).force_async())
                    .unwrap();
                batch.commit().unwrap();
                // The nop's completion frees its slot at once; the other queue's long
                // operation takes it.
                while !out.iter().any(|c| c.cookie == base + 1) {
                    batch.reap(&mut out, 8).unwrap();
                }
                batch
                    .post(&theirs, Op::timeout(Duration::from_millis(50), base + 3))
                    .unwrap();
                batch.commit().unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while out.len() < 3 && Instant::now() < deadline {
                cq.wait(&mut out, 8, Some(Duration::from_millis(50)))
                    .unwrap();
            }
            let timeout = out.iter().find(|c| c.cookie == base + 3).unwrap();
            if timeout.result == -libc::ECANCELED {
                hits += 1;
                eprintln!("round {round}: {out:?}");
                break;
            }
            assert_eq!(timeout.result, -libc::ETIME, "{out:?}");
        }
        assert_eq!(
            hits, 0,
            "a cancel posted on one work queue cancelled another's operation"
        );
    });
}

/// Resizes, pool growth, pools attached and freed, and posts and reaps, on four threads at once
/// for a while: nothing hangs, every read lands in its own message, and every message comes
/// home.
#[test]
fn resize_growth_pool_drop_and_posts_race_without_hanging() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    regio_testkit::within(Duration::from_secs(90), "racing registrations", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config().rings(2).max_regions(16))
        else {
            return;
        };
        let pool = MessagePool::builder()
            .class(4096, 8)
            .cache_size(0)
            .max_regions(256)
            .build()
            .unwrap();
        pool.attach(adapter.registrar()).unwrap();
        let (file, path) = TempFile::filled("adapters", b'F', 4096).keep();
        let stop = Arc::new(AtomicBool::new(false));
        let run_for = Duration::from_secs(3);
        let mut threads = Vec::new();
        // Posters and reapers, one per CQ.
        for cq in 0..2 {
            let (adapter, pool, stop) = (adapter.clone(), pool.clone(), Arc::clone(&stop));
            let wq = adapter
                .work_queue(cq, Target::Fd(file.as_raw_fd()), 16, 16)
                .unwrap();
            threads.push(std::thread::spawn(move || {
                let cq = wq.ring();
                let mut out = Vec::new();
                let mut n = 0u64;
                // Relaxed: a stop flag; nothing is published through it.
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut m) = pool.try_acquire() {
                        m.as_mut_slice().fill(0);
                        n += 1;
                        if let Err(e) = wq.post(Op::read_fixed(m, 0, n)) {
                            drop(e);
                        }
                    }
                    out.clear();
                    cq.wait(&mut out, 16, Some(Duration::from_millis(5)))
                        .unwrap();
                    for c in &mut out {
                        if let Some(m) = c.buf.take() {
                            if c.result == 4096 {
                                assert!(m.as_slice().iter().all(|&b| b == b'F'), "{c:?}");
                            }
                        }
                    }
                }
                // Drain what is still in flight.
                let deadline = Instant::now() + Duration::from_secs(10);
                let full = wq.credits();
                while Instant::now() < deadline {
                    out.clear();
                    cq.wait(&mut out, 16, Some(Duration::from_millis(20)))
                        .unwrap();
                    if out.is_empty() && wq.credits() == full {
                        break;
                    }
                }
                drop(adapter);
            }));
        }
        // A resizer.
        {
            let (adapter, stop) = (adapter.clone(), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                let (mut k, mut resized) = (0, 0);
                // Relaxed: as above.
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let entries = if k % 4 < 2 { 128 } else { 64 };
                    resized += usize::from(adapter.resize_completion_queue(k % 2, entries).is_ok());
                    std::thread::sleep(Duration::from_millis(2));
                }
                assert!(resized > 0, "no resize went through in {k} tries");
            }));
        }
        // A grower, and pools that come and go.
        {
            let (adapter, pool, stop) = (adapter.clone(), pool.clone(), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                let mut grown = 0;
                // Relaxed: as above.
                while !stop.load(Ordering::Relaxed) {
                    if grown < 8 && pool.grow(0, 2).is_ok() {
                        grown += 1;
                    }
                    let other = small_pool();
                    if other.attach(adapter.registrar()).is_ok() {
                        let m = other.try_acquire().unwrap();
                        drop(other);
                        drop(m);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        std::thread::sleep(run_for);
        // Relaxed: as above; the joins order everything after.
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        std::fs::remove_file(path).unwrap();
        assert_eq!(pool.available(0), pool.capacity(0));
    });
}

/// Waits (bounded) until thread `tid` of this process sleeps, read from procfs.
fn until_asleep(tid: libc::pid_t) {
    let path = format!("/proc/self/task/{tid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(&path).expect("the thread's stat");
        // The state follows the parenthesised command name.
        if stat.rsplit(") ").next().and_then(|s| s.chars().next()) == Some('S') {
            return;
        }
        std::thread::yield_now();
    }
    panic!("the thread never went to sleep");
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; sched_setaffinity
    // reads it for the calling thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Single-issuer mode: a `CqSet` may hold CQs that other threads own (it skips them when it
/// reaps). Its wait must not drain their eventfds: the owner, asleep on the same eventfd, would
/// miss the wake-up for a foreign post (or deferred task work) and sleep on.
///
/// Scheduling makes the race deterministic (test scaffolding, not part of the attack): the
/// owner is pinned to CPU 0 at `SCHED_IDLE`, so once woken it runs only when the poster, also on
/// CPU 0, stops spinning; meanwhile the set's reaper drains on CPU 1.
#[test]
fn a_cq_set_never_eats_the_wake_up_of_a_cq_another_thread_owns() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const ROUNDS: u64 = 5;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        regio_testkit::skip("needs two CPUs");
        return;
    }
    regio_testkit::within(Duration::from_secs(60), "cq set and owner", || {
        let Some(adapter) =
            common::adapter_or_skip::<Message>(config().rings(2).single_issuer(true))
        else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        let set = regio_adapters::CqSet::new(adapter.rings()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Another thread reaps the set (it owns CQ 1, not CQ 0), round after round.
        let reaper = {
            let (stop, cq1) = (Arc::clone(&stop), adapter.ring(1).unwrap());
            std::thread::spawn(move || {
                pin_to(1);
                cq1.bind_owner().unwrap();
                let mut out = Vec::new();
                // A set's wait would reset CQ 0's eventfd, which its owner sleeps on: it is
                // refused. The set's reap skips CQ 0 and touches no eventfd.
                assert!(matches!(
                    set.wait(&mut out, 8, Some(Duration::from_millis(10))),
                    Err(regio_adapters::Error::NotOwner)
                ));
                // Relaxed: a stop flag.
                while !stop.load(Ordering::Relaxed) {
                    set.reap(&mut out, 8).unwrap();
                    std::thread::yield_now();
                }
            })
        };
        // The owner of CQ 0 sleeps in wait; this thread posts to it.
        let (tx, rx) = std::sync::mpsc::channel();
        let owner = {
            let cq0 = wq.ring();
            std::thread::spawn(move || {
                pin_to(0);
                let idle = libc::sched_param { sched_priority: 0 };
                // SAFETY: sets the calling thread's own policy; `idle` outlives the call.
                let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
                assert_eq!(set, 0);
                cq0.bind_owner().unwrap();
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                let mut late = Vec::new();
                for round in 0..ROUNDS {
                    let start = Instant::now();
                    let mut out = Vec::new();
                    while out.is_empty() && start.elapsed() < Duration::from_secs(10) {
                        cq0.wait(&mut out, 1, Some(Duration::from_secs(1))).unwrap();
                    }
                    assert_eq!(out[0].cookie, round);
                    if start.elapsed() > Duration::from_millis(800) {
                        late.push((round, start.elapsed()));
                    }
                }
                late
            })
        };
        let owner_tid = rx.recv().unwrap();
        pin_to(0);
        for round in 0..ROUNDS {
            until_asleep(owner_tid);
            wq.post(Op::nop(round)).unwrap();
            // Keep CPU 0 from the owner while the set's reaper runs.
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
        }
        let late = owner.join().unwrap();
        // Relaxed: as above; the join orders the rest.
        stop.store(true, Ordering::Relaxed);
        reaper.join().unwrap();
        assert!(
            late.is_empty(),
            "the owner slept through foreign posts whose wake-up the set's wait drained: {late:?}"
        );
    });
}

/// Cookies with the bits the adapter uses for itself (63: msg_ring messages; 62: its own
/// cancels and resize carries) are the caller's: each comes back whole, on its own work queue,
/// and nothing is taken for a message or swallowed as internal. A cancel by such a cookie finds
/// its target.
#[test]
fn cookies_with_the_top_bits_set_route_to_their_own_queue() {
    regio_testkit::within(Duration::from_secs(30), "top-bit cookies", || {
        let Some(adapter) = common::adapter_or_skip::<Message>(config()) else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 16, 16).unwrap();
        let cq = wq.ring();
        let cookies = [
            u64::MAX,
            1 << 63,
            1 << 62,
            (1 << 62) | (1 << 32),
            (1 << 62) | (1 << 32) | u64::from(u32::MAX),
            u64::from(u32::MAX),
        ];
        for &c in &cookies {
            wq.post(Op::nop(c)).unwrap();
        }
        let long = (1 << 63) | (1 << 62) | 5;
        wq.post(Op::timeout(Duration::from_secs(30), long)).unwrap();
        wq.post(Op::cancel(long, u64::MAX - 1)).unwrap();
        let got = common::collect(&cq, cookies.len() + 2);
        for c in &got {
            assert_eq!(c.wq, Some(wq.id()), "{c:?}");
        }
        for &c in &cookies {
            assert!(
                got.iter().any(|g| g.cookie == c && g.result == 0),
                "{c:#x}: {got:?}"
            );
        }
        let cancelled = got.iter().find(|g| g.result == -libc::ECANCELED).unwrap();
        assert_eq!(cancelled.cookie, long);
    });
}

/// Single-issuer mode: threads racing to bind one CQ, and a registration racing the binds.
/// Exactly one bind wins, the others are told so, and nothing hangs.
#[test]
fn bind_owner_races_have_one_winner_and_no_hang() {
    use std::sync::{Arc, Barrier};
    regio_testkit::within(Duration::from_secs(30), "bind races", || {
        let Some(adapter) =
            common::adapter_or_skip::<Message>(config().rings(2).single_issuer(true))
        else {
            return;
        };
        let wq = adapter.work_queue(0, Target::Fd(-1), 8, 8).unwrap();
        wq.post(Op::nop(1)).unwrap(); // waits in the inbox for the owner
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (cq, barrier) = (wq.ring(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let won = cq.bind_owner().is_ok();
                    let mut out = Vec::new();
                    if won {
                        while out.is_empty() {
                            cq.wait(&mut out, 4, Some(Duration::from_secs(5))).unwrap();
                        }
                        assert_eq!(out[0].cookie, 1);
                    } else {
                        assert!(cq.wait(&mut out, 4, Some(Duration::ZERO)).is_err());
                    }
                    won
                })
            })
            .collect();
        barrier.wait();
        // A pool attached meanwhile: before the binds it registers, after them it is refused.
        let pool = small_pool();
        let attached = pool.attach(adapter.registrar());
        let wins = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(wins, 1);
        drop(attached);
    });
}
