//! proclens-exporter behind a web config file (`--web.config.file`, the exporter-toolkit's
//! format): HTTPS with a CA made at test time, basic auth, extra headers, a bad file refused at
//! start-up, and a real Prometheus scraping through TLS and basic auth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use proclens_tests::rig::prometheus::{basic_auth_header, http_get, https_get};
use proclens_tests::rig::{
    self, ExporterDaemon, PrometheusOptions, PrometheusServer, TempCgroup, TestPki, WebAccess,
};
use tempfile::TempDir;

/// How long Prometheus may take to scrape the exporter successfully (every second).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(120);

/// A bcrypt hash of `password` at cost 4, the lowest: the exporter under test is a debug build,
/// where the usual cost of 10 takes seconds per check.
fn hash(password: &str) -> Result<String> {
    bcrypt::hash(password, 4).context("bcrypt")
}

/// Writes `text` to `dir/name`.
fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn temp_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("proclens-web-")
        .tempdir()
        .context("create a temporary directory")
}

/// Fails unless `text` is a scrape of the exporter (its own counter is always there).
fn assert_scraped(text: &str) {
    assert!(
        text.contains("# TYPE proclens_exporter_scrapes_total counter"),
        "not a scrape: {}",
        text.get(..text.len().min(500)).unwrap_or(text)
    );
}

/// An exporter config file (TOML) at `dir/exporter.toml`: `top` (top-level keys), then discovery
/// limited to `cg`, so the test does not depend on how many cgroups other tests have made.
fn exporter_config(dir: &Path, cg: &TempCgroup, top: &str) -> Result<PathBuf> {
    write(
        dir,
        "exporter.toml",
        &format!("{top}[discovery]\nroots = [\"/{}\"]\n", cg.name()),
    )
}

fn path_arg(path: &Path) -> Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

#[test]
fn https_with_the_trusted_ca_only() -> Result<()> {
    rig::preflight()?;
    let dir = temp_dir()?;
    let pki = TestPki::generate(dir.path(), "server")?;
    let other = TestPki::generate(dir.path(), "other")?;
    // Relative names: resolved against the web config's directory, as the toolkit does.
    let web = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: server-cert.pem\n  key_file: server-key.pem\n",
    )?;
    // The config file names a web config that does not exist: the command line wins.
    let cg = TempCgroup::builder().create()?;
    let config = exporter_config(dir.path(), &cg, "web_config = \"/nonexistent/web.yml\"\n")?;
    let exporter = ExporterDaemon::start_with_access(
        Some(&config),
        &["--web.config.file", path_arg(&web)?],
        WebAccess {
            ca_pem: Some(pki.ca_pem.clone()),
            basic_auth: None,
        },
    )?;
    assert!(exporter.url().starts_with("https://"));
    let text = exporter.scrape()?;
    assert_scraped(&text);

    let plain = http_get(&format!("http://{}/healthz", exporter.target()), &[]);
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP to the TLS port answered: {plain:?}"
    );
    let untrusted = https_get(&format!("{}/healthz", exporter.url()), &[], &other.ca_pem);
    assert!(
        untrusted.is_err(),
        "a client trusting another CA got an answer: {untrusted:?}"
    );
    Ok(())
}

#[test]
fn basic_auth_from_the_config_file() -> Result<()> {
    rig::preflight()?;
    let dir = temp_dir()?;
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  alice: '{}'\n  bob: '{}'\n",
            hash("alice's password")?,
            hash("bob's password")?
        ),
    )?;
    let cg = TempCgroup::builder().create()?;
    let config = exporter_config(
        dir.path(),
        &cg,
        &format!("web_config = {:?}\n", path_arg(&web)?),
    )?;
    let exporter = ExporterDaemon::start_with_access(
        Some(&config),
        &[],
        WebAccess {
            ca_pem: None,
            basic_auth: Some(("alice".into(), "alice's password".into())),
        },
    )?;
    let url = format!("{}/metrics", exporter.url());
    for (what, headers) in [
        ("no credentials", vec![]),
        (
            "a wrong password",
            vec![basic_auth_header("alice", "bob's password")],
        ),
        (
            "an unknown user",
            vec![basic_auth_header("mallory", "alice's password")],
        ),
        ("not basic auth", vec!["Bearer abc".to_string()]),
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|value| ("Authorization", value.as_str()))
            .collect();
        let response = http_get(&url, &headers)?;
        assert_eq!(response.status, 401, "{what}: {response:?}");
        assert_eq!(
            response.headers.get("www-authenticate").map(String::as_str),
            Some("Basic"),
            "{what}: {response:?}"
        );
        assert_eq!(
            response
                .headers
                .get("x-content-type-options")
                .map(String::as_str),
            Some("nosniff")
        );
    }
    // Right twice (the second from the cache), and for the other user too.
    for _ in 0..2 {
        let text = exporter.scrape()?;
        assert_scraped(&text);
    }
    let bob = basic_auth_header("bob", "bob's password");
    let response = http_get(&url, &[("Authorization", &bob)])?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response
            .headers
            .get("x-content-type-options")
            .map(String::as_str),
        Some("nosniff")
    );
    // Every route is protected, /healthz included, as with the exporter-toolkit.
    let health = http_get(&format!("{}/healthz", exporter.url()), &[])?;
    assert_eq!(health.status, 401);
    Ok(())
}

#[test]
fn bad_web_config_stops_the_exporter_with_the_key_named() -> Result<()> {
    rig::preflight()?;
    let dir = temp_dir()?;
    for (text, wanted) in [
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_fille: b.pem\n",
            "unknown field `key_fille`",
        ),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: b.pem\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites: valid in the exporter-toolkit's format but not supported",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: b.pem\n",
            "tls_server_config.cert_file",
        ),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice: not a bcrypt hash"),
    ] {
        let web = write(dir.path(), "web.yml", text)?;
        let started = ExporterDaemon::start(None, &["--web.config.file", path_arg(&web)?]);
        let err = match started {
            Ok(_) => anyhow::bail!("the exporter started with {text:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(wanted), "{text:?}: {err}");
    }
    Ok(())
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() -> Result<()> {
    rig::preflight()?;
    let dir = temp_dir()?;
    let pki = TestPki::generate(dir.path(), "server")?;
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\n  min_version: TLS12\n\
             basic_auth_users:\n  prometheus: '{}'\n",
            path_arg(&pki.cert_file)?,
            path_arg(&pki.key_file)?,
            hash("scrape secret")?
        ),
    )?;
    let credentials = ("prometheus".to_string(), "scrape secret".to_string());
    let cg = TempCgroup::builder().create()?;
    let config = exporter_config(dir.path(), &cg, "")?;
    let exporter = ExporterDaemon::start_with_access(
        Some(&config),
        &["--web.config.file", path_arg(&web)?],
        WebAccess {
            ca_pem: Some(pki.ca_pem.clone()),
            basic_auth: Some(credentials.clone()),
        },
    )?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: Duration::from_secs(1),
        scheme: Some("https".into()),
        tls_ca_file: Some(pki.ca_file.clone()),
        basic_auth: Some(credentials),
        ..PrometheusOptions::default()
    })?;
    prometheus
        .wait_for("up{job=\"proclens\"} == 1", PROMETHEUS_TIMEOUT, |s| {
            !s.is_empty()
        })
        .with_context(|| format!("exporter log: {}", exporter.log()))?;
    prometheus.wait_for(
        "proclens_exporter_scrapes_total{job=\"proclens\"} > 0",
        PROMETHEUS_TIMEOUT,
        |s| !s.is_empty(),
    )?;
    Ok(())
}
