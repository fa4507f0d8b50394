//! `echo`: a TCP echo server on loopback, regio against tokio and monoio, with one client for
//! every server.
//!
//! - **The servers**, each in a child process of its own (this binary, run again with
//!   `--echo-server NAME`), so that a server's CPU time is its process's (`utime + stime` in
//!   `/proc/<pid>/stat`, which counts every thread of the process, the SQPOLL kernel thread
//!   included):
//!   - `regio_default`: `Runtime::builder().build()`, the configuration a user gets (one worker
//!     per CPU, no SQPOLL, the default pool), serving with the server of `examples/echo.rs`
//!     (`examples/support/echo_server.rs`, shared by both);
//!   - `regio_interrupt`, `regio_sqpoll` (the example's 50 ms idle), `regio_single_issuer`: the same with each
//!     `RingMode` set (`regio_interrupt` is the default's configuration: the pair shows the
//!     noise);
//!   - `tokio_ct` (current-thread) and `tokio_mt` (multi-thread, as many workers as regio's
//!     default): a task per connection, `read` into a 4 KiB buffer and `write_all` back;
//!   - `monoio` (one thread, io_uring driver): the same on monoio's owned buffers.
//! - **The client**, the same for every server: a tokio current-thread runtime in this
//!   process, 64 connections (`TCP_NODELAY`), each sending a message and reading its echo
//!   back, in turn.
//!
//! Measurements, each bounded in time (the whole run takes about a minute and a half):
//!
//! 1. Throughput, for 128 B and 4 KiB messages: three rounds; in each, every server gets one
//!    1 s run (after 200 ms of warm-up), servers alternated (the order rotates from round to
//!    round). Per round, regio's rate over each peer's; the median round's ratio is printed with
//!    the spread of the rounds:
//!
//!        COMPARE echo_128b_c64: regio=<msgs/s> tokio_ct=... tokio_mt=... monoio=...
//!            ratio=<regio over its best peer> ratio_tokio=<over the better tokio>
//!            ratio_monoio=<over monoio> (rounds ...)
//!        COMPARE echo_4k_c64: ...
//!
//!    and a line per regio mode with its own ratios.
//! 2. Server CPU per message at a fixed rate (128 B, 32 000 messages/s over the 64
//!    connections, 3 s): the child's CPU time over the messages exchanged, connection set-up
//!    included. Lower is better, and the ratio is regio's over the peer's:
//!
//!        COMPARE echo_cpu_per_msg: regio=<ns> tokio_ct=<ns> tokio_mt=<ns> monoio=<ns> ratio=...
//!
//!    `/proc` counts CPU time in clock ticks (10 ms): about 100 ns per message over a run.
//! 3. System calls per message (`echo_syscalls_per_msg`), regio with SQPOLL against tokio
//!    current-thread: `strace -c -f` attached to every thread of the running server (io_uring's
//!    own kernel threads cannot be traced, and make no system calls) for a 2 s paced run; the
//!    three most frequent calls follow, each per message, to say where they come from.
//!    Without strace the line says how to install it (`apt-get install strace`).
//!
//! Run: `cargo bench --bench echo`. On a shared machine the figures move with the load: the
//! rounds' spread says by how much.

#[path = "../examples/support/echo_server.rs"]
mod echo_server;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: usize = 64;
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_millis(1000);
const WARM_UP: Duration = Duration::from_millis(200);
/// The paced rate of the CPU and system-call measurements, in messages per second over all
/// connections.
const PACED_RATE: u32 = 32_000;
const PACED: Duration = Duration::from_secs(3);
const TRACED: Duration = Duration::from_secs(2);
/// The size of the paced messages.
const PACED_SIZE: usize = 128;

/// The servers, in the order of the first round.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    RegioDefault,
    RegioInterrupt,
    RegioSqPoll,
    RegioSingleIssuer,
    TokioCt,
    TokioMt,
    Monoio,
}

