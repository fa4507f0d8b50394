//! External tools: finding them, and running them bounded in time.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Debian package that provides each tool the NBD tests use.
pub const PACKAGES: &[(&str, &str)] = &[
    ("nbdinfo", "libnbd-bin"),
    ("nbdcopy", "libnbd-bin"),
    ("nbdsh", "python3-libnbd"),
    ("qemu-img", "qemu-utils"),
    ("qemu-nbd", "qemu-utils"),
    ("fio", "fio"),
    ("nbdkit", "nbdkit"),
];

/// The package that provides `tool`, for messages.
pub fn package_of(tool: &str) -> &str {
    PACKAGES
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or(tool, |(_, p)| p)
}

/// `tool`'s path on `PATH`, if it is there.
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first of `tools` that is not on `PATH`, if any.
pub fn first_missing<'a>(tools: &[&'a str]) -> Option<&'a str> {
    tools.iter().copied().find(|t| find(t).is_none())
}

/// Whether every one of `tools` is installed; when one is not, the test is skipped (a failure
/// under REGIO_REQUIRE_ALL=1) with a message naming the package to install.
pub fn require(tools: &[&str]) -> bool {
    match first_missing(tools) {
        None if tools.contains(&"nbdsh") && nbd_python().is_none() => {
            super::skip("nbdsh is installed but no python3 on PATH or in /usr/bin imports nbd (install python3-libnbd)");
            false
        }
        None => true,
        Some(tool) => {
            super::skip(&format!(
                "{tool} is not installed (apt-get install {})",
                package_of(tool)
            ));
            false
        }
    }
}

/// Makes the command's process receive SIGKILL when the thread that started it dies, so that no
/// server or tool outlives a test that panicked or was killed.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl, which
    // is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A python3 that can `import nbd`: the one on `PATH`, else the system's (a pyenv or virtualenv
/// python3 on `PATH` does not see Debian's python3-libnbd, and `nbdsh` runs `python3 -m nbd`).
pub fn nbd_python() -> Option<PathBuf> {
    let imports_nbd = |python: &Path| {
        // From /: a directory named nbd (this workspace has one) would import as a namespace
        // package.
        Command::new(python)
            .current_dir("/")
            .args(["-c", "import nbd; nbd.NBD"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    find("python3")
        .into_iter()
        .chain([PathBuf::from("/usr/bin/python3")])
        .find(|p| imports_nbd(p))
}

/// A `PATH` on which `python3` imports nbd, for running `nbdsh`.
pub fn path_for_nbdsh() -> OsString {
    let python = nbd_python().expect("a python3 that imports nbd (python3-libnbd)");
    let dir = python.parent().expect("python3 is in a directory");
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries hold no ':'")
}

/// Runs `cmd` to its end with its output captured, killing it and failing the test if it takes
/// longer than `limit` (a hang becomes a failure, not a stuck test run).
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = die_with_parent(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = drain(&mut child, true);
    let stderr = drain(&mut child, false);
    let status = wait_bounded(&mut child, limit)
        .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}: killed"));
    Output {
        status,
        stdout: stdout.join().expect("the stdout reader"),
        stderr: stderr.join().expect("the stderr reader"),
    }
}

/// Runs `cmd` like [`run`] and fails the test, showing its output, unless it succeeds.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let out = run(cmd, limit);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn drain(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<Vec<u8>> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("stdout is piped"))
    } else {
        Box::new(child.stderr.take().expect("stderr is piped"))
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` to exit, at most `limit`; kills it and returns `None` past that.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waitpid on a child") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON report of `fio --output-format=json`. fio's nbd engine prints lines of its own
/// ("fio: connected to NBD server") before it, which are skipped.
pub fn fio_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let start = text
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| text.starts_with('{').then_some(0))
        .unwrap_or_else(|| panic!("no JSON report in fio's output:\n{text}"));
    serde_json::from_str(&text[start..])
        .unwrap_or_else(|e| panic!("fio's JSON report does not parse ({e}):\n{text}"))
}
