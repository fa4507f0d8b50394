//! NBD servers as child processes: regio, nbdkit (file, memory and null plugins) and qemu-nbd,
//! on a Unix socket in a temporary directory or on a free loopback TCP port. A [`Server`] waits
//! until its socket accepts, gives its URI, and kills the process when dropped.

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools;
use super::TempDir;

/// How long a server may take to accept its first connection.
const START_LIMIT: Duration = Duration::from_secs(30);

/// An NBD server implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// `regio serve`, the binary of this package.
    Regio,
    /// nbdkit with its file, memory or null plugin.
    Nbdkit,
    /// qemu-nbd (file exports only).
    QemuNbd,
}

impl Implementation {
    /// The server the tests run against: `REGIO_NBD_SERVER` (`regio`, `nbdkit` or `qemu-nbd`),
    /// regio when it is unset. Running the suite against nbdkit shows the tests themselves are
    /// right.
    pub fn under_test() -> Implementation {
        match std::env::var("REGIO_NBD_SERVER").as_deref() {
            Err(_) | Ok("regio") => Implementation::Regio,
            Ok("nbdkit") => Implementation::Nbdkit,
            Ok("qemu-nbd") => Implementation::QemuNbd,
            Ok(other) => panic!("REGIO_NBD_SERVER={other}: expected regio, nbdkit or qemu-nbd"),
        }
    }

    /// The program this implementation runs.
    pub fn program(self) -> PathBuf {
        match self {
            Implementation::Regio => PathBuf::from(env!("CARGO_BIN_EXE_regio")),
            Implementation::Nbdkit => PathBuf::from("nbdkit"),
            Implementation::QemuNbd => PathBuf::from("qemu-nbd"),
        }
    }

    /// The tool that must be installed for this implementation, if any.
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Implementation::Regio => None,
            Implementation::Nbdkit => Some("nbdkit"),
            Implementation::QemuNbd => Some("qemu-nbd"),
        }
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Implementation::Regio => "regio",
            Implementation::Nbdkit => "nbdkit",
            Implementation::QemuNbd => "qemu-nbd",
        })
    }
}

/// What an export serves.
#[derive(Clone, Debug)]
pub enum Backing {
    /// A file (or block device).
    File(PathBuf),
    /// Memory of this many bytes, zero at the start.
    Memory(u64),
    /// nbdkit's null plugin of this many bytes: reads return zeroes, writes are discarded.
    Null(u64),
}

/// Where a server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A Unix socket in the server's temporary directory.
    Unix,
    /// A free port on 127.0.0.1.
    Tcp,
}

/// An address a server listens on.
#[derive(Clone, Debug)]
pub enum Address {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// A server to start: implementation, export and listener.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The implementation.
    pub implementation: Implementation,
    /// What the export serves.
    pub backing: Backing,
    /// The export's name; `None` serves the default export (name "").
    pub name: Option<String>,
    /// Whether the export is read-only.
    pub read_only: bool,
    /// Unix socket or TCP.
    pub transport: Transport,
    /// More exports of the same server, by name (regio only).
    pub more: Vec<(String, Backing)>,
    /// More arguments for `regio serve` (regio only).
    pub regio_args: Vec<String>,
}

impl Spec {
    /// A read-write export of `backing` by `implementation` on a Unix socket.
    pub fn new(implementation: Implementation, backing: Backing) -> Spec {
        Spec {
            implementation,
            backing,
            name: None,
            read_only: false,
            transport: Transport::Unix,
            more: Vec::new(),
            regio_args: Vec::new(),
        }
    }

    /// The same export under `name`.
    pub fn named(mut self, name: &str) -> Spec {
        self.name = Some(name.to_owned());
        self
    }

    /// The same export, read-only.
    pub fn read_only(mut self) -> Spec {
        self.read_only = true;
        self
    }

    /// The same server with one more export, `name` (the first export must be named too).
    pub fn and_export(mut self, name: &str, backing: Backing) -> Spec {
        self.more.push((name.to_owned(), backing));
        self
    }

