//! `kioskctl device`: placeholder until the device commands land.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DeviceCommand {
    /// Not implemented yet.
    Placeholder,
}

pub fn run(_cmd: DeviceCommand) -> ExitCode {
    eprintln!("kioskctl device: not implemented yet");
    ExitCode::from(2)
}
