//! Real NBD clients against the server under test (`regio serve` unless `REGIO_NBD_SERVER`
//! names nbdkit or qemu-nbd): nbdinfo, qemu-img, nbdcopy and fio. A test whose client is not
//! installed is skipped (a failure under REGIO_REQUIRE_ALL=1).

mod common;

use std::process::Command;
use std::time::Duration;

use common::data::{assert_same_file, random_file, sparse_file, zeroed_file};
use common::raw::RawClient;
use common::server::{Address, Backing, Implementation, Server, Spec};
use common::tools::{self, run_ok};
use common::TempDir;

const MIB: u64 = 1 << 20;
/// A client command that runs longer than this is hung.
const LIMIT: Duration = Duration::from_secs(300);

/// The data extents of the sparse test image (offset, length): the rest of its 64 MiB are holes.
const EXTENTS: [(u64, usize); 2] = [(0, MIB as usize), (32 * MIB, MIB as usize)];
const SPARSE_SIZE: u64 = 64 * MIB;

/// The allocation map of the sparse test image: (offset, length, is data).
fn sparse_map() -> Vec<(u64, u64, bool)> {
    vec![
        (0, MIB, true),
        (MIB, 31 * MIB, false),
        (32 * MIB, MIB, true),
        (33 * MIB, 31 * MIB, false),
    ]
}

/// Serves a file export of `len` bytes (sparse, zero) from a new temporary directory.
fn file_export(dir: &TempDir, len: u64) -> Option<Server> {
    let path = dir.join("export.img");
    zeroed_file(&path, len);
    common::start(Spec::new(Implementation::under_test(), Backing::File(path)))
}

/// Serves a zeroed 1 MiB file export named "disk0" from `dir`.
fn named_export(dir: &TempDir) -> Option<Server> {
    let path = dir.join("export.img");
    zeroed_file(&path, MIB);
    common::start(Spec::new(Implementation::under_test(), Backing::File(path)).named("disk0"))
}

/// Serves the sparse test image.
fn sparse_export(dir: &TempDir) -> Option<Server> {
    let path = dir.join("sparse.img");
    sparse_file(&path, SPARSE_SIZE, &EXTENTS);
    common::start(Spec::new(Implementation::under_test(), Backing::File(path)))
}

/// Merges adjacent runs of the same kind, so that maps split differently compare equal.
fn merged(map: impl IntoIterator<Item = (u64, u64, bool)>) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (offset, len, data) in map {
        match out.last_mut() {
            Some(last) if last.2 == data && last.0 + last.1 == offset => last.1 += len,
            _ => out.push((offset, len, data)),
        }
    }
    out
}