impl Server {
    const ALL: [Server; 7] = [
        Server::RegioDefault,
        Server::RegioInterrupt,
        Server::RegioSqPoll,
        Server::RegioSingleIssuer,
        Server::TokioCt,
        Server::TokioMt,
        Server::Monoio,
    ];
    /// The regio modes, each printed on its own line.
    const MODES: [Server; 3] = [
        Server::RegioInterrupt,
        Server::RegioSqPoll,
        Server::RegioSingleIssuer,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::RegioDefault => "regio_default",
            Server::RegioInterrupt => "regio_interrupt",
            Server::RegioSqPoll => "regio_sqpoll",
            Server::RegioSingleIssuer => "regio_single_issuer",
            Server::TokioCt => "tokio_ct",
            Server::TokioMt => "tokio_mt",
            Server::Monoio => "monoio",
        }
    }

    /// The server's place in [`Server::ALL`], the order of the children and of the figures.
    fn index(self) -> usize {
        Server::ALL
            .iter()
            .position(|&s| s == self)
            .expect("every server is in ALL")
    }

    fn from_name(name: &str) -> Option<Server> {
        Server::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The child's side: the server `name` on a free loopback port, which it prints as
/// `PORT <n>`; it serves until it is killed (or its parent dies).
mod child {
    use std::io::Write;

    use regio::runtime::net::TcpListener;
    use regio::runtime::{RingMode, Runtime};

    use super::{echo_server, Server};

    fn announce(port: u16) {
        let mut out = std::io::stdout();
        writeln!(out, "PORT {port}")
            .and_then(|()| out.flush())
            .expect("stdout");
    }

    pub fn run(server: Server) {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes no pointers; the child dies with its parent, so
        // an interrupted benchmark leaves no server behind.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        match server {
            Server::RegioDefault => regio(None),
            Server::RegioInterrupt => regio(Some(RingMode::Interrupt)),
            Server::RegioSqPoll => regio(Some(RingMode::SqPoll {
                idle: echo_server::SQPOLL_IDLE,
                cpu: None,
            })),
            Server::RegioSingleIssuer => regio(Some(RingMode::SingleIssuer)),
            Server::TokioCt => tokio_server(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
            ),
            Server::TokioMt => tokio_server(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(super::workers())
                    .enable_all()
                    .build(),
            ),
            Server::Monoio => monoio_server(),
        }
    }

    fn regio(mode: Option<RingMode>) {
        let mut builder = Runtime::builder();
        if let Some(mode) = mode {
            builder = builder.ring_mode(mode);
        }
        let rt = builder.build().expect("a regio runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        announce(listener.local_addr().expect("the address").port());
        rt.block_on(rt.spawn(echo_server::serve(listener)))
            .expect("the server task");
    }

    fn tokio_server(rt: std::io::Result<tokio::runtime::Runtime>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = rt.expect("a tokio runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            announce(listener.local_addr().expect("the address").port());
            loop {
                let (mut stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("TCP_NODELAY");
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
    }

    fn monoio_server() {
        use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .expect("a monoio runtime");
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            announce(listener.local_addr().expect("the address").port());
            loop {
                let (mut stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("TCP_NODELAY");
                monoio::spawn(async move {
                    let mut buf = Vec::with_capacity(4096);
                    loop {
                        let (read, back) = stream.read(buf).await;
                        match read {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let (written, mut back) = stream.write_all(back).await;
                        if written.is_err() {
                            return;
                        }
                        back.clear();
                        buf = back;
                    }
                });
            }
        })
    }
}

/// Worker threads of regio's default runtime (and of the multi-thread tokio): the CPUs this
/// process may use.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A running server child.
struct Running {
    server: Server,
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn start(server: Server) -> Running {
        let mut child = Command::new(std::env::current_exe().expect("this binary's path"))
            .args(["--echo-server", server.name()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a server child");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("the child's stdout"))
            .read_line(&mut line)
            .expect("the child's port");
        let port: u16 = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{} did not announce its port: {line:?}", server.name()));
        Running {
            server,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The child's CPU time so far, user and system, every thread included.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the child's /proc stat");
        // The fields after the command name (which may hold spaces), from field 3 on: utime
        // and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split(' ')
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf takes no pointers.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client run exchanged: every message, and those after the warm-up.
struct Exchanged {
    all: u64,
    measured: u64,
}

/// One client connection: sends `size` bytes and reads the echo back, in turn, until `end`
/// (at most one exchange per `pace` tick when paced).
async fn connection(
    mut stream: tokio::net::TcpStream,
    size: usize,
    start: Instant,
    end: Instant,
    pace: Option<(Duration, Duration)>,
) -> Exchanged {
    let message = vec![0xa5u8; size];
    let mut echo = vec![0u8; size];
    let mut ticks = pace.map(|(offset, period)| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks
    });
    let mut done = Exchanged {
        all: 0,
        measured: 0,
    };
    loop {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let now = Instant::now();
        if now >= end {
            return done;
        }
        stream
            .write_all(&message)
            .await
            .expect("send to the server");
        stream.read_exact(&mut echo).await.expect("the echo");
        done.all += 1;
        if now >= start {
            done.measured += 1;
        }
    }
}

/// The client: `CONNECTIONS` connections to `addr` exchanging `size`-byte messages for the
/// warm-up and then `run`, paced to `rate` messages per second over all of them if given.
fn client(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    size: usize,
    run: Duration,
    rate: Option<u32>,
) -> Exchanged {
    rt.block_on(async {
        let mut streams = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the server");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            streams.push(stream);
        }
        let start = Instant::now() + WARM_UP;
        let end = start + run;
        // Each connection sends every `period`, the connections spread over it.
        let period = rate.map(|r| Duration::from_secs(CONNECTIONS as u64) / r);
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, stream)| {
                let pace = period.map(|p| (p * i as u32 / CONNECTIONS as u32, p));
                tokio::spawn(connection(stream, size, start, end, pace))
            })
            .collect();
        let mut total = Exchanged {
            all: 0,
            measured: 0,
        };
        for task in tasks {
            let done = task.await.expect("a client connection");
            total.all += done.all;
            total.measured += done.measured;
        }
        total
    })
}

/// The median of `values` and their spread (lowest, highest).
fn median(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

/// Rates in messages per second, by server (in `Server::ALL` order), by round.
struct Rates(Vec<Vec<f64>>);

impl Rates {
    fn of(&self, server: Server) -> &[f64] {
        &self.0[server.index()]
    }

    /// The median per-round ratio of `ours` over the better of `peers` that round, and the
    /// spread.
    fn ratio(&self, ours: Server, peers: &[Server]) -> (f64, f64, f64) {
        median(
            (0..ROUNDS)
                .map(|r| {
                    let best = peers
                        .iter()
                        .map(|&p| self.of(p)[r])
                        .fold(f64::MIN, f64::max);
                    self.of(ours)[r] / best
                })
                .collect(),
        )
    }

    fn median(&self, server: Server) -> f64 {
        median(self.of(server).to_vec()).0
    }
}

const TOKIO: [Server; 2] = [Server::TokioCt, Server::TokioMt];
const PEERS: [Server; 3] = [Server::TokioCt, Server::TokioMt, Server::Monoio];

fn throughput(rt: &tokio::runtime::Runtime, servers: &[Running], name: &str, size: usize) {
    let mut rates = Rates(vec![Vec::new(); servers.len()]);
    for round in 0..ROUNDS {
        for i in 0..servers.len() {
            let at = (i + round) % servers.len();
            let done = client(rt, servers[at].addr, size, ROUND, None);
            rates.0[at].push(done.measured as f64 / ROUND.as_secs_f64());
        }
    }
    for server in servers {
        let (rate, low, high) = median(rates.of(server.server).to_vec());
        println!(
            "{name} {}: {rate:.0} msgs/s (rounds {low:.0}..{high:.0})",
            server.server.name()
        );
    }
    for mode in Server::MODES {
        let (tokio, tl, th) = rates.ratio(mode, &TOKIO);
        let (monoio, ml, mh) = rates.ratio(mode, &[Server::Monoio]);
        println!(
            "{name} {}: ratio_tokio={tokio:.2} (rounds {tl:.2}..{th:.2}) ratio_monoio={monoio:.2} \
             (rounds {ml:.2}..{mh:.2})",
            mode.name()
        );
    }
    let (best, bl, bh) = rates.ratio(Server::RegioDefault, &PEERS);
    let (tokio, tl, th) = rates.ratio(Server::RegioDefault, &TOKIO);
    let (monoio, ml, mh) = rates.ratio(Server::RegioDefault, &[Server::Monoio]);
    println!(
        "COMPARE {name}: regio={:.0}msgs/s tokio_ct={:.0}msgs/s tokio_mt={:.0}msgs/s \
         monoio={:.0}msgs/s ratio={best:.2} ratio_tokio={tokio:.2} ratio_monoio={monoio:.2} \
         (rounds: ratio {bl:.2}..{bh:.2}, tokio {tl:.2}..{th:.2}, monoio {ml:.2}..{mh:.2})",
        rates.median(Server::RegioDefault),
        rates.median(Server::TokioCt),
        rates.median(Server::TokioMt),
        rates.median(Server::Monoio),
    );
}

fn cpu_per_message(rt: &tokio::runtime::Runtime, servers: &[Running]) {
    let mut ns = Vec::with_capacity(servers.len());
    for server in servers {
        let before = server.cpu();
        let done = client(rt, server.addr, PACED_SIZE, PACED, Some(PACED_RATE));
        let cpu = server.cpu() - before;
        let per = cpu.as_nanos() as f64 / done.all as f64;
        println!(
            "echo_cpu_per_msg {}: {per:.0} ns ({} messages, {:.0} msgs/s measured, {} ms of CPU)",
            server.server.name(),
            done.all,
            done.measured as f64 / PACED.as_secs_f64(),
            cpu.as_millis()
        );
        ns.push(per);
    }
    let of = |s: Server| ns[s.index()];
    let tokio = of(Server::TokioCt).min(of(Server::TokioMt));
    for mode in Server::MODES {
        println!(
            "echo_cpu_per_msg {}: ratio_tokio={:.2} ratio_monoio={:.2}",
            mode.name(),
            of(mode) / tokio,
            of(mode) / of(Server::Monoio)
        );
    }
    let regio = of(Server::RegioDefault);
    println!(
        "COMPARE echo_cpu_per_msg: regio={regio:.0}ns tokio_ct={:.0}ns tokio_mt={:.0}ns \
         monoio={:.0}ns ratio={:.2} ratio_tokio={:.2} ratio_monoio={:.2} (server CPU per \
         message at {PACED_RATE} msgs/s of {PACED_SIZE} B; ratios are regio's over the peer's, \
         lower is better)",
        of(Server::TokioCt),
        of(Server::TokioMt),
        of(Server::Monoio),
        regio / tokio.min(of(Server::Monoio)),
        regio / tokio,
        regio / of(Server::Monoio),
    );
}

/// What `strace -c` counted: calls per message in all, and the three most frequent calls
/// with theirs.
struct Syscalls {
    per_message: f64,
    top: Vec<(String, f64)>,
}

impl std::fmt::Display for Syscalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}", self.per_message)?;
        let top: Vec<String> = self
            .top
            .iter()
            .map(|(name, per)| format!("{name} {per:.3}"))
            .collect();
        write!(f, " ({})", top.join(", "))
    }
}

/// The rows of a `strace -c` summary: each call's name and count, and the total count (`None`
/// if the summary has none). A row reads `<% time> <seconds> <usecs/call> <calls> [<errors>]
/// <name>`.
fn strace_rows(summary: &str) -> Option<(Vec<(String, u64)>, u64)> {
    let mut rows = Vec::new();
    let mut total = None;
    for line in summary.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(calls), Some(name)) = (
            fields.get(3).and_then(|c| c.parse::<u64>().ok()),
            fields.last(),
        ) else {
            continue;
        };
        if *name == "total" {
            total = Some(calls);
        } else {
            rows.push((name.to_string(), calls));
        }
    }
    Some((rows, total?))
}

/// The system calls of `server` per message over a paced run, counted by `strace -c -f`
/// attached to each of its threads; or why they could not be counted.
fn syscalls_per_message(
    rt: &tokio::runtime::Runtime,
    server: &Running,
) -> Result<Syscalls, String> {
    let pid = server.child.id();
    let out = std::env::temp_dir().join(format!("regio-echo-strace-{pid}"));
    let mut strace = Command::new("strace");
    strace.args(["-c", "-f", "-o"]).arg(&out);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the child's threads") {
        let task = task.expect("a thread").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        // io_uring's kernel threads (SQPOLL, io-wq) cannot be traced.
        if !comm.starts_with("iou-") {
            strace.arg("-p").arg(task.file_name().unwrap());
        }
    }
    let mut tracer = match strace.stderr(Stdio::null()).spawn() {
        Ok(tracer) => tracer,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("strace is not installed (apt-get install strace)".into())
        }
        Err(e) => return Err(format!("strace does not start: {e}")),
    };
    // Until strace has attached: a paced run of its own, not counted.
    std::thread::sleep(Duration::from_millis(500));
    let done = client(rt, server.addr, PACED_SIZE, TRACED, Some(PACED_RATE));
    // SAFETY: kill takes no pointers; SIGINT makes strace detach and write its summary.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    tracer.wait().expect("strace ends");
    let summary = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let (mut rows, total) = strace_rows(&summary).ok_or_else(|| {
        format!(
            "strace could not trace {} (ptrace not allowed?): {summary:?}",
            server.server.name()
        )
    })?;
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    let messages = done.all as f64;
    Ok(Syscalls {
        per_message: total as f64 / messages,
        top: rows
            .into_iter()
            .take(3)
            .map(|(name, calls)| (name, calls as f64 / messages))
            .collect(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--echo-server") {
        let server = Server::from_name(&args[2]).expect("a server name");
        child::run(server);
        return;
    }
    let began = Instant::now();
    let servers: Vec<Running> = Server::ALL.into_iter().map(Running::start).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's tokio runtime");
    throughput(&rt, &servers, "echo_128b_c64", 128);
    throughput(&rt, &servers, "echo_4k_c64", 4096);
    cpu_per_message(&rt, &servers);
    let sqpoll = &servers[Server::RegioSqPoll.index()];
    let tokio = &servers[Server::TokioCt.index()];
    match syscalls_per_message(&rt, sqpoll)
        .and_then(|regio| syscalls_per_message(&rt, tokio).map(|tokio| (regio, tokio)))
    {
        Ok((regio, tokio)) => println!(
            "echo_syscalls_per_msg: regio_sqpoll={regio} tokio_ct={tokio} (strace -c -f on the \
             server's threads, {PACED_RATE} msgs/s of {PACED_SIZE} B for {}s)",
            TRACED.as_secs()
        ),
        Err(why) => println!("echo_syscalls_per_msg: not measured: {why}"),
    }
    println!("echo: {:.0}s in all", began.elapsed().as_secs_f64());
}
