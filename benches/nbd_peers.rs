//! `regio serve` against nbdkit (file plugin) and qemu-nbd, serving the same file on tmpfs,
//! driven by fio's nbd engine and nbdcopy. Each round starts each server in turn (alternated),
//! measures it and stops it; the figures are the medians over the rounds, printed as `COMPARE`
//! lines (see the README, "Benchmarks"). nbdkit's null plugin, which does no I/O at all, is
//! measured too: it is the client's ceiling on this machine.
//!
//! It installs nothing: a missing tool is named with its package. Settings, from the
//! environment: `REGIO_NBD_BENCH_ROUNDS` (3), `REGIO_NBD_BENCH_SECONDS` per fio run (3),
//! `REGIO_NBD_BENCH_DIR` (/dev/shm, a tmpfs), `REGIO_NBD_BENCH_SERVERS` (a comma-separated
//! subset of `regio,nbdkit,qemu-nbd`; the COMPARE lines need regio), `REGIO_NBD_BENCH_TRANSPORT`
//! (`unix`, the default, or `tcp`: loopback TCP, where regio's zero-copy sends happen; a Unix
//! socket has none), and `REGIO_NBD_ZERO_COPY_MIN`: regio's `--zero-copy-min`, or a
//! comma-separated list of them (`0,4K,16K`) to measure regio once per threshold in every round
//! (in an order that rotates from round to round), each labelled `regio[zero-copy-min=N]`,
//! with a COMPARE line per threshold. It needs `REGIO_NBD_BENCH_TRANSPORT=tcp`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{Backing, Implementation, Server, Spec, Transport};
use common::tools::{self, run_ok};
use common::TempDir;

const GIB: u64 = 1 << 30;
/// A tool run that takes longer than this is hung.
const LIMIT: Duration = Duration::from_secs(600);

/// The servers compared, in the order each round runs them (regio first).
const SERVERS: [Implementation; 3] = [
    Implementation::Regio,
    Implementation::Nbdkit,
    Implementation::QemuNbd,
];
/// The label of nbdkit's null plugin in the figures.
const CEILING: &str = "nbdkit-null";

/// One way of running `regio serve`: its label in the figures and the arguments it adds.
struct Variant {
    label: String,
    args: Vec<String>,
}

/// The regio variants `REGIO_NBD_ZERO_COPY_MIN` asks for (one, labelled `regio`, without it).
fn variants(transport: Transport) -> Vec<Variant> {
    let Ok(list) = std::env::var("REGIO_NBD_ZERO_COPY_MIN") else {
        return vec![Variant {
            label: "regio".to_owned(),
            args: Vec::new(),
        }];
    };
    if transport == Transport::Unix {
        eprintln!(
            "REGIO_NBD_ZERO_COPY_MIN={list} changes nothing on a Unix socket (no zero-copy \
             sends there): set REGIO_NBD_BENCH_TRANSPORT=tcp"
        );
        std::process::exit(1);
    }
    let thresholds: Vec<&str> = list.split(',').map(str::trim).collect();
    if thresholds.iter().any(|t| t.is_empty()) {
        eprintln!("REGIO_NBD_ZERO_COPY_MIN={list}: expected thresholds like 0,4K,16K");
        std::process::exit(1);
    }
    thresholds
        .iter()
        .map(|&threshold| Variant {
            label: if thresholds.len() == 1 {
                "regio".to_owned()
            } else {
                format!("regio[zero-copy-min={threshold}]")
            },
            args: vec!["--zero-copy-min".to_owned(), threshold.to_owned()],
        })
        .collect()
}

/// `REGIO_NBD_BENCH_TRANSPORT`: `unix` (the default) or `tcp`.
fn transport() -> Transport {
    match std::env::var("REGIO_NBD_BENCH_TRANSPORT").as_deref() {
        Err(_) | Ok("unix") => Transport::Unix,
        Ok("tcp") => Transport::Tcp,
        Ok(other) => {
            eprintln!("REGIO_NBD_BENCH_TRANSPORT={other}: expected unix or tcp");
            std::process::exit(1);
        }
    }
}

/// `spec` on `transport`.
fn over(transport: Transport, spec: Spec) -> Spec {
    match transport {
        Transport::Unix => spec,
        Transport::Tcp => spec.tcp(),
    }
}