/// `nbdinfo --map --json` of `uri` as (offset, length, is data): type bit 0 is a hole.
fn nbdinfo_map(uri: &str) -> Vec<(u64, u64, bool)> {
    let out = run_ok(
        Command::new("nbdinfo").args(["--map", "--json", uri]),
        LIMIT,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo's JSON");
    merged(json.as_array().expect("a list of extents").iter().map(|e| {
        (
            e["offset"].as_u64().expect("offset"),
            e["length"].as_u64().expect("length"),
            e["type"].as_u64().expect("type") & 1 == 0,
        )
    }))
}

#[test]
fn nbdinfo_describes_the_export() {
    if !tools::require(&["nbdinfo"]) {
        return;
    }
    let dir = TempDir::new("nbdinfo");
    let Some(server) = file_export(&dir, 64 * MIB) else {
        return;
    };
    let out = run_ok(
        Command::new("nbdinfo").args(["--json", &server.uri()]),
        LIMIT,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo's JSON");
    assert_eq!(json["protocol"], "newstyle-fixed", "{json:#}");
    assert_eq!(json["structured"], true, "{json:#}");
    let export = &json["exports"][0];
    assert_eq!(export["export-size"], 64 * MIB, "{json:#}");
    assert_eq!(export["is_read_only"], false, "{json:#}");
    for flag in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
        "can_cache",
    ] {
        assert_eq!(export[flag], true, "{flag} in {json:#}");
    }
    assert_eq!(export["contexts"][0], "base:allocation", "{json:#}");
}

#[test]
fn nbdinfo_lists_a_named_export() {
    if !tools::require(&["nbdinfo"]) {
        return;
    }
    let dir = TempDir::new("nbdinfo-list");
    let Some(server) = named_export(&dir) else {
        return;
    };
    let out = run_ok(
        Command::new("nbdinfo").args(["--list", "--json", &server.uri()]),
        LIMIT,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo's JSON");
    let names: Vec<&str> = json["exports"]
        .as_array()
        .expect("a list of exports")
        .iter()
        .filter_map(|e| e["export-name"].as_str())
        .collect();
    assert_eq!(names, ["disk0"], "{json:#}");
}

#[test]
fn nbdinfo_map_shows_the_holes_of_a_sparse_file() {
    if !tools::require(&["nbdinfo"]) {
        return;
    }
    let dir = TempDir::new("nbdinfo-map");
    let Some(server) = sparse_export(&dir) else {
        return;
    };
    assert_eq!(nbdinfo_map(&server.uri()), sparse_map());
}

#[test]
fn nbdinfo_map_of_a_sparse_file_past_4_gib() {
    if !tools::require(&["nbdinfo"]) {
        return;
    }
    let dir = TempDir::new("nbdinfo-map-large");
    let path = dir.join("large.img");
    let gib = 1 << 30;
    // nbdinfo asks for the status of up to 4 GiB at once.
    sparse_file(
        &path,
        10 * gib,
        &[(0, MIB as usize), (6 * gib, MIB as usize)],
    );
    let Some(server) = common::start(Spec::new(Implementation::under_test(), Backing::File(path)))
    else {
        return;
    };
    assert_eq!(
        nbdinfo_map(&server.uri()),
        [
            (0, MIB, true),
            (MIB, 6 * gib - MIB, false),
            (6 * gib, MIB, true),
            (6 * gib + MIB, 4 * gib - MIB, false),
        ]
    );
}

#[test]
fn nbdinfo_map_shows_what_was_written_to_a_memory_export() {
    if !tools::require(&["nbdinfo"]) {
        return;
    }
    let spec = Spec::new(Implementation::under_test(), Backing::Memory(64 * MIB));
    let Some(server) = common::start(spec) else {
        return;
    };
    let (mut client, _) = RawClient::open(server.address(), server.export_name());
    for &(offset, len) in &EXTENTS {
        assert_eq!(client.write(0, offset, &vec![0xa5; len]), 0, "WRITE");
    }
    client.disconnect();
    assert_eq!(nbdinfo_map(&server.uri()), sparse_map());
}

#[test]
fn qemu_img_converts_a_random_image_in_and_back_out() {
    if !tools::require(&["qemu-img"]) {
        return;
    }
    let dir = TempDir::new("qemu-img");
    let len = 256 * MIB;
    let Some(server) = file_export(&dir, len) else {
        return;
    };
    let source = dir.join("source.img");
    random_file(&source, len, 256);
    let uri = server.uri();
    let convert = |from: &str, to: &str, target_exists: bool| {
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-f", "raw", "-O", "raw"]);
        if target_exists {
            cmd.arg("-n");
        }
        run_ok(cmd.args([from, to]), LIMIT);
    };
    convert(source.to_str().unwrap(), &uri, true);
    let back = dir.join("back.img");
    convert(&uri, back.to_str().unwrap(), false);
    assert_same_file(&source, &back);
}

#[test]
fn qemu_img_map_reports_the_holes_of_a_sparse_file() {
    if !tools::require(&["qemu-img"]) {
        return;
    }
    let dir = TempDir::new("qemu-img-map");
    let Some(server) = sparse_export(&dir) else {
        return;
    };
    let out = run_ok(
        Command::new("qemu-img").args(["map", "--output=json", "-f", "raw", &server.uri()]),
        LIMIT,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img's JSON");
    let map = merged(json.as_array().expect("a list of extents").iter().map(|e| {
        let data = e["data"].as_bool().expect("data");
        assert_eq!(
            e["zero"].as_bool(),
            Some(!data),
            "a hole reads as zeroes: {e}"
        );
        (
            e["start"].as_u64().expect("start"),
            e["length"].as_u64().expect("length"),
            data,
        )
    }));
    assert_eq!(map, sparse_map());
}

#[test]
fn nbdcopy_copies_both_ways_over_four_connections() {
    if !tools::require(&["nbdcopy"]) {
        return;
    }
    let dir = TempDir::new("nbdcopy");
    let len = 64 * MIB;
    let Some(server) = file_export(&dir, len) else {
        return;
    };
    let source = dir.join("source.img");
    random_file(&source, len, 64);
    let uri = server.uri();
    let source_arg = source.to_str().unwrap();
    run_ok(
        Command::new("nbdcopy").args(["--connections=4", "--flush", source_arg, &uri]),
        LIMIT,
    );
    let back = dir.join("back.img");
    run_ok(
        Command::new("nbdcopy").args(["--connections=4", &uri, back.to_str().unwrap()]),
        LIMIT,
    );
    assert_same_file(&source, &back);
}

#[test]
fn fio_random_writes_verify_with_crc32c_over_several_jobs() {
    let dir = TempDir::new("fio-verify");
    fio_verify(|len| file_export(&dir, len));
}

#[test]
fn fio_random_writes_verify_on_a_memory_export() {
    fio_verify(|len| {
        common::start(Spec::new(
            Implementation::under_test(),
            Backing::Memory(len),
        ))
    });
}

/// fio writes 4 jobs' regions at random (4 KiB, 16 in flight each), then reads every block back
/// and checks its crc32c, on the export `serve` starts for a given size.
fn fio_verify(serve: impl FnOnce(u64) -> Option<Server>) {
    if !tools::require(&["fio"]) {
        return;
    }
    let jobs = 4u64;
    let per_job = 16 * MIB;
    let Some(server) = serve(jobs * per_job) else {
        return;
    };
    let out = run_ok(
        Command::new("fio").args([
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", server.uri()),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            &format!("--numjobs={jobs}"),
            &format!("--size={per_job}"),
            &format!("--offset_increment={per_job}"),
            "--verify=crc32c",
            "--verify_fatal=1",
            // No local-*-verify.state files left in the working directory.
            "--verify_state_save=0",
            "--output-format=json",
        ]),
        LIMIT,
    );
    let json = tools::fio_json(&out.stdout);
    let reports = json["jobs"].as_array().expect("fio's jobs");
    assert_eq!(reports.len() as u64, jobs, "{json:#}");
    for job in reports {
        assert_eq!(job["error"], 0, "{job:#}");
        assert_eq!(
            job["write"]["io_bytes"], per_job,
            "every block written: {job:#}"
        );
        assert_eq!(
            job["read"]["io_bytes"], per_job,
            "every block verified: {job:#}"
        );
    }
}

#[test]
fn qemu_nbd_list_reads_the_export_list() {
    if !tools::require(&["qemu-nbd"]) {
        return;
    }
    let dir = TempDir::new("qemu-nbd-list");
    let Some(server) = named_export(&dir) else {
        return;
    };
    let mut cmd = Command::new("qemu-nbd");
    match server.address() {
        Address::Unix(path) => cmd.arg("--list").arg("-k").arg(path),
        Address::Tcp(addr) => cmd
            .args(["--list", "-b", &addr.ip().to_string(), "-p"])
            .arg(addr.port().to_string()),
    };
    let out = run_ok(&mut cmd, LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exports available: 1"), "{text}");
    assert!(text.contains("export: 'disk0'"), "{text}");
    assert!(text.contains(&format!("size:  {MIB}")), "{text}");
}

#[test]
fn several_named_exports_each_serve_their_own_data() {
    if !tools::require(&["nbdinfo"]) {
        return;
    }
    let dir = TempDir::new("exports");
    let path = dir.join("disk.img");
    zeroed_file(&path, 16 * MIB);
    let spec = Spec::new(Implementation::under_test(), Backing::Memory(8 * MIB))
        .named("mem")
        .and_export("disk", Backing::File(path.clone()));
    let Some(server) = common::start(spec) else {
        return;
    };
    let out = run_ok(
        Command::new("nbdinfo").args(["--list", "--json", &server.uri()]),
        LIMIT,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo's JSON");
    let mut exports: Vec<(String, u64)> = json["exports"]
        .as_array()
        .expect("a list of exports")
        .iter()
        .map(|e| {
            let name = e["export-name"].as_str().expect("a name").to_owned();
            (name, e["export-size"].as_u64().expect("a size"))
        })
        .collect();
    exports.sort();
    assert_eq!(
        exports,
        [("disk".to_owned(), 16 * MIB), ("mem".to_owned(), 8 * MIB)]
    );

    let (mut disk, _) = RawClient::open(server.address(), "disk");
    let (mut mem, _) = RawClient::open(server.address(), "mem");
    assert_eq!(disk.write(0, 0, &[0xd1; 4096]), 0);
    assert_eq!(mem.write(0, 0, &[0x3e; 4096]), 0);
    assert_eq!(disk.read(0, 4096), [0xd1; 4096]);
    assert_eq!(mem.read(0, 4096), [0x3e; 4096]);
    let (error, _) = disk.call(0, regio_nbd::proto::consts::NBD_CMD_FLUSH, 0, 0);
    assert_eq!(error, 0, "FLUSH");
    let on_disk = std::fs::read(&path).expect("read the export file");
    assert_eq!(on_disk[..4096], [0xd1; 4096]);

    let (mut other, _) = RawClient::connect(server.address());
    other.send_client_flags(3);
    assert_eq!(
        other.go("no-such-export").unwrap_err(),
        regio_nbd::proto::consts::NBD_REP_ERR_UNKNOWN
    );
    disk.disconnect();
    mem.disconnect();
}
