//! A TCP echo server on regio: every connection gets a task that receives into a registered
//! pool buffer and sends the same buffer back. The server of the echo benchmark: both run
//! `support/echo_server.rs`.
//!
//! Run: `cargo run --release --example echo -- [ADDRESS] [--workers N] [--mode MODE]`
//!
//! - `ADDRESS`: where to listen (default `127.0.0.1:7878`);
//! - `--workers N`: worker threads (default: one per CPU the process may use);
//! - `--mode interrupt|sqpoll|single-issuer`: how the rings submit (default `interrupt`; see
//!   `regio::runtime::RingMode`).
//!
//! Try it with `nc 127.0.0.1 7878`. It serves until killed.

#[path = "support/echo_server.rs"]
mod echo_server;

use clap::{Parser, ValueEnum};
use regio::runtime::net::TcpListener;
use regio::runtime::{RingMode, Runtime};

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
            idle: echo_server::SQPOLL_IDLE,
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
    rt.block_on(rt.spawn(echo_server::serve(listener)))?;
    Ok(())
}
