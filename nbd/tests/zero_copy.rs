//! A memory export registered with the runtime's rings: READ replies go out from the export
//! itself (counted in the statistics), TRIM and WRITE_ZEROES zero its bytes rather than give
//! its pinned pages back, concurrent writes and reads stay correct, Unix sockets and a process
//! that may not pin the export fall back to copies.

mod common;

use std::process::Command as Process;
use std::time::{Duration, Instant};

use common::{memory, pattern, start, Client};
use regio_nbd::proto::{Command, CommandFlags};
use regio_nbd::target::StatsLine;

const MIB: u64 = 1 << 20;
const KIB: u32 = 1024;
const CHILD_ENV: &str = "REGIO_NBD_MEMLOCK_CHILD";

/// `(0, 3)`: a hole that reads as zeroes; `(len, 0)`: data.
const HOLE: u32 = 3;

/// The statistics once `done` holds of them (a bounded wait; nothing is timed).
fn settled(h: &common::Harness, done: impl Fn(&StatsLine) -> bool) -> StatsLine {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = h.server.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn reads_of_a_memory_export_go_out_from_the_export_itself() {
    let Some(mut h) = start(vec![memory("", 8 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let max = h.server.max_payload();
    let data = pattern(max as usize, 3);
    let mut c = h.open("", false);
    assert!(h.server.exports().next().unwrap().is_zero_copy());
    assert_eq!(c.call(Command::Write, none, MIB, max, &data).error, None);
    let before = h.server.stats();
    // Large reads go out with SEND_ZC from the export; a small one is copied from it into the
    // reply's gathered bytes. Every one reads what was written.
    let reads = [(0, max), (4096, 64 * KIB), (1000, 20000), (100, 4 * KIB)];
    for (at, len) in reads {
        let got = c.call(Command::Read, none, MIB + at, len, &[]);
        assert_eq!(got.error, None);
        assert!(
            got.data == data[at as usize..(at + u64::from(len)) as usize],
            "{at}+{len}"
        );
    }
    let mut s = h.open("", true);
    let got = s.call(Command::Read, none, MIB, max, &[]);
    assert!(got.data == data && got.holes == 0);
    // A send is counted once the socket took it, which the worker may learn after the client
    // has read the reply.
    let after = settled(&h, |s| s.zero_copy_sends - before.zero_copy_sends >= 4);
    assert_eq!(after.zero_copy_sends - before.zero_copy_sends, 4);
    assert_eq!(
        after.zero_copy_bytes - before.zero_copy_bytes,
        u64::from(2 * max + 64 * KIB + 20000)
    );
    // A Unix socket has no zero-copy sends: its reads are copied, and still right.
    let path = std::env::temp_dir().join(format!("regio-nbd-zc-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.listen_unix(&path);
    let mut u = Client::connect_unix(&path);
    u.go("", false);
    for _ in 0..2 {
        let got = u.call(Command::Read, none, MIB, max, &[]);
        assert!(got.error.is_none() && got.data == data);
    }
    assert_eq!(h.server.stats().zero_copy_sends, after.zero_copy_sends);
    drop((c, s, u));
    h.assert_pool_full();
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn trim_and_write_zeroes_on_a_registered_export_read_back_zeroes() {
    let Some(h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let mut c = h.open("", true);
    assert!(h.server.exports().next().unwrap().is_zero_copy());
    let data = pattern(256 * KIB as usize, 7);
    for at in (0..256 * KIB).step_by(64 * KIB as usize) {
        let piece = &data[at as usize..(at + 64 * KIB) as usize];
        assert_eq!(
            c.call(Command::Write, none, u64::from(at), 64 * KIB, piece)
                .error,
            None
        );
    }
    // A trim of whole pages: they read as zeroes and are holes again.
    assert_eq!(
        c.call(Command::Trim, none, 64 * 1024, 64 * KIB, &[]).error,
        None
    );
    // Zeroes over partial pages, punched and not.
    assert_eq!(
        c.call(Command::WriteZeroes, none, 140_000, 5000, &[]).error,
        None
    );
    assert_eq!(
        c.call(
            Command::WriteZeroes,
            CommandFlags::NO_HOLE,
            200_000,
            3000,
            &[]
        )
        .error,
        None
    );
    let mut expected = data.clone();
    for (at, len) in [(65536, 65536), (140_000, 5000), (200_000, 3000)] {
        expected[at..at + len].fill(0);
    }
    for at in [0, 128 * KIB] {
        let got = c.call(Command::Read, none, u64::from(at), 128 * KIB, &[]);
        assert_eq!(got.error, None);
        let want = &expected[at as usize..(at + 128 * KIB) as usize];
        assert!(got.data == want, "the zeroed ranges read as zeroes");
    }
    let map = c.call(Command::BlockStatus, none, 0, 256 * KIB, &[]);
    assert_eq!(
        map.extents,
        [(64 * KIB, 0), (64 * KIB, HOLE), (128 * KIB, 0)]
    );
    // A read of the hole alone is a hole chunk; one across it is data, zeroes included.
    assert_eq!(c.call(Command::Read, none, 65536, 65536, &[]).holes, 1);
    let mut simple = h.open("", false);
    let got = simple.call(Command::Read, none, 60_000, 10_000, &[]);
    assert!(got.data == expected[60_000..70_000]);
    drop((c, simple));
    h.stop();
}

#[test]
fn concurrent_writes_and_reads_of_different_ranges_stay_correct() {
    let Some(h) = start(vec![memory("", 8 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let addr = h.addr;
    let before = h.server.stats();
    std::thread::scope(|scope| {
        for worker in 0..4_u8 {
            scope.spawn(move || {
                let mut c = Client::connect(addr, 3);
                c.go("", worker % 2 == 1);
                let base = u64::from(worker) * MIB;
                for round in 0..16_u8 {
                    let data = pattern(MIB as usize, worker.wrapping_mul(37) ^ round);
                    for at in (0..MIB).step_by(128 * 1024) {
                        let piece = &data[at as usize..at as usize + 128 * 1024];
                        let done = c.call(Command::Write, none, base + at, 128 * KIB, piece);
                        assert_eq!(done.error, None);
                    }
                    // Reads of every size, across the writes' boundaries.
                    let mut at = 0;
                    for len in [4096, 100_000, 65536, 131_072, 12345].iter().cycle() {
                        let len = (*len).min(MIB as usize - at);
                        if len == 0 {
                            break;
                        }
                        let got = c.call(Command::Read, none, base + at as u64, len as u32, &[]);
                        assert!(
                            got.error.is_none() && got.data == data[at..at + len],
                            "worker {worker} round {round}: {at}+{len}"
                        );
                        at += len;
                    }
                }
            });
        }
    });
    settled(&h, |s| s.zero_copy_sends > before.zero_copy_sends);
    h.assert_pool_full();
    h.stop();
}

/// In a process without `CAP_IPC_LOCK`, under an 8 MiB `RLIMIT_MEMLOCK`, a memory export of
/// `size` bytes.
fn child(size: u64) {
    regio_testkit::limit_memlock(8 * MIB).expect("dropping CAP_IPC_LOCK and lowering the limit");
    let Some(h) = start(vec![memory("", size)], 8) else {
        panic!("the parent saw io_uring work");
    };
    let none = CommandFlags::empty();
    let mut c = h.open("", false);
    assert!(!h.server.exports().next().unwrap().is_zero_copy());
    let max = h.server.max_payload();
    let data = pattern(max as usize, 5);
    assert_eq!(c.call(Command::Write, none, 0, max, &data).error, None);
    assert_eq!(c.call(Command::Trim, none, 0, 8192, &[]).error, None);
    let got = c.call(Command::Read, none, 0, max, &[]);
    assert!(got.data[..8192].iter().all(|&b| b == 0) && got.data[8192..] == data[8192..]);
    assert_eq!(h.server.stats().export_zero_copy_sends, 0);
    drop(c);
    h.stop();
    println!("CHILD-OK: copied");
}

/// Runs this test again in a child process with `CHILD_ENV` set to `size`.
fn run_child(size: u64) {
    let out = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_the_memlock_to_pin_it_a_memory_export_is_copied",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, size.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK: copied"),
        "child ({size} bytes) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two ways to be refused: an export larger than the limit is not even tried (pinning would
/// fault in all of it first); one within the limit is refused by the kernel, since the pool's
/// buffers are pinned already.
#[test]
fn without_the_memlock_to_pin_it_a_memory_export_is_copied() {
    if let Some(size) = std::env::var_os(CHILD_ENV) {
        child(size.to_str().unwrap().parse().unwrap());
        return;
    }
    // Whether io_uring works is decided here, where a skip is reported.
    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    h.stop();
    run_child(32 * MIB);
    run_child(8 * MIB);
}