    /// The same server with more arguments for `regio serve` (regio only).
    pub fn regio_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Spec {
        self.regio_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The same export on a loopback TCP port.
    pub fn tcp(mut self) -> Spec {
        self.transport = Transport::Tcp;
        self
    }
}

/// Why a server did not start.
#[derive(Debug)]
pub enum StartError {
    /// The implementation's program is not installed.
    Missing(&'static str),
    /// The implementation cannot serve this kind of export.
    Unsupported(String),
    /// The process exited or never accepted a connection.
    Failed(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Missing(tool) => write!(
                f,
                "{tool} is not installed (apt-get install {})",
                tools::package_of(tool)
            ),
            StartError::Unsupported(what) => f.write_str(what),
            StartError::Failed(what) => f.write_str(what),
        }
    }
}

/// A running NBD server, killed (SIGKILL) and reaped when dropped.
pub struct Server {
    spec: Spec,
    dir: TempDir,
    address: Address,
    child: Option<Child>,
}

impl Server {
    /// Starts the server `spec` describes and waits until it accepts connections.
    pub fn start(spec: Spec) -> Result<Server, StartError> {
        if let Some(tool) = spec.implementation.tool() {
            if tools::find(tool).is_none() {
                return Err(StartError::Missing(tool));
            }
        }
        let dir = TempDir::new(&format!("{}-server", spec.implementation));
        let address = match spec.transport {
            Transport::Unix => Address::Unix(dir.join("nbd.sock")),
            Transport::Tcp => Address::Tcp(free_loopback_port()),
        };
        let mut server = Server {
            spec,
            dir,
            address,
            child: None,
        };
        // A free port can be taken by another process before the server binds it: then try
        // another one.
        let mut tries = 0;
        loop {
            tries += 1;
            match server.launch() {
                Err(StartError::Failed(_))
                    if server.spec.transport == Transport::Tcp && tries < 3 =>
                {
                    server.address = Address::Tcp(free_loopback_port());
                }
                result => return result.map(|()| server),
            }
        }
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The server's NBD URI (`nbd+unix:///NAME?socket=PATH` or `nbd://127.0.0.1:PORT/NAME`).
    pub fn uri(&self) -> String {
        let name = self.spec.name.as_deref().unwrap_or("");
        match &self.address {
            Address::Unix(path) => format!("nbd+unix:///{name}?socket={}", path.display()),
            Address::Tcp(addr) => format!("nbd://{addr}/{name}"),
        }
    }

    /// The export's name ("" for the default export).
    pub fn export_name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or("")
    }

    /// The implementation.
    pub fn implementation(&self) -> Implementation {
        self.spec.implementation
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same server again (after [`Server::kill9`]) on the same address.
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.kill9();
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
        self.launch()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("waitpid on the server").is_none())
    }

    /// What the server wrote to stderr so far (every start appends to one log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The last 40 lines of [`Server::log`].
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn launch(&mut self) -> Result<(), StartError> {
        let mut cmd = self.command()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("the server log opens");
        let log_err = log.try_clone().expect("the log fd duplicates");
        tools::die_with_parent(&mut cmd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|e| StartError::Failed(format!("cannot run {cmd:?}: {e}")))?;
        self.child = Some(child);
        self.wait_until_accepting(&format!("{cmd:?}"))
    }

