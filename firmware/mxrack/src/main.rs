//! `mxrack`: the one binary of the appliance. `mxrack run` is the supervisor
//! of every service; the other subcommands administer the data folder, either
//! through the running server's admin socket or, when none runs, directly.

mod admin;
mod cli;
mod demo;
mod filter_cli;
mod health_cli;
mod supervisor;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mxrack: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