/// Whether a lower value is better (latency, CPU) or a higher one (throughput).
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// One metric: its COMPARE name, unit, direction, and each server's samples over the rounds.
struct Metric {
    name: &'static str,
    unit: &'static str,
    better: Better,
    samples: BTreeMap<String, Vec<f64>>,
}

impl Metric {
    fn new(name: &'static str, unit: &'static str, better: Better) -> Metric {
        Metric {
            name,
            unit,
            better,
            samples: BTreeMap::new(),
        }
    }

    /// Each server's median, for the log.
    fn medians_line(&self) -> String {
        let mut line = format!("{}:", self.name);
        for server in self.samples.keys() {
            let v = self.median(server).expect("a server with samples");
            line.push_str(&format!(" {server}={v:.3}{}", self.unit));
        }
        line
    }

    fn record(&mut self, server: &str, value: f64) {
        println!("  {} {server}: {value:.3}{}", self.name, self.unit);
        self.samples
            .entry(server.to_owned())
            .or_default()
            .push(value);
    }

    fn median(&self, server: &str) -> Option<f64> {
        let mut v = self.samples.get(server)?.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// `COMPARE <name>: regio=<v><unit> <peer>=<v><unit> ... ratio=<r>`: the ratio is regio's
    /// advantage over the better peer (above 1, regio wins), the ceiling is shown but not
    /// compared. `ours` is regio's label: `regio`, or `regio[<setting>]`, whose setting then
    /// follows the name (`COMPARE <name>[<setting>]: regio=...`).
    fn compare_line(&self, ours: &str) -> Option<String> {
        let setting = ours.strip_prefix("regio").unwrap_or("");
        let value = self.median(ours)?;
        let mut line = format!(
            "COMPARE {}{setting}: regio={value:.3}{}",
            self.name, self.unit
        );
        let ours = value;
        let mut best: Option<f64> = None;
        for server in SERVERS.iter().skip(1).map(|s| s.to_string()) {
            if let Some(v) = self.median(&server) {
                line.push_str(&format!(" {server}={v:.3}{}", self.unit));
                best = Some(match (best, self.better) {
                    (None, _) => v,
                    (Some(b), Better::Higher) => b.max(v),
                    (Some(b), Better::Lower) => b.min(v),
                });
            }
        }
        if let Some(v) = self.median(CEILING) {
            line.push_str(&format!(" {CEILING}(ceiling)={v:.3}{}", self.unit));
        }
        let best = best?;
        let ratio = match self.better {
            Better::Higher => ours / best,
            Better::Lower => best / ours,
        };
        line.push_str(&format!(" ratio={ratio:.2}"));
        Some(line)
    }
}

struct Metrics {
    randread: Metric,
    randwrite: Metric,
    qd1_p99: Metric,
    cpu: Metric,
    copy: Metric,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let required = ["fio", "nbdcopy", "nbdkit", "qemu-nbd"];
    if let Some(tool) = tools::first_missing(&required) {
        eprintln!(
            "nbd_peers needs {}: {tool} is missing. Install them with:\n  apt-get install fio libnbd-bin nbdkit qemu-utils",
            required.join(", ")
        );
        std::process::exit(1);
    }
    let rounds = env_or("REGIO_NBD_BENCH_ROUNDS", 3);
    let seconds = env_or("REGIO_NBD_BENCH_SECONDS", 3);
    let parent = PathBuf::from(
        std::env::var("REGIO_NBD_BENCH_DIR").unwrap_or_else(|_| "/dev/shm".to_owned()),
    );
    let servers: Vec<Implementation> = match std::env::var("REGIO_NBD_BENCH_SERVERS") {
        Err(_) => SERVERS.to_vec(),
        Ok(list) => SERVERS
            .into_iter()
            .filter(|s| list.split(',').any(|name| name == s.to_string()))
            .collect(),
    };
    let transport = transport();
    let variants = variants(transport);
    let dir = TempDir::new_in(&parent, "nbd-peers");
    let image = dir.join("export.img");
    println!(
        "nbd_peers: a 1 GiB file in {}, {rounds} rounds, {seconds} s per fio run, over {}, on {} CPUs",
        parent.display(),
        match transport {
            Transport::Unix => "a Unix socket",
            Transport::Tcp => "loopback TCP",
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    common::data::random_file(&image, GIB, 1);

    let mut m = Metrics {
        randread: Metric::new("nbd_randread_4k_qd32", "kIOPS", Better::Higher),
        randwrite: Metric::new("nbd_randwrite_4k_qd32", "kIOPS", Better::Higher),
        qd1_p99: Metric::new("nbd_randread_4k_qd1_p99", "us", Better::Lower),
        cpu: Metric::new("nbd_cpu_per_req_randread", "us", Better::Lower),
        copy: Metric::new("nbd_copy_1g", "GiB/s", Better::Higher),
    };
    for round in 1..=rounds {
        println!("round {round}/{rounds}");
        for &implementation in &servers {
            let spec = over(
                transport,
                Spec::new(implementation, Backing::File(image.clone())),
            );
            if implementation != Implementation::Regio {
                let server = Server::start(spec)
                    .unwrap_or_else(|e| panic!("{implementation} did not start: {e}"));
                measure(&server, &implementation.to_string(), seconds, &mut m);
                continue;
            }
            // Each round starts with the next variant, so none always runs first.
            let first = (round - 1) as usize % variants.len();
            for variant in variants[first..].iter().chain(&variants[..first]) {
                let server = Server::start(spec.clone().regio_args(variant.args.clone()))
                    .unwrap_or_else(|e| panic!("{} did not start: {e}", variant.label));
                measure(&server, &variant.label, seconds, &mut m);
            }
        }
        let null = over(
            transport,
            Spec::new(Implementation::Nbdkit, Backing::Null(GIB)),
        );
        let null = Server::start(null).unwrap_or_else(|e| panic!("nbdkit null did not start: {e}"));
        measure(&null, CEILING, seconds, &mut m);
    }
    println!("\nmedians over {rounds} rounds:");
    let all = [&m.randread, &m.randwrite, &m.qd1_p99, &m.cpu, &m.copy];
    for metric in all {
        println!("  {}", metric.medians_line());
    }
    for metric in all {
        for variant in &variants {
            if let Some(line) = metric.compare_line(&variant.label) {
                println!("{line}");
            }
        }
    }
}

/// Runs every measurement against `server`, recording them under `label`.
fn measure(server: &Server, label: &str, seconds: u64, m: &mut Metrics) {
    let uri = server.uri();
    let before = cpu_seconds(server.pid());
    let read = fio(&uri, "randread", 32, seconds);
    let cpu = cpu_seconds(server.pid()) - before;
    let ios = read["total_ios"].as_f64().expect("fio's total_ios");
    m.randread.record(label, iops(&read) / 1e3);
    m.cpu.record(label, cpu / ios * 1e6);
    if label != CEILING {
        let write = fio(&uri, "randwrite", 32, seconds);
        m.randwrite.record(label, iops(&write) / 1e3);
    }
    let qd1 = fio(&uri, "randread", 1, seconds);
    let p99 = qd1["clat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .expect("fio's p99 completion latency");
    m.qd1_p99.record(label, p99 / 1e3);
    let mut copy = Command::new("nbdcopy");
    if label == CEILING {
        // The null plugin reports one big hole, which nbdcopy would skip: make it send the data.
        copy.arg("--no-extents");
    }
    let start = Instant::now();
    run_ok(copy.args([&uri, "null:"]), LIMIT);
    m.copy.record(label, 1.0 / start.elapsed().as_secs_f64());
}

/// One fio run of 4 KiB `rw` at `depth` for `seconds` on `uri`: the JSON report of its read or
/// write side.
fn fio(uri: &str, rw: &str, depth: u32, seconds: u64) -> serde_json::Value {
    let out = run_ok(
        Command::new("fio").args([
            "--name=bench",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            &format!("--rw={rw}"),
            "--bs=4k",
            &format!("--iodepth={depth}"),
            "--numjobs=1",
            &format!("--size={GIB}"),
            "--time_based",
            &format!("--runtime={seconds}"),
            "--norandommap",
            "--randrepeat=0",
            "--output-format=json",
        ]),
        LIMIT,
    );
    let json = tools::fio_json(&out.stdout);
    let side = if rw.contains("read") { "read" } else { "write" };
    json["jobs"][0][side].clone()
}

fn iops(side: &serde_json::Value) -> f64 {
    side["iops"].as_f64().expect("fio's iops")
}

/// The CPU time the process `pid` used so far, all its threads (io_uring's SQPOLL thread among
/// them) included: utime + stime of /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
        .expect("read /proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}
