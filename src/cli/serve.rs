//! `regio serve`: an NBD server of memory, file and block-device exports, on TCP and Unix
//! sockets, until SIGINT or SIGTERM.

use std::error::Error;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgMatches, Args};
use regio::nbd::target::{runtime_builder, Export, Server};
use regio::runtime::net::{TcpListener, UnixListener};
use regio::runtime::{JoinHandle, Runtime};

use super::signals;
use super::size::{parse_bytes, parse_size};

/// The address served when neither --listen nor --unix is given (10809: the NBD port).
const DEFAULT_LISTEN: &str = "127.0.0.1:10809";
/// The memory export served when no export is given.
const DEFAULT_MEMORY: u64 = 1 << 30;
/// How long a shutdown waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The arguments of `regio serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve SIZE bytes of memory (K, M, G, T: powers of 1024). Without any --memory or
    /// --file: one export of 1G. An export of up to 16G (and half the machine's memory) is
    /// registered with the rings so that reads are sent from it without a copy: that pins it,
    /// allocating all of it at start. Where pinning is refused (RLIMIT_MEMLOCK without
    /// CAP_IPC_LOCK), reads are copied instead (a warning says so) and memory is allocated as
    /// written.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Vec<u64>,
    /// Serve a file or block device (O_DIRECT where the file system allows it; a file on tmpfs
    /// is read and written with pread/pwrite, which costs less there than io_uring).
    #[arg(long, value_name = "PATH")]
    file: Vec<PathBuf>,
    /// Name the exports, in order: the first --name names the first export, and so on. The
    /// first export is the default one (what an empty name asks for); unnamed exports are
    /// called "" (the first), then export1, export2, ...
    #[arg(long, value_name = "NAME")]
    name: Vec<String>,
    /// Listen on a TCP address (default 127.0.0.1:10809 when no --unix is given either).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// Listen on a Unix socket at PATH (a stale socket file there is replaced; the file is
    /// removed when the server stops).
    #[arg(long, value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// Refuse writes on every export.
    #[arg(long)]
    read_only: bool,
    /// Send READ replies of BYTES or more (K, M: powers of 1024) with zero-copy sends
    /// (SEND_ZC): from a registered memory export itself, or from the registered buffer a file
    /// export's read filled. 0: every READ reply with data. Smaller replies are copied once into
    /// a registered staging buffer, gathered with the other replies of a batch into one send,
    /// which can cost less for small replies: each zero-copy send has a second completion to
    /// handle (its notification), and on loopback the kernel copies zero-copy sends anyway.
    /// Unix sockets always copy. Default: 16K, except for clients on the loopback interface,
    /// which get copies whatever the size (zero-copy sends cost more than they save there);
    /// BYTES given here applies to every client, loopback ones included.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    zero_copy_min: Option<u64>,
    /// Print a statistics line every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats: Option<u64>,
}

/// What an export is made from, in command-line order.
enum Source {
    Memory(u64),
    File(PathBuf),
}

/// The exports' sources in the order they were given (`matches` are the subcommand's).
fn sources(args: &ServeArgs, matches: &ArgMatches) -> Vec<Source> {
    let indices = |id| matches.indices_of(id).into_iter().flatten();
    let mut ordered: Vec<(usize, Source)> = indices("memory")
        .zip(&args.memory)
        .map(|(i, &size)| (i, Source::Memory(size)))
        .chain(
            indices("file")
                .zip(&args.file)
                .map(|(i, path)| (i, Source::File(path.clone()))),
        )
        .collect();
    ordered.sort_by_key(|&(i, _)| i);
    let mut sources: Vec<Source> = ordered.into_iter().map(|(_, s)| s).collect();
    if sources.is_empty() {
        sources.push(Source::Memory(DEFAULT_MEMORY));
    }
    sources
}

