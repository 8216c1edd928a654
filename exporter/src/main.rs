//! `proclens-exporter`: serves every container's metrics on `/metrics`.

use anyhow::{Context, Result};
use clap::Parser;
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{Collector, HostPaths};
use proclens_cri::Inventory;
use proclens_exporter::config::{self, Config, DEFAULT_LISTEN};
use proclens_exporter::filter::MetricFilter;
use proclens_exporter::remote_write::{self, RemoteWriteStats, Settings};
use proclens_exporter::runtime::CriLabels;
use proclens_exporter::scrape::{Exporter, LabelSource, NoRuntime};
use proclens_exporter::web::config::WebConfig;
use proclens_exporter::web::{tls, Guard};
use std::path::{Path, PathBuf};
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
    /// Web configuration file in the Prometheus exporter-toolkit's format (TLS, basic auth,
    /// headers) [default: the config file's `web_config`; without either, plain HTTP].
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Also push every container's metrics to this Prometheus remote write endpoint
    /// (`http://host:port/api/v1/write`) every interval [default: the config file's
    /// `remote_write.url`, else no push].
    #[arg(long, value_name = "URL")]
    remote_write: Option<String>,
}

/// How the routes are served, as the web configuration asks.
struct Web {
    guard: Option<Guard>,
    tls: Option<Arc<rustls::ServerConfig>>,
    http2: bool,
}

impl Web {
    /// Reads and checks the web configuration file, certificates included, so that a bad file
    /// stops the exporter at start-up rather than at the first scrape.
    fn load(path: Option<&Path>) -> Result<Web> {
        let Some(path) = path else {
            return Ok(Web {
                guard: None,
                tls: None,
                http2: false,
            });
        };
        let config = WebConfig::load(path)?;
        let tls = match &config.tls {
            Some(settings) => Some(
                tls::server_config(settings, config.http2)
                    .with_context(|| format!("web config {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Web {
            guard: Some(Guard::new(&config)),
            tls,
            http2: config.http2,
        })
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let web = Web::load(
        args.web_config_file
            .as_deref()
            .or(config.web_config.as_deref()),
    )?;
    let files = FileCache::for_rounds(open_files(config.open_files));
    let collector = Collector::discover(HostPaths::default(), files)
        .context("cannot find the host's cgroups")?;
    let filter = MetricFilter::new(config.metrics.allow.clone(), config.metrics.deny.clone());
    let push = config
        .remote_write
        .settings(args.remote_write.as_deref(), &config::hostname())
        .map_err(anyhow::Error::msg)
        .context("bad remote write settings")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("cannot start the async runtime")?;
    let labels: Arc<dyn LabelSource> = if config.cri.endpoint.as_os_str().is_empty() {
        Arc::new(NoRuntime)
    } else {
        let _entered = runtime.enter();
        let inventory = Inventory::start(&config.cri.endpoint, config.cri.refresh)
            .context("cannot start the CRI label inventory")?;
        Arc::new(CriLabels::new(inventory))
    };
    let exporter = Exporter::new(collector, config.discovery.discovery(), &filter, labels)
        .with_threads(config.threads.unwrap_or(0))
        .with_fused_stats(config.fused.stats_file());
    let (exporter, push) = match push {
        Some(settings) => {
            let stats = Arc::new(RemoteWriteStats::default());
            let exporter = exporter.with_remote_write_stats(stats.clone());
            (exporter, Some((settings, stats)))
        }
        None => (exporter, None),
    };
    let exporter = Arc::new(exporter);
    runtime.block_on(serve(exporter, listen, web, push))
}

/// Descriptors to keep for cgroup files ([`config::descriptor_budget`]), after raising the
/// open-file limit to its hard maximum.
fn open_files(configured: Option<usize>) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return configured.unwrap_or(0);
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            raised.rlim_cur
        } else {
            limit.rlim_cur
        }
    };
    let budget = config::descriptor_budget(configured, soft);
    if budget.over_limit {
        tracing::warn!(
            open_files = budget.keep,
            nofile = soft,
            "open_files leaves less than an eighth of the open-file limit for sockets and \
             fresh opens: scrapes may fail with EMFILE"
        );
    }
    budget.keep
}

async fn serve(
    exporter: Arc<Exporter>,
    listen: String,
    web: Web,
    push: Option<(Settings, Arc<RemoteWriteStats>)>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("listener has no address")?;
    tracing::info!(
        %address,
        tls = web.tls.is_some(),
        basic_auth = web.guard.as_ref().is_some_and(Guard::requires_auth),
        "serving /metrics"
    );
    // Ready once the socket accepts; a failure to notify (no systemd) is not an error.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if let Some((settings, stats)) = push {
        tokio::spawn(remote_write::run(exporter.clone(), settings, stats));
    }
    let mut app = proclens_exporter::server::router(exporter);
    if let Some(guard) = web.guard {
        app = guard.protect(app);
    }
    match web.tls {
        Some(config) => tls::serve(listener, config, app, web.http2, shutdown_signal()).await,
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("server failed")?,
    }
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
