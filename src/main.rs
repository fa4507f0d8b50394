//! The `regio` command line.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use clap::Parser;

/// regio: an io_uring runtime in the style of Registered I/O.
#[derive(Parser)]
#[command(version, about)]
enum Cli {}

fn main() {
    match Cli::parse() {}
}
