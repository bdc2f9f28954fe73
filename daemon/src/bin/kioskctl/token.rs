//! `kioskctl token`: placeholder until the token commands land.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Not implemented yet.
    Placeholder,
}

pub fn run(_cmd: TokenCommand) -> ExitCode {
    eprintln!("kioskctl token: not implemented yet");
    ExitCode::from(2)
}
