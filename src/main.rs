//! The `regio` command line.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod cli;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Serve exports over NBD (the Network Block Device protocol) until SIGINT or SIGTERM.
    ///
    /// With no arguments: a 1 GiB memory export on 127.0.0.1:10809. Prints the nbd:// URI of
    /// each export; `nbdinfo nbd://127.0.0.1:10809` describes the default one.
    Serve(cli::serve::ServeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// Print the same facts as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in logs and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Probe(args) => probe(&args),
        Command::Serve(args) => {
            let serve = matches
                .subcommand_matches("serve")
                .expect("the serve subcommand was parsed");
            cli::serve::run(args, serve).map(|()| ExitCode::SUCCESS)
        }
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
