//! [`PrometheusServer`]: a real Prometheus (Debian's 2.42 package) that scrapes the targets a
//! test gives it, optionally evaluates alerting rules and receives remote_write, and answers
//! PromQL through its HTTP API; and [`ExporterDaemon`], a running `proclens-exporter`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::process::{self, Captured};
use super::{find_binary, poll};

/// How long Prometheus or the exporter may take from spawn to ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child may take to exit after SIGTERM before it gets SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1 (bound and released: the child binds it next).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// What an HTTP GET answered.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The `Content-Encoding` header ("" when none); a gzip body is decoded here.
    pub content_encoding: String,
    /// The body.
    pub body: String,
}

/// An HTTP GET of `url` with `headers`; any status is an answer, only a failure to talk is an
/// error.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => return Err(e).with_context(|| format!("GET {url}")),
    };
    let header = |name: &str| response.header(name).unwrap_or_default().to_string();
    let (status, content_type, content_encoding) = (
        response.status(),
        header("Content-Type"),
        header("Content-Encoding"),
    );
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut raw)
        .context("read the response body")?;
    if content_encoding == "gzip" {
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut decoded)
            .context("gunzip the response body")?;
        raw = decoded;
    }
    let body = String::from_utf8(raw).context("response body is not UTF-8")?;
    Ok(HttpResponse {
        status,
        content_type,
        content_encoding,
        body,
    })
}

/// One element of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label names and values (`__name__` included when the series has one).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, "" when absent (as PromQL treats it).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A running Prometheus with its own configuration and storage in a temporary directory.
pub struct PrometheusServer {
    child: Child,
    port: u16,
    stderr: Captured,
    _dir: TempDir,
}

/// What a [`PrometheusServer`] does besides answering queries.
#[derive(Debug, Clone, Default)]
pub struct PrometheusOptions {
    /// `host:port` targets of one scrape job named `proclens`.
    pub targets: Vec<String>,
    /// Scrape and rule evaluation interval.
    pub interval: Duration,
    /// Text of a rule file (groups of alerting or recording rules), if any.
    pub rules: Option<String>,
    /// Accept remote_write at `/api/v1/write`.
    pub remote_write_receiver: bool,
}

impl PrometheusServer {
    /// Starts Prometheus and waits until `/-/ready` answers 200.
    pub fn start(options: &PrometheusOptions) -> Result<Self> {
        let binary = find_binary("PROCLENS_PROMETHEUS_BIN", "prometheus")
            .or_else(|_| which("prometheus"))?;
        let dir = tempfile::Builder::new()
            .prefix("proclens-prometheus-")
            .tempdir()
            .context("create Prometheus's directory")?;
        let interval = format!("{}ms", options.interval.as_millis().max(100));
        let mut config =
            format!("global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n");
        if let Some(rules) = &options.rules {
            std::fs::write(dir.path().join("rules.yml"), rules).context("write rules.yml")?;
            config.push_str("rule_files:\n  - rules.yml\n");
        }
        if !options.targets.is_empty() {
            config.push_str(
                "scrape_configs:\n  - job_name: proclens\n    static_configs:\n      - targets:\n",
            );
            for target in &options.targets {
                config.push_str(&format!("          - '{target}'\n"));
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).context("write prometheus.yml")?;
        let port = free_port()?;
        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if options.remote_write_receiver {
            cmd.arg("--web.enable-remote-write-receiver");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let (stderr, _) = Captured::drain(child.stderr.take().context("no stderr pipe")?);
        let mut server = PrometheusServer {
            child,
            port,
            stderr,
            _dir: dir,
        };
        let url = format!("{}/-/ready", server.url());
        poll(READY_TIMEOUT, "Prometheus to become ready", || {
            if let Some(status) = server.child.try_wait()? {
                bail!("Prometheus exited with {status}: {}", server.stderr.text());
            }
            Ok(http_get(&url, &[])
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Prometheus wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// Evaluates a PromQL expression now; Prometheus's JSON answer, whatever its type (for
    /// failure messages: a range selector shows the raw samples behind a rate).
    pub fn query_raw(&self, expr: &str) -> Result<String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let response = agent
            .get(&format!("{}/api/v1/query", self.url()))
            .query("query", expr)
            .call();
        match response {
            Ok(r) => Ok(r.into_string()?),
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "query {expr:?}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => Err(e).with_context(|| format!("query {expr:?}")),
        }
    }

    /// Evaluates a PromQL expression now; an instant vector's samples.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        let body = self.query_raw(expr)?;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("query answer {body:?}"))?;
        if json["status"] != "success" {
            bail!("query {expr:?} failed: {body}");
        }
        let result = json["data"]["result"]
            .as_array()
            .with_context(|| format!("query {expr:?}: not a vector: {body}"))?;
        result
            .iter()
            .map(|element| {
                let labels = element["metric"]
                    .as_object()
                    .context("sample without labels")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = element["value"][1]
                    .as_str()
                    .context("sample without value")?
                    .parse::<f64>()
                    .context("sample value")?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Polls `expr` every 10 ms until `accept` holds for its result, or fails after `timeout`
    /// with the last result and Prometheus's log.
    pub fn wait_for(
        &self,
        expr: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>> {
        let mut last = Vec::new();
        let found = poll(timeout, &format!("PromQL {expr:?}"), || {
            last = self.query(expr)?;
            Ok(accept(&last).then(|| last.clone()))
        });
        found.with_context(|| format!("last result {last:?}; Prometheus log: {}", self.log()))
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        process::terminate(&mut self.child, "prometheus", EXIT_TIMEOUT);
    }
}

/// A binary on `PATH`.
fn which(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH (apt-get install prometheus)"))
}

/// A running `proclens-exporter --listen 127.0.0.1:<free port> [--config FILE] [args]`.
pub struct ExporterDaemon {
    child: Child,
    port: u16,
    stderr: Captured,
}

impl ExporterDaemon {
    /// Starts the exporter (env `PROCLENS_EXPORTER_BIN` or the built binary) and waits until
    /// `/healthz` answers.
    pub fn start(config: Option<&Path>, args: &[&str]) -> Result<Self> {
        let binary = find_binary("PROCLENS_EXPORTER_BIN", "proclens-exporter")?;
        let port = free_port()?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let (stderr, _) = Captured::drain(child.stderr.take().context("no stderr pipe")?);
        let mut daemon = ExporterDaemon {
            child,
            port,
            stderr,
        };
        let url = format!("{}/healthz", daemon.url());
        poll(
            READY_TIMEOUT,
            "proclens-exporter to answer /healthz",
            || {
                if let Some(status) = daemon.child.try_wait()? {
                    bail!(
                        "proclens-exporter exited with {status}: {}",
                        daemon.stderr.text()
                    );
                }
                Ok(http_get(&url, &[])
                    .is_ok_and(|r| r.status == 200)
                    .then_some(()))
            },
        )?;
        Ok(daemon)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, as a scrape target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One scrape of `/metrics` in the 0.0.4 text format.
    pub fn scrape(&self) -> Result<String> {
        let response = http_get(&format!("{}/metrics", self.url()), &[])?;
        if response.status != 200 {
            bail!("/metrics answered {}: {}", response.status, response.body);
        }
        Ok(response.body)
    }

    /// What the exporter logged so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// The exporter's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ExporterDaemon {
    fn drop(&mut self) {
        process::terminate(&mut self.child, "proclens-exporter", EXIT_TIMEOUT);
    }
}
