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
            // The causes, outermost first; one already quoted by the one above is left out.
            let mut message = String::new();
            for cause in e.chain().map(ToString::to_string) {
                if !message.ends_with(&cause) {
                    if !message.is_empty() {
                        message.push_str(": ");
                    }
                    message.push_str(&cause);
                }
            }
            eprintln!("wrapup: {message}");
            ExitCode::from(cli::exit_status(&e))
        }
    }
}
