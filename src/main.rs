//! `adminduk`: the one binary. It parses the command line and runs it; the
//! commands live in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    match adminduk::run(adminduk::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("adminduk: {err:#}");
            ExitCode::FAILURE
        }
    }
}