    fn wait_until_accepting(&mut self, what: &str) -> Result<(), StartError> {
        let start = Instant::now();
        loop {
            if !self.is_running() {
                let log = self.log();
                self.kill9();
                return Err(StartError::Failed(format!("{what} exited:\n{log}")));
            }
            let connected = match &self.address {
                Address::Unix(path) => UnixStream::connect(path).is_ok(),
                Address::Tcp(addr) => TcpStream::connect(addr).is_ok(),
            };
            if connected {
                return Ok(());
            }
            if start.elapsed() > START_LIMIT {
                let log = self.log();
                self.kill9();
                return Err(StartError::Failed(format!(
                    "{what} did not accept within {START_LIMIT:?}:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn command(&self) -> Result<Command, StartError> {
        let spec = &self.spec;
        if !spec.more.is_empty() && spec.implementation != Implementation::Regio {
            return Err(StartError::Unsupported(format!(
                "the harness starts {} with one export only",
                spec.implementation
            )));
        }
        if !spec.regio_args.is_empty() && spec.implementation != Implementation::Regio {
            return Err(StartError::Unsupported(format!(
                "the arguments {:?} are regio's, not {}'s",
                spec.regio_args, spec.implementation
            )));
        }
        let mut cmd = Command::new(spec.implementation.program());
        match spec.implementation {
            Implementation::Regio => {
                cmd.arg("serve");
                // Exports and names pair up in order.
                let exports = std::iter::once((spec.name.as_ref(), &spec.backing)).chain(
                    spec.more
                        .iter()
                        .map(|(name, backing)| (Some(name), backing)),
                );
                for (name, backing) in exports {
                    match backing {
                        Backing::File(path) => cmd.arg("--file").arg(path),
                        Backing::Memory(size) => cmd.arg("--memory").arg(size.to_string()),
                        Backing::Null(_) => {
                            return Err(StartError::Unsupported(
                                "regio has no null export".to_owned(),
                            ))
                        }
                    };
                    if let Some(name) = name {
                        cmd.args(["--name", name]);
                    }
                }
                if spec.read_only {
                    cmd.arg("--read-only");
                }
                cmd.args(&spec.regio_args);
                match &self.address {
                    Address::Unix(path) => cmd.arg("--unix").arg(path),
                    Address::Tcp(addr) => cmd.arg("--listen").arg(addr.to_string()),
                };
            }
            Implementation::Nbdkit => {
                // -f: stay in the foreground, so that the child is the server.
                cmd.arg("-f");
                match &self.address {
                    Address::Unix(path) => cmd.arg("-U").arg(path),
                    Address::Tcp(addr) => cmd
                        .args(["-i", &addr.ip().to_string(), "-p"])
                        .arg(addr.port().to_string()),
                };
                if spec.read_only {
                    cmd.arg("-r");
                }
                if spec.name.is_some() {
                    // Without this filter nbdkit serves any name it is asked for.
                    cmd.arg("--filter=exportname");
                }
                match &spec.backing {
                    Backing::File(path) => cmd.arg("file").arg(file_arg(path)),
                    Backing::Memory(size) => cmd.arg("memory").arg(format!("size={size}")),
                    Backing::Null(size) => cmd.arg("null").arg(format!("size={size}")),
                };
                // Filter parameters follow the plugin's.
                if let Some(name) = &spec.name {
                    cmd.arg(format!("exportname={name}"));
                    cmd.args(["exportname-strict=true", "exportname-list=explicit"]);
                }
            }
            Implementation::QemuNbd => {
                let Backing::File(path) = &spec.backing else {
                    return Err(StartError::Unsupported(
                        "qemu-nbd serves only files".to_owned(),
                    ));
                };
                // --persistent: keep serving after the first client; --shared=0: any number of
                // clients at once.
                cmd.args(["-f", "raw", "--persistent", "--shared=0"]);
                match &self.address {
                    Address::Unix(path) => cmd.arg("-k").arg(path),
                    Address::Tcp(addr) => cmd
                        .args(["-b", &addr.ip().to_string(), "-p"])
                        .arg(addr.port().to_string()),
                };
                if spec.read_only {
                    cmd.arg("-r");
                }
                if let Some(name) = &spec.name {
                    cmd.args(["-x", name]);
                }
                cmd.arg(path);
            }
        }
        Ok(cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn file_arg(path: &Path) -> String {
    format!("file={}", path.display())
}

/// A loopback port that was free a moment ago.
fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound listener's address")
}
