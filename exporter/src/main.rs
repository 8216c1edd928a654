//! `proclens-exporter`: serves every container's metrics on `/metrics`.

use anyhow::{Context, Result};
use clap::Parser;
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{Collector, HostPaths};
use proclens_exporter::config::{self, Config, DEFAULT_LISTEN, DEFAULT_OPEN_FILES};
use proclens_exporter::filter::MetricFilter;
use proclens_exporter::remote_write::{self, RemoteWriteStats, Settings};
use proclens_exporter::scrape::{Exporter, NoRuntime};
use std::path::PathBuf;
use std::sync::Arc;

/// Prometheus metrics for every container on this host, read from cgroups at scrape time.
#[derive(Debug, Parser)]
#[command(name = "proclens-exporter", version)]
struct Args {
    /// Address to serve /metrics and /healthz on [default: 0.0.0.0:9639, or the config file's
    /// `listen`].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Configuration file (TOML); without it every default applies.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also push every container's metrics to this Prometheus remote write endpoint
    /// (`http://host:port/api/v1/write`) every interval [default: the config file's
    /// `remote_write.url`, else no push].
    #[arg(long, value_name = "URL")]
    remote_write: Option<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let listen = args
        .listen
        .clone()
        .or_else(|| config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let files = FileCache::new(config.open_files.unwrap_or(DEFAULT_OPEN_FILES));
    let collector = Collector::discover(HostPaths::default(), files)
        .context("cannot find the host's cgroups")?;
    let filter = MetricFilter::new(config.metrics.allow.clone(), config.metrics.deny.clone());
    let push = config
        .remote_write
        .settings(args.remote_write.as_deref(), &config::hostname())
        .map_err(anyhow::Error::msg)
        .context("bad remote write settings")?;
    let exporter = Exporter::new(
        collector,
        config.discovery.discovery(),
        &filter,
        Arc::new(NoRuntime),
    );
    let (exporter, push) = match push {
        Some(settings) => {
            let stats = Arc::new(RemoteWriteStats::default());
            let exporter = exporter.with_remote_write_stats(stats.clone());
            (exporter, Some((settings, stats)))
        }
        None => (exporter, None),
    };
    let exporter = Arc::new(exporter);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(exporter, listen, push))
}

async fn serve(
    exporter: Arc<Exporter>,
    listen: String,
    push: Option<(Settings, Arc<RemoteWriteStats>)>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("listener has no address")?;
    tracing::info!(%address, "serving /metrics");
    // Ready once the socket accepts; a failure to notify (no systemd) is not an error.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if let Some((settings, stats)) = push {
        tokio::spawn(remote_write::run(exporter.clone(), settings, stats));
    }
    let app = proclens_exporter::server::router(exporter);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
