//! proclens-fused: mounts the proclens filesystem and serves it until SIGTERM/SIGINT.
//!
//! Exit codes: 0 after a clean unmount on SIGTERM/SIGINT; 1 on any startup or serving error (one
//! line on stderr); 2 for bad command-line usage (clap).

use anyhow::Context;
use clap::Parser;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;

mod caller;
mod config;
mod fs;
mod fuse;
mod render;
mod state;

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

/// Signals that stop the daemon, blocked in every thread and taken by the main thread.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn run(args: config::Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let signals = stop_signals();
    // SAFETY: blocking signals for this thread; threads spawned later inherit the mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "cannot block signals");

    let reader = proclens_cgroup::CgroupReader::discover(config.host.clone())
        .context("discovering cgroup hierarchies")?;
    for h in &reader.layout().hierarchies {
        tracing::info!(version = ?h.version, controllers = %h.controllers.join(","),
            mount = %h.mount_point.display(), "cgroup hierarchy");
    }
    let with_pressure = reader
        .layout()
        .hierarchy_for(proclens_cgroup::Controller::Memory)
        .and_then(|i| reader.layout().version(i))
        == Some(proclens_cgroup::Version::V2);
    let filesystem = Arc::new(fs::ProcFs::new(
        render::Renderer::new(reader, config.cpu_view),
        with_pressure,
    ));

    fuse::mount::prepare_mountpoint(&config.mountpoint)?;
    let connection = fuse::mount::mount(&config.mountpoint)?;
    tracing::info!(mountpoint = %config.mountpoint.display(), threads = config.threads,
        cpu_view = ?config.cpu_view, "mounted");

    for index in 0..config.threads {
        let fd = match fuse::session::clone_fd(connection.as_fd()) {
            Ok(fd) => fd,
            Err(err) => {
                tracing::warn!(%err, "FUSE_DEV_IOC_CLONE failed; sharing the connection fd");
                connection.try_clone().context("duplicating the FUSE fd")?
            }
        };
        let filesystem = Arc::clone(&filesystem);
        std::thread::Builder::new()
            .name(format!("fuse-{index}"))
            .spawn(
                move || match fuse::session::serve(fd.as_fd(), filesystem.as_ref()) {
                    Ok(_) => tracing::debug!("serving loop ended: unmounted"),
                    Err(err) => tracing::error!(%err, "serving loop failed"),
                },
            )
            .context("spawning a serving thread")?;
    }

    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%err, "cannot notify systemd");
    }

    let mut signal: libc::c_int = 0;
    // SAFETY: waiting on a set of signals blocked in every thread.
    let rc = unsafe { libc::sigwait(&signals, &mut signal) };
    anyhow::ensure!(rc == 0, "sigwait failed");
    tracing::info!(signal, "stopping: unmounting");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    fuse::mount::unmount(&config.mountpoint)
        .with_context(|| format!("unmounting {}", config.mountpoint.display()))?;
    // Closing the connection (process exit) ends the serving threads and any bind mounts' access.
    drop(connection);
    Ok(())
}
