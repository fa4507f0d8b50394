//! Runs the `regio` binary as a user would.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::data::Noise;
use common::raw::RawClient;
use common::server::{Backing, Implementation, Spec};

fn regio(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regio"))
        .args(args)
        .output()
        .expect("the regio binary runs")
}

#[test]
fn probe_json_parses_and_agrees_with_the_exit_status() {
    let out = regio(&["probe", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe --json printed invalid JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let enabled = json["io_uring"]["state"] == "enabled";
    assert_eq!(out.status.success(), enabled, "{json:#}");
    assert!(json["kernel"]["release"].is_string(), "{json:#}");
    assert_eq!(json["setup_flags"].as_array().map(Vec::len), Some(6));
    assert!(json["degradations"].is_array());
    if enabled {
        let nop = &json["opcodes"][0];
        assert_eq!(
            (nop["name"].as_str(), nop["supported"].as_bool()),
            (Some("NOP"), Some(true))
        );
    }
}

#[test]
fn probe_prints_a_report() {
    let out = regio(&["probe"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for section in ["Kernel", "io_uring", "Locked memory", "What regio will do"] {
        assert!(text.contains(section), "no {section:?} in:\n{text}");
    }
}

/// Runs `regio probe` under a seccomp filter that fails `io_uring_setup` with `EPERM`, as
/// container runtimes' default profiles do, and checks that the probe names seccomp as the cause.
#[cfg(target_arch = "x86_64")]
#[test]
fn probe_names_a_seccomp_denial() {
    let out = regio_denied_io_uring(&["probe", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success(), "{json:#}");
    let status = &json["io_uring"];
    assert_eq!(status["state"], "disabled", "{json:#}");
    assert_eq!(status["errno"], libc::EPERM, "{json:#}");
    assert_eq!(status["reason"], "seccomp", "{json:#}");
    assert_eq!(json["process"]["seccomp"], 2, "{json:#}");

    let out = regio_denied_io_uring(&["probe"]);
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("DISABLED"), "{report}");
    assert!(
        report.contains("a seccomp filter denies io_uring"),
        "{report}"
    );
}

/// Runs `regio` with `args` under a seccomp filter that fails `io_uring_setup` with `EPERM`.
#[cfg(target_arch = "x86_64")]
fn regio_denied_io_uring(args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;

    let bpf = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // Classic BPF over `struct seccomp_data`, whose first field is the syscall number. The test
    // process runs natively on x86_64, so the architecture field need not be checked.
    let filter = [
        bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            libc::SYS_io_uring_setup as u32,
        ),
        bpf(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let mut command = Command::new(env!("CARGO_BIN_EXE_regio"));
    command.args(args);
    // SAFETY: between fork and exec the closure makes only the prctl system calls, which are
    // async-signal-safe, and reads its own copy of `filter`.
    unsafe {
        command.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    command.output().expect("regio runs under the filter")
}

/// Runs `regio probe` as an unprivileged user, whose registered buffers are capped by
/// `RLIMIT_MEMLOCK`, and checks that the report says so and what to raise.
#[test]
fn probe_as_an_unprivileged_user_reports_the_memlock_cap() {
    use std::os::unix::process::CommandExt;

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return regio_testkit::skip("needs root to switch to an unprivileged user");
    }
    const NOBODY: u32 = 65534;
    // The build directory may sit under a home that `nobody` cannot enter, so run a copy.
    let dir = std::env::temp_dir().join(format!("regio-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("regio");
    std::fs::copy(env!("CARGO_BIN_EXE_regio"), &binary).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Another test's fork may still hold the copy open for writing for a moment (until its
    // child execs and the close-on-exec descriptor goes), and exec then fails with ETXTBSY:
    // try again, a bounded number of times.
    let mut tries = 0;
    let out = loop {
        let out = Command::new(&binary)
            .args(["probe", "--json"])
            .uid(NOBODY)
            .gid(NOBODY)
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            out => break out,
        }
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let out = out.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let memlock = &json["memlock"];
    assert_eq!(memlock["cap_ipc_lock"], false, "{json:#}");
    let limited = memlock["soft"].is_u64();
    let advised = json["degradations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["missing"].as_str().unwrap().contains("RLIMIT_MEMLOCK"));
    assert_eq!(limited, advised, "{json:#}");
}

/// Whether this host lets the binary use io_uring (`regio probe` exits 0); prints a skip if
/// not (a failure under `REGIO_REQUIRE_ALL=1`).
fn io_uring_usable() -> bool {
    if regio(&["probe"]).status.success() {
        return true;
    }
    assert!(
        std::env::var("REGIO_REQUIRE_ALL").as_deref() != Ok("1"),
        "required test skipped: io_uring is not usable here"
    );
    println!("SKIP: io_uring is not usable here");
    false
}

/// `regio serve` prints its URI, answers a handshake, prints statistics, and exits cleanly on
/// SIGTERM.
#[test]
fn serve_answers_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};

    if !io_uring_usable() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_regio"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--memory",
            "1M",
            "--name",
            "disk",
        ])
        .args(["--stats", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let uri = first.split_whitespace().next().unwrap();
    let addr = uri
        .strip_prefix("nbd://")
        .and_then(|rest| rest.strip_suffix("/disk"))
        .unwrap_or_else(|| panic!("not the URI of export disk: {first}"));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut greeting = [0; 18];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"NBDMAGICIHAVEOPT\x00\x03");
    // Fixed newstyle, no zeroes; then NBD_OPT_LIST.
    stream.write_all(&3_u32.to_be_bytes()).unwrap();
    stream
        .write_all(b"IHAVEOPT\x00\x00\x00\x03\x00\x00\x00\x00")
        .unwrap();
    let mut reply = [0; 20];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        &reply[12..16],
        &2_u32.to_be_bytes(),
        "an NBD_REP_SERVER reply"
    );
    let stats = lines
        .map(Result::unwrap)
        .find(|line| line.starts_with("requests="))
        .expect("a statistics line");
    assert!(stats.contains("connections=1"), "{stats}");
    drop(stream);
    // SAFETY: kill(2) on the child this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `--zero-copy-min` refuses what is not a count of bytes, naming the flag and the reason,
/// before it starts anything.
#[test]
fn serve_refuses_a_bad_zero_copy_threshold() {
    let bad = [
        ("4X", "the unit must be K, M, G or T"),
        ("", "is not a size"),
        ("1.5K", "the unit must be"),
        ("99999999999T", "below 16 EiB"),
        ("-1", "unexpected argument"),
    ];
    for (value, reason) in bad {
        let out = regio(&["serve", "--zero-copy-min", value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value:?}: {stderr}");
        assert!(stderr.contains(reason), "{value:?}: {stderr}");
        if !value.starts_with('-') {
            assert!(stderr.contains("--zero-copy-min"), "{value:?}: {stderr}");
        }
    }
}

/// `--zero-copy-min 0` sends even a 4 KiB READ reply with SEND_ZC: the statistics line counts
/// its bytes.
#[test]
fn serve_at_zero_copy_threshold_zero_sends_a_4k_read_zero_copy() {
    if !io_uring_usable() {
        return;
    }
    let spec = Spec::new(Implementation::Regio, Backing::Memory(1 << 20))
        .tcp()
        .regio_args(["--zero-copy-min", "0", "--stats", "1"]);
    let Some(server) = common::start(spec) else {
        return;
    };
    let (mut client, _) = RawClient::open(server.address(), "");
    let data = Noise::new(7).bytes(4096);
    assert_eq!(client.write(0, 8192, &data), 0, "WRITE");
    assert!(
        client.read(8192, 4096) == data,
        "read back what was written"
    );
    // A statistics line a second; a bounded wait, nothing is timed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        let zero_copy_bytes = log
            .lines()
            .filter_map(|line| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix("zero_copy_bytes="))
            })
            .filter_map(|n| n.parse::<u64>().ok())
            .max();
        if zero_copy_bytes.is_some_and(|n| n >= 4096) {
            assert_eq!(zero_copy_bytes, Some(4096), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no zero-copy bytes counted:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    client.disconnect();
}
