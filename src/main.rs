//! The `wrapup` command: the server, and the tools an integrator uses to try it.

// mimalloc: glibc malloc/free were ~20 % of all instructions per request (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    wrapup::install_tls_provider();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wrapup: {e:#}");
            ExitCode::from(2)
        }
    }
}
