//! `mxrack`: the one binary of the appliance. `mxrack run` is the supervisor
//! of every service; the other subcommands administer the data folder, either
//! through the running server's admin socket or, when none runs, directly.

mod admin;
mod cli;
mod demo;
mod filter_cli;
mod health_cli;
mod logs_cli;
mod replica_cli;
mod supervisor;
mod update_cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Everything this binary creates (the store, message files, keys, the
    // admin socket) is private to the service's user: folders 0700, files
    // 0600 (see mxrack_net::perms).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = cli::Cli::parse();
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mxrack: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