fn exports(args: &ServeArgs, matches: &ArgMatches) -> Result<Vec<Export>, Box<dyn Error>> {
    let sources = sources(args, matches);
    if args.name.len() > sources.len() {
        return Err(format!(
            "{} --name for {} exports: name each --memory or --file at most once",
            args.name.len(),
            sources.len()
        )
        .into());
    }
    sources
        .into_iter()
        .enumerate()
        .map(|(i, source)| {
            let name = args.name.get(i).cloned().unwrap_or_else(|| {
                if i == 0 {
                    String::new()
                } else {
                    format!("export{i}")
                }
            });
            Ok(match source {
                Source::Memory(size) => Export::memory(&name, size, args.read_only)?,
                Source::File(path) => Export::file(&name, &path, args.read_only)?,
            })
        })
        .collect()
}

/// Runs `regio serve` until SIGINT or SIGTERM.
pub fn run(args: ServeArgs, matches: &ArgMatches) -> Result<(), Box<dyn Error>> {
    // Before any thread starts, so every thread inherits the mask and the signals wait for
    // `signals::wait`.
    signals::block()?;
    let rt = runtime_builder().build()?;
    let server = Server::new(exports(&args, matches)?, rt.pool().clone())?;
    // Beyond the address space is beyond every reply: none goes out zero-copy.
    if let Some(bytes) = args.zero_copy_min {
        server.set_zero_copy_min(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    let mut tasks = Vec::new();
    let listen: Vec<&str> = if args.listen.is_empty() && args.unix.is_empty() {
        vec![DEFAULT_LISTEN]
    } else {
        args.listen.iter().map(String::as_str).collect()
    };
    for addr in listen {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        for export in server.exports() {
            let name = export.name();
            let slash = if name.is_empty() { "" } else { "/" };
            println!(
                "nbd://{local}{slash}{name} ({} bytes: {})",
                export.size(),
                export.description()
            );
        }
        tasks.push(serve_tcp(&rt, &server, listener));
    }
    for path in &args.unix {
        tasks.push(serve_unix(&rt, &server, path)?);
    }
    if let Some(secs) = args.stats {
        print_stats(&server, Duration::from_secs(secs.max(1)));
    }
    let signal = signals::wait()?;
    tracing::info!(
        signal,
        "shutting down: requests in flight complete, exports are flushed"
    );
    server.shutdown();
    for task in tasks {
        rt.block_on(task)?;
    }
    let finished = rt.block_on(regio::runtime::time::timeout(
        SHUTDOWN_GRACE,
        server.finish(),
    ));
    for path in &args.unix {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the socket file");
        }
    }
    rt.shutdown(Duration::from_secs(5));
    match finished {
        Ok(Ok(())) => Ok(()),
        Ok(Err(errno)) => Err(format!("flushing the exports failed: {errno:?}").into()),
        Err(_) => Err("connections were still open after the grace period".into()),
    }
}

fn serve_tcp(rt: &Runtime, server: &Server, listener: TcpListener) -> JoinHandle<()> {
    let server = server.clone();
    let listener = Arc::new(listener);
    rt.spawn(async move {
        server
            .serve(|| {
                let accept = listener.accept();
                async move {
                    let (stream, _peer) = accept.await?;
                    stream.set_nodelay(true)?;
                    Ok(stream)
                }
            })
            .await
    })
}

/// Listens on the Unix socket `path` (replacing a socket file left there) and prints the URI of
/// each export.
fn serve_unix(
    rt: &Runtime,
    server: &Server,
    path: &Path,
) -> Result<JoinHandle<()>, Box<dyn Error>> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = Arc::new(
        UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?,
    );
    for export in server.exports() {
        println!(
            "nbd+unix:///{}?socket={} ({} bytes: {})",
            export.name(),
            path.display(),
            export.size(),
            export.description()
        );
    }
    let server = server.clone();
    Ok(rt.spawn(async move {
        server
            .serve(|| {
                let accept = listener.accept();
                async move { accept.await.map(|(stream, _peer)| stream) }
            })
            .await
    }))
}

/// Prints the server's statistics every `period`, on a thread of its own.
fn print_stats(server: &Server, period: Duration) {
    let server = server.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(period);
        println!("{}", server.stats());
    });
}
