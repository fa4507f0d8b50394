//! The subcommands of the `regio` binary that need more than a few lines.

pub mod serve;
pub mod signals;
pub mod size;
