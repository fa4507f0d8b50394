//! The `regio` command line.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use regio::adapters::probe::KernelProbe;

/// regio: an io_uring runtime in the style of Registered I/O.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what this kernel's io_uring supports, tried for real, and what regio does where
    /// something is missing.
    ///
    /// Exits with status 1 when io_uring cannot be used at all.
    Probe(ProbeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// Print the same facts as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Probe(args) => probe(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("regio: {e}");
        ExitCode::FAILURE
    })
}

fn probe(args: &ProbeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let probe = KernelProbe::run()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&probe)?);
    } else {
        print!("{probe}");
    }
    Ok(if probe.io_uring().is_enabled() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
