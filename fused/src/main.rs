//! proclens-fused: mounts the proclens filesystem and serves it until SIGTERM/SIGINT.
//!
//! One binary, two roles: started plainly it is the supervisor ([`supervisor`]), which mounts and
//! keeps a serving worker running; started by the supervisor (fds named in the environment) it is
//! that worker ([`worker`]).
//!
//! Exit codes: 0 after a clean unmount on SIGTERM/SIGINT; 1 on any startup or serving error (one
//! line on stderr); 2 for bad command-line usage (clap).

use clap::Parser;
use std::process::ExitCode;

mod caller;
mod config;
mod error;
mod fs;
mod fuse;
mod recent;
mod render;
mod resident;
mod sampler;
mod shared;
mod shm;
mod signals;
mod state;
mod stats;
mod subtree;
mod supervisor;
mod worker;

fn main() -> ExitCode {
    let args = match config::Args::try_parse() {
        Ok(args) => args,
        Err(err) => return usage_error(&err),
    };
    init_logging(args.log_level.as_deref());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proclens-fused: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// --help and --version print in full and exit 0; any other usage error is one line and exit 2.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("proclens-fused: {first} (see --help)");
    ExitCode::from(2)
}

fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::new(level),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn run(args: config::Args) -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let config = args.into_config()?;
    match worker::inherited()? {
        Some(inherited) => worker::run(&config, inherited),
        None => supervisor::run(config, argv),
    }
}
