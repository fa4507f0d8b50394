//! `file_read`: random 4 KiB `O_DIRECT` reads at queue depth 32 through `regio_runtime::fs::File`
//! against fio's io_uring engine with fixed buffers and registered files, on the same file, in
//! the same run.
//!
//! - **regio**: a one-worker runtime; 32 tasks each keep one `read_at` in flight on a pool
//!   message (a registered buffer, so every read is a `READ_FIXED`), at random 4 KiB-aligned
//!   offsets, for the round's duration.
//! - **fio**: `--ioengine=io_uring --fixedbufs --registerfiles --direct=1 --rw=randread --bs=4k
//!   --iodepth=32`, one job, for the same duration; its IOPS come from its JSON report.
//!
//! The two alternate, three rounds each, and the round with the median ratio is printed, first
//! without SQPOLL on either side, then with it on both (regio's `RingMode::SqPoll`, fio's
//! `--sqthread_poll`):
//!
//!     COMPARE file_randread_4k_qd32: regio=<iops> fio=<iops> ratio=<regio/fio>
//!     COMPARE file_randread_4k_qd32_sqpoll: ...
//!
//! The file (256 MiB of written, non-zero data, so that reads reach the device rather than
//! unwritten extents) is made once in `REGIO_BENCH_DIR` (default: the system's temporary
//! directory), which must support `O_DIRECT` (tmpfs before Linux 6.6 does not).
//!
//! Run: `cargo bench --bench file_read`. fio must be installed (`apt-get install fio`); without
//! it the benchmark says so and measures regio alone.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regio_runtime::{fs::File, RingMode, Runtime};

const FILE_SIZE: u64 = 256 << 20;
const BLOCK: u64 = 4096;
const DEPTH: usize = 32;
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(2);

/// The benchmark file, written once with a non-zero pattern.
fn bench_file() -> PathBuf {
    let dir = std::env::var_os("REGIO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join("regio-bench-file_read.dat");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == FILE_SIZE) {
        return path;
    }
    let mut file = std::fs::File::create(&path).expect("create the benchmark file");
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..FILE_SIZE / chunk.len() as u64 {
        file.write_all(&chunk).expect("write the benchmark file");
    }
    file.sync_all().expect("sync the benchmark file");
    path
}

/// A small per-task random number generator (xorshift64*): the offsets need to be spread, not
/// unpredictable.
struct Offsets(u64);

impl Offsets {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (FILE_SIZE / BLOCK)) * BLOCK
    }
}

fn runtime(mode: RingMode) -> Runtime {
    Runtime::builder()
        .worker_threads(1)
        .ring_mode(mode)
        .pool_class(BLOCK as u32, 2 * DEPTH as u32)
        .build()
        .expect("a regio runtime")
}

/// regio: `DEPTH` tasks reading for `dur`; returns reads per second.
fn regio_iops(rt: &Runtime, path: &Path, dur: Duration) -> f64 {
    let std_file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("open the benchmark file with O_DIRECT");
    let file = Arc::new(File::from_std(std_file));
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = (0..DEPTH)
        .map(|i| {
            let file = file.clone();
            let pool = rt.pool().clone();
            rt.spawn(async move {
                let mut offsets = Offsets(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
                let mut msg = pool.acquire().await;
                let mut reads = 0u64;
                while Instant::now() < deadline {
                    let (res, back) = file.read_at(msg, offsets.next()).await;
                    assert_eq!(res.expect("a 4 KiB read"), BLOCK as usize);
                    msg = back;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let reads: u64 = rt.block_on(async {
        let mut sum = 0;
        for t in tasks {
            sum += t.await.expect("a reading task");
        }
        sum
    });
    reads as f64 / start.elapsed().as_secs_f64()
}

/// fio's io_uring engine on the same file for `dur`; returns its read IOPS, or `None` without
/// fio.
fn fio_iops(path: &Path, dur: Duration, sqpoll: bool) -> Option<f64> {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=file_read",
        "--ioengine=io_uring",
        "--fixedbufs=1",
        "--registerfiles=1",
        "--direct=1",
        "--rw=randread",
        "--bs=4k",
        "--iodepth=32",
        "--time_based=1",
        "--output-format=json",
    ])
    .arg(format!("--filename={}", path.display()))
    .arg(format!("--size={FILE_SIZE}"))
    .arg(format!("--runtime={}ms", dur.as_millis()));
    if sqpoll {
        cmd.arg("--sqthread_poll=1");
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running fio: {e}"),
    };
    assert!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio's JSON report");
    report["jobs"][0]["read"]["iops"].as_f64()
}

fn compare(name: &str, mode: RingMode, sqpoll: bool, path: &Path) {
    let rt = runtime(mode);
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let ours = regio_iops(&rt, path, ROUND);
        let Some(theirs) = fio_iops(path, ROUND, sqpoll) else {
            println!("{name}: regio={ours:.0}iops; fio is not installed (apt-get install fio)");
            return;
        };
        rounds.push((ours / theirs, ours, theirs));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let spread = (rounds[0].0, rounds[ROUNDS - 1].0);
    let (ratio, ours, theirs) = rounds[ROUNDS / 2];
    println!(
        "COMPARE {name}: regio={ours:.0}iops fio={theirs:.0}iops ratio={ratio:.2} \
         (rounds {:.2}..{:.2})",
        spread.0, spread.1
    );
}

fn main() {
    let path = bench_file();
    compare("file_randread_4k_qd32", RingMode::Interrupt, false, &path);
    let sqpoll = RingMode::SqPoll {
        idle: Duration::from_millis(100),
        cpu: None,
    };
    compare("file_randread_4k_qd32_sqpoll", sqpoll, true, &path);
}
