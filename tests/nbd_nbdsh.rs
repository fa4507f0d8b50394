//! nbdsh (libnbd's Python shell) scripts in tests/nbdsh/ against the server under test
//! (`regio serve` unless `REGIO_NBD_SERVER` names nbdkit or qemu-nbd): handshake and option
//! edge cases, every command with and without structured replies, and the error replies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::data::zeroed_file;
use common::server::{Backing, Implementation, Server, Spec};
use common::tools::{self, run};
use common::TempDir;

const EXPORT_SIZE: u64 = 16 << 20;
const EXPORT_NAME: &str = "disk";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/nbdsh")
        .join(name)
}

/// What the scripts' exports are made of.
#[derive(Clone, Copy)]
enum Kind {
    File,
    Memory,
}

/// Serves a zeroed 16 MiB export named "disk" (a file in `dir`, or memory), read-only or not.
fn export(dir: &TempDir, file: &str, kind: Kind, read_only: bool) -> Option<Server> {
    let backing = match kind {
        Kind::File => {
            let path = dir.join(file);
            zeroed_file(&path, EXPORT_SIZE);
            Backing::File(path)
        }
        Kind::Memory => Backing::Memory(EXPORT_SIZE),
    };
    let mut spec = Spec::new(Implementation::under_test(), backing).named(EXPORT_NAME);
    if read_only {
        spec = spec.read_only();
    }
    common::start(spec)
}

/// Runs tests/nbdsh/`name` after the prelude, against a read-write export of `kind` (and a
/// read-only one when `read_only_too`); fails with the script's output unless it succeeds.
fn run_script(name: &str, kind: Kind, read_only_too: bool) {
    if !tools::require(&["nbdsh"]) {
        return;
    }
    let dir = TempDir::new("nbdsh");
    let Some(server) = export(&dir, "rw.img", kind, false) else {
        return;
    };
    let read_only = if read_only_too {
        match export(&dir, "ro.img", kind, true) {
            Some(server) => Some(server),
            None => return,
        }
    } else {
        None
    };
    let read = |p: PathBuf| std::fs::read_to_string(&p).expect("read an nbdsh script");
    let mut cmd = Command::new("nbdsh");
    // Run from the temporary directory: `python3 -m nbd` must not find this workspace's nbd/.
    cmd.current_dir(dir.path())
        .env("PATH", tools::path_for_nbdsh())
        .env("NBD_URI", server.uri())
        .env("NBD_NAME", EXPORT_NAME)
        .args([
            "-n",
            "-c",
            &read(script("prelude.py")),
            "-c",
            &read(script(name)),
        ]);
    if let Some(ro) = &read_only {
        cmd.env("NBD_RO_URI", ro.uri());
    }
    let out = run(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{name} failed against {} ({}):\n{}{}\nserver log:\n{}",
        server.implementation(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
}

#[test]
fn nbdsh_handshake_and_options() {
    run_script("handshake.py", Kind::File, false);
}

#[test]
fn nbdsh_every_command_with_and_without_structured_replies() {
    run_script("commands.py", Kind::File, false);
}

#[test]
fn nbdsh_every_command_on_a_memory_export() {
    run_script("commands.py", Kind::Memory, false);
}

#[test]
fn nbdsh_read_only_memory_export_refuses_writes_with_eperm() {
    run_script("readonly.py", Kind::Memory, true);
}

#[test]
fn nbdsh_error_replies_with_and_without_structured_replies() {
    run_script("errors.py", Kind::File, false);
}

#[test]
fn nbdsh_read_only_export_refuses_writes_with_eperm() {
    run_script("readonly.py", Kind::File, true);
}
