//! The `fastgen` command: argument parsing lives in `cli`, one file per subcommand; this file
//! only dispatches and turns errors into one line and a non-zero exit.

mod cli;
#[cfg(feature = "server")]
mod server;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::dispatch(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
