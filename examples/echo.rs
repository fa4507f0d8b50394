//! A TCP echo server on regio: every connection gets a task that receives into a registered
//! pool buffer and sends the same buffer back. The server of the echo benchmark.
//!
//! Run: `cargo run --release --example echo -- [ADDRESS] [--workers N] [--mode MODE]`
//!
//! - `ADDRESS`: where to listen (default `127.0.0.1:7878`);
//! - `--workers N`: worker threads (default: one per CPU the process may use);
//! - `--mode interrupt|sqpoll|single-issuer`: how the rings submit (default `interrupt`; see
//!   `regio::runtime::RingMode`).
//!
//! Try it with `nc 127.0.0.1 7878`. It serves until killed.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use regio::runtime::net::{TcpListener, TcpStream};
use regio::runtime::{self, RingMode, Runtime};

/// A TCP echo server on regio.
#[derive(Parser)]
struct Args {
    /// The address to listen on.
    #[arg(default_value = "127.0.0.1:7878")]
    address: String,
    /// Worker threads (default: one per CPU the process may use).
    #[arg(long)]
    workers: Option<usize>,
    /// How the rings submit.
    #[arg(long, value_enum, default_value = "interrupt")]
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// A system call per worker loop turn that submits.
    Interrupt,
    /// An SQPOLL kernel thread submits (idle after 50 ms).
    Sqpoll,
    /// Each ring bound to its worker (SINGLE_ISSUER, DEFER_TASKRUN).
    SingleIssuer,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut builder = Runtime::builder().ring_mode(match args.mode {
        Mode::Interrupt => RingMode::Interrupt,
        Mode::Sqpoll => RingMode::SqPoll {
            idle: Duration::from_millis(50),
            cpu: None,
        },
        Mode::SingleIssuer => RingMode::SingleIssuer,
    });
    if let Some(n) = args.workers {
        builder = builder.worker_threads(n);
    }
    let rt = builder.build()?;
    let listener = TcpListener::bind(args.address.as_str())?;
    println!("echo: listening on {}", listener.local_addr()?);
    rt.block_on(rt.spawn(async move {
        loop {
            match listener.accept().await {
                // Detached: each connection's task ends with its connection.
                Ok((stream, _peer)) => drop(runtime::spawn(serve(stream))),
                // Out of descriptors, a connection reset before it was taken, ...: the
                // listener goes on.
                Err(e) => eprintln!("echo: accept: {e}"),
            }
        }
    }))?;
    Ok(())
}

/// Echoes what `stream` receives until the peer closes or the connection fails.
async fn serve(stream: TcpStream) {
    if let Err(e) = echo(&stream).await {
        eprintln!("echo: connection: {e}");
    }
}

async fn echo(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let pool = runtime::pool();
    loop {
        // Waits for a free buffer if every one is in use.
        let msg = pool.acquire().await;
        let (n, mut msg) = stream.recv(msg).await;
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        msg.descriptor_mut().truncate(n);
        stream.send_all(msg).await.0?;
    }
}
