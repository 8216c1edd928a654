//! [`PrometheusServer`]: a real Prometheus (Debian's 2.42 package) that scrapes the targets a
//! test gives it, optionally evaluates alerting rules and receives remote_write, and answers
//! PromQL through its HTTP API; and [`ExporterDaemon`], a running `proclens-exporter`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
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
    /// Every header, by lowercase name (the last value of a repeated one).
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

/// An HTTP GET of `url` with `headers`; any status is an answer, only a failure to talk is an
/// error.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    get_with(&agent, url, headers)
}

/// An HTTPS GET of `url` trusting only the CA certificates in `ca_pem`; otherwise as
/// [`http_get`].
pub fn https_get(url: &str, headers: &[(&str, &str)], ca_pem: &str) -> Result<HttpResponse> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("parse the CA's PEM")?)
            .context("trust the CA")?;
    }
    // ring, as the exporter and ureq use (deprecated in rustls 0.23.48 only for lacking
    // post-quantum key exchange, which these tests do not need).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .tls_config(Arc::new(config))
        .build();
    get_with(&agent, url, headers)
}

/// The `Authorization` header value of basic auth with `user` and `password`.
pub fn basic_auth_header(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn get_with(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => return Err(e).with_context(|| format!("GET {url}")),
    };
    let header = |name: &str| response.header(name).unwrap_or_default().to_string();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|name| (name.to_ascii_lowercase(), header(&name)))
        .collect();
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
        headers,
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
    /// The scrape job's `scheme` (Prometheus's default, `http`, when `None`).
    pub scheme: Option<String>,
    /// The scrape job's `tls_config.ca_file`: the CA that signed the targets' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// The scrape job's `basic_auth` user and password.
    pub basic_auth: Option<(String, String)>,
}

/// A YAML single-quoted scalar.
fn yaml_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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
            config.push_str("scrape_configs:\n  - job_name: proclens\n");
            if let Some(scheme) = &options.scheme {
                config.push_str(&format!("    scheme: {}\n", yaml_quote(scheme)));
            }
            if let Some(ca) = &options.tls_ca_file {
                let ca = yaml_quote(&ca.display().to_string());
                config.push_str(&format!("    tls_config:\n      ca_file: {ca}\n"));
            }
            if let Some((user, password)) = &options.basic_auth {
                config.push_str(&format!(
                    "    basic_auth:\n      username: {}\n      password: {}\n",
                    yaml_quote(user),
                    yaml_quote(password)
                ));
            }
            config.push_str("    static_configs:\n      - targets:\n");
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

/// How the rig reaches an exporter started with a web config: the CA it trusts (HTTPS when
/// set) and the basic-auth credentials it sends.
#[derive(Debug, Clone, Default)]
pub struct WebAccess {
    /// PEM of the CA that signed the exporter's certificate; `None`: plain HTTP.
    pub ca_pem: Option<String>,
    /// User and password sent with every request.
    pub basic_auth: Option<(String, String)>,
}

/// A running `proclens-exporter --listen 127.0.0.1:<free port> [--config FILE] [args]`.
pub struct ExporterDaemon {
    child: Child,
    port: u16,
    stderr: Captured,
    access: WebAccess,
    _config_dir: Option<TempDir>,
}

impl ExporterDaemon {
    /// Starts the exporter (env `PROCLENS_EXPORTER_BIN` or the built binary) and waits until
    /// `/healthz` answers.
    pub fn start(config: Option<&Path>, args: &[&str]) -> Result<Self> {
        ExporterDaemon::start_with_access(config, args, WebAccess::default())
    }

    /// Starts the exporter looking for containers only below `roots` (cgroup paths, e.g. a test's
    /// own cgroups), so what else runs on the host (a benchmark's 5,000 cgroups, say) cannot
    /// slow its scrapes.
    pub fn start_over(roots: &[String], args: &[&str]) -> Result<Self> {
        let quoted: Vec<String> = roots.iter().map(|r| format!("{r:?}")).collect();
        ExporterDaemon::start_with_config(
            &format!("[discovery]\nroots = [{}]\n", quoted.join(", ")),
            args,
        )
    }

    /// Starts the exporter with `config` (TOML text) as its `--config` file, kept in a
    /// temporary directory as long as the daemon lives.
    pub fn start_with_config(config: &str, args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("proclens-exporter-config-")
            .tempdir()
            .context("create the exporter's config directory")?;
        let path = dir.path().join("exporter.toml");
        std::fs::write(&path, config).context("write the exporter's config")?;
        let mut daemon = ExporterDaemon::start(Some(&path), args)?;
        daemon._config_dir = Some(dir);
        Ok(daemon)
    }

    /// As [`ExporterDaemon::start`], for an exporter whose web config (in `config` or `args`)
    /// asks for TLS or basic auth: the rig's own requests go through `access`.
    pub fn start_with_access(
        config: Option<&Path>,
        args: &[&str],
        access: WebAccess,
    ) -> Result<Self> {
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
        let (stderr, drain) = Captured::drain(child.stderr.take().context("no stderr pipe")?);
        let mut drain = Some(drain);
        let mut daemon = ExporterDaemon {
            child,
            port,
            stderr,
            access,
            _config_dir: None,
        };
        poll(
            READY_TIMEOUT,
            "proclens-exporter to answer /healthz",
            || {
                if let Some(status) = daemon.child.try_wait()? {
                    // Everything it wrote before exiting, not what the drain had read so far.
                    if let Some(drain) = drain.take() {
                        let _ = drain.join();
                    }
                    bail!(
                        "proclens-exporter exited with {status}: {}",
                        daemon.stderr.text()
                    );
                }
                Ok(daemon
                    .get("/healthz", &[])
                    .is_ok_and(|r| r.status == 200)
                    .then_some(()))
            },
        )?;
        Ok(daemon)
    }

    /// `http://127.0.0.1:<port>`, or `https://` when the rig reaches it over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.access.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A GET of `path` with `headers`, over TLS and with credentials as the [`WebAccess`] says.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
        let url = format!("{}{path}", self.url());
        let authorization = self
            .access
            .basic_auth
            .as_ref()
            .map(|(user, password)| basic_auth_header(user, password));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(value) = &authorization {
            all.push(("Authorization", value));
        }
        match &self.access.ca_pem {
            Some(ca) => https_get(&url, &all, ca),
            None => http_get(&url, &all),
        }
    }

    /// `127.0.0.1:<port>`, as a scrape target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One scrape of `/metrics` in the 0.0.4 text format.
    pub fn scrape(&self) -> Result<String> {
        let response = self.get("/metrics", &[])?;
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
