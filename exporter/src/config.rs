//! The exporter's configuration file (TOML). Every field is optional; unknown fields are an
//! error naming the line, so a typo never silently falls back to a default.

use crate::remote_write::{self, Settings};
use proclens_cgroup::Discovery;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the exporter listens when neither `--listen` nor the file says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9639";

/// Descriptors of cgroup files kept open between scrapes when the file does not say: enough
/// for ~1,000 containers' files (each re-read with one pread instead of open+read+close).
pub const DEFAULT_OPEN_FILES: usize = 20_000;

/// How many cgroup-file descriptors to keep, and whether that leaves too little room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// Descriptors the collector keeps between scrapes.
    pub keep: usize,
    /// Whether a configured number leaves less than the reserve for sockets and fresh opens.
    pub over_limit: bool,
}

/// The descriptors to keep under an open-file limit of `nofile`: `configured` if set, else
/// [`DEFAULT_OPEN_FILES`] capped at the limit less a reserve of an eighth of it (at least
/// 1,024) for sockets, the CRI and remote write connections and the files opened fresh each
/// scrape (`cgroup.procs`, network counters, files beyond the kept ones).
pub fn descriptor_budget(configured: Option<usize>, nofile: u64) -> DescriptorBudget {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let room = nofile.saturating_sub((nofile / 8).max(1024));
    match configured {
        Some(keep) => DescriptorBudget {
            keep,
            over_limit: keep > room,
        },
        None => DescriptorBudget {
            keep: DEFAULT_OPEN_FILES.min(room),
            over_limit: false,
        },
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` to serve /metrics on (`--listen` wins).
    pub listen: Option<String>,
    /// Descriptors of cgroup files kept open (0: open every file for every read; absent:
    /// [`descriptor_budget`]'s default). Each costs the kernel a seq_file buffer (~4.5 KiB).
    pub open_files: Option<usize>,
    /// Threads a collection reads on (0 or absent: one per CPU).
    pub threads: Option<usize>,
    /// Web configuration file (exporter-toolkit format: TLS, basic auth, headers);
    /// `--web.config.file` wins. A relative path is taken from the working directory.
    pub web_config: Option<PathBuf>,
    /// Where to look for containers.
    pub discovery: DiscoveryConfig,
    /// Which families to write.
    pub metrics: MetricsConfig,
    /// Where and how to push (remote write), if anywhere.
    pub remote_write: RemoteWriteConfig,
    /// Where container labels come from (containerd's CRI).
    pub cri: CriConfig,
    /// Where proclens-fused publishes its own numbers.
    pub fused: FusedConfig,
}

/// Where proclens-fused writes its stats file when neither says otherwise (its `--stats-file`).
pub const DEFAULT_FUSED_STATS_FILE: &str = "/run/proclens/fused.stats";

/// `[fused]`: proclens-fused's own numbers (reads, errors, read latency per file, worker
/// restarts), read from the file it rewrites every few seconds and copied into every scrape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusedConfig {
    /// fused's `--stats-file` (`""` turns the fused families off).
    pub stats_file: PathBuf,
}

impl Default for FusedConfig {
    fn default() -> Self {
        FusedConfig {
            stats_file: PathBuf::from(DEFAULT_FUSED_STATS_FILE),
        }
    }
}

impl FusedConfig {
    /// The stats file to read, if any.
    pub fn stats_file(&self) -> Option<&Path> {
        (!self.stats_file.as_os_str().is_empty()).then_some(self.stats_file.as_path())
    }
}

/// `[discovery]`: the cgroup subtrees walked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Cgroup paths whose subtrees hold containers (default: the whole host, `["/"]`).
    pub roots: Vec<String>,
    /// Levels below a root walked at most.
    pub max_depth: usize,
    /// Cgroups listed at most per scrape.
    pub max_cgroups: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        let d = Discovery::default();
        DiscoveryConfig {
            roots: d.roots,
            max_depth: d.max_depth,
            max_cgroups: d.max_cgroups,
        }
    }
}

impl DiscoveryConfig {
    /// The collector's discovery settings.
    pub fn discovery(&self) -> Discovery {
        Discovery {
            roots: self.roots.clone(),
            max_depth: self.max_depth,
            max_cgroups: self.max_cgroups,
        }
    }
}

/// `[metrics]`: allow and deny lists of family names (`*` wildcards).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Families written (empty: all).
    pub allow: Vec<String>,
    /// Families never written (wins over `allow`).
    pub deny: Vec<String>,
}

/// Collections between pushes when the file does not say.
pub const DEFAULT_REMOTE_WRITE_INTERVAL: Duration = Duration::from_secs(15);

/// Longest time one remote write attempt may take when the file does not say.
pub const DEFAULT_REMOTE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Samples the remote write queue holds at most when the file does not say: at the ~25 bytes a
/// compressed sample takes with kubelet-shaped labels, about 12 MiB.
pub const DEFAULT_QUEUE_SAMPLES: usize = 500_000;

/// Samples per remote write request at most when the file does not say.
pub const DEFAULT_BATCH_SAMPLES: usize = 5_000;

/// The `job` external label when the file does not set one.
pub const DEFAULT_JOB: &str = "proclens";

/// containerd's CRI socket when the file does not say.
pub const DEFAULT_CRI_ENDPOINT: &str = "/run/containerd/containerd.sock";

/// How often the container labels are listed again when the file does not say (a new container
/// is also looked up as soon as a scrape meets it).
pub const DEFAULT_CRI_REFRESH: Duration = Duration::from_secs(10);

/// `[cri]`: the runtime whose CRI labels (`name`, `image`, `namespace`, `pod`, `container`)
/// the series get. A socket that is absent or refuses leaves only the `id` label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// The CRI socket (`""` turns labels from CRI off).
    pub endpoint: PathBuf,
    /// Time between listings of every container (`"10s"`).
    #[serde(deserialize_with = "duration")]
    pub refresh: Duration,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            endpoint: PathBuf::from(DEFAULT_CRI_ENDPOINT),
            refresh: DEFAULT_CRI_REFRESH,
        }
    }
}

/// `[remote_write]`: the optional push (Prometheus remote write 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// The endpoint, `http://host:port/api/v1/write` (`--remote-write` wins); none: no push.
    pub url: Option<String>,
    /// Time between collections (`"15s"`, `"500ms"`, `"1m30s"`).
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Longest time one attempt (connect, send, answer) may take.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Samples queued at most while the endpoint is slow or down; past it the oldest batch is
    /// dropped (and counted). Bounds the queue's memory at about 25 bytes per sample.
    pub queue_samples: usize,
    /// Samples per request at most (a larger collection is split).
    pub batch_samples: usize,
    /// Labels added to every series that lacks them. `job` defaults to `proclens` and
    /// `instance` to the host name; an empty value removes a default.
    pub external_labels: BTreeMap<String, String>,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            url: None,
            interval: DEFAULT_REMOTE_WRITE_INTERVAL,
            timeout: DEFAULT_REMOTE_WRITE_TIMEOUT,
            queue_samples: DEFAULT_QUEUE_SAMPLES,
            batch_samples: DEFAULT_BATCH_SAMPLES,
            external_labels: BTreeMap::new(),
        }
    }
}

impl RemoteWriteConfig {
    /// The checked settings, with `cli_url` (`--remote-write`) winning over the file's `url`
    /// and `hostname` as the default `instance`; `None` when no URL is given at all.
    pub fn settings(
        &self,
        cli_url: Option<&str>,
        hostname: &str,
    ) -> Result<Option<Settings>, String> {
        self.check()?;
        let url = match (cli_url, &self.url) {
            (Some(url), _) => {
                remote_write::parse_url(url).map_err(|e| format!("--remote-write: {e}"))?
            }
            (None, Some(url)) => {
                remote_write::parse_url(url).map_err(|e| format!("remote_write.url: {e}"))?
            }
            (None, None) => return Ok(None),
        };
        let mut labels = BTreeMap::new();
        labels.insert("job".to_string(), DEFAULT_JOB.to_string());
        if !hostname.is_empty() {
            labels.insert("instance".to_string(), hostname.to_string());
        }
        labels.extend(self.external_labels.clone());
        labels.retain(|_, value| !value.is_empty());
        Ok(Some(Settings {
            url,
            interval: self.interval,
            timeout: self.timeout,
            queue_samples: self.queue_samples,
            batch_samples: self.batch_samples,
            external_labels: labels.into_iter().collect(),
        }))
    }

    /// Checks what the types cannot: durations, sizes and label names.
    pub fn check(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(10) {
            return Err(format!(
                "remote_write.interval: {:?} is too short (10ms at least)",
                self.interval
            ));
        }
        if self.timeout.is_zero() {
            return Err("remote_write.timeout: must be longer than zero".into());
        }
        if self.batch_samples == 0 {
            return Err("remote_write.batch_samples: must be at least 1".into());
        }
        if self.queue_samples < self.batch_samples {
            return Err(format!(
                "remote_write.queue_samples: {} is less than batch_samples ({}): no batch would fit",
                self.queue_samples, self.batch_samples
            ));
        }
        if let Some(url) = &self.url {
            remote_write::parse_url(url).map_err(|e| format!("remote_write.url: {e}"))?;
        }
        for name in self.external_labels.keys() {
            if !is_label_name(name) || name.starts_with("__") {
                return Err(format!(
                    "remote_write.external_labels: {name:?} is not a label name \
                     ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` is a Prometheus label name.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a duration like Prometheus's: one or more `<integer><unit>`, units `ms`, `s`, `m`,
/// `h` (`"15s"`, `"1m30s"`, `"250ms"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like \"15s\", \"500ms\" or \"1m30s\")");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest
            .get(..digits)
            .unwrap_or("")
            .parse()
            .map_err(|_| bad())?;
        rest = rest.get(digits..).unwrap_or("");
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_len);
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    Ok(total)
}

/// serde: a duration field as a [`parse_duration`] string.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// The host's name (`instance`'s default), "" when unreadable.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid (the message names the line and field).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
}

impl Config {
    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        let config: Config = toml::from_str(text)?;
        Ok(config)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| ConfigError::Invalid {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: shown,
            message,
        })?;
        Ok(config)
    }

    /// Checks values the types cannot: roots are absolute cgroup paths, remote write's values
    /// are usable.
    pub fn check(&self) -> Result<(), String> {
        for root in &self.discovery.roots {
            if !root.starts_with('/') {
                return Err(format!(
                    "discovery.roots: {root:?} is not an absolute cgroup path (it must start with '/')"
                ));
            }
        }
        if self.discovery.roots.is_empty() {
            return Err("discovery.roots: empty, no container would ever be found".into());
        }
        self.remote_write.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_every_default() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.discovery.discovery(), Discovery::default());
    }

    #[test]
    fn full_file() {
        let config = Config::parse(
            "listen = \"127.0.0.1:1234\"\nopen_files = 0\nweb_config = \"/etc/web.yml\"\n[discovery]\nroots = [\"/kubepods\"]\nmax_depth = 3\n\
             [metrics]\ndeny = [\"container_network_*\"]\n",
        )
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("127.0.0.1:1234"));
        assert_eq!(config.open_files, Some(0));
        assert_eq!(config.web_config, Some(PathBuf::from("/etc/web.yml")));
        assert_eq!(config.discovery.roots, ["/kubepods"]);
        assert_eq!(config.discovery.max_depth, 3);
        assert_eq!(config.metrics.deny, ["container_network_*"]);
        assert!(config.check().is_ok());
    }

    #[test]
    fn unknown_field_names_its_line() {
        let err = Config::parse("\n[metrics]\ndenny = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("denny"), "{err}");
    }

    #[test]
    fn remote_write_section() {
        let config = Config::parse(
            "[remote_write]\nurl = \"http://prom:9090/api/v1/write\"\ninterval = \"1m30s\"\n\
             timeout = \"250ms\"\nqueue_samples = 1000\nbatch_samples = 100\n\
             [remote_write.external_labels]\ncluster = \"c1\"\ninstance = \"\"\n",
        )
        .unwrap();
        assert!(config.check().is_ok());
        let rw = &config.remote_write;
        assert_eq!(rw.interval, Duration::from_secs(90));
        assert_eq!(rw.timeout, Duration::from_millis(250));
        let settings = rw.settings(None, "node1").unwrap().unwrap();
        assert_eq!(settings.url.host(), Some("prom"));
        assert_eq!(
            (settings.queue_samples, settings.batch_samples),
            (1000, 100)
        );
        // `instance = ""` removes the host name; `job` keeps its default.
        assert_eq!(
            settings.external_labels,
            [
                ("cluster".to_string(), "c1".to_string()),
                ("job".to_string(), "proclens".to_string())
            ]
        );
        let cli = rw
            .settings(Some("http://127.0.0.1:1/api/v1/write"), "node1")
            .unwrap()
            .unwrap();
        assert_eq!(cli.url.port_u16(), Some(1), "the command line's URL wins");
        let err = rw.settings(Some("https://x/"), "node1").unwrap_err();
        assert!(err.starts_with("--remote-write: "), "{err}");
    }

    #[test]
    fn remote_write_defaults_and_off_without_url() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.remote_write.settings(None, "h").unwrap(), None);
        let settings = config
            .remote_write
            .settings(Some("http://x/api/v1/write"), "h")
            .unwrap()
            .unwrap();
        assert_eq!(settings.interval, DEFAULT_REMOTE_WRITE_INTERVAL);
        assert_eq!(settings.queue_samples, DEFAULT_QUEUE_SAMPLES);
        assert_eq!(settings.batch_samples, DEFAULT_BATCH_SAMPLES);
        assert_eq!(
            settings.external_labels,
            [
                ("instance".to_string(), "h".to_string()),
                ("job".to_string(), "proclens".to_string())
            ]
        );
    }

    #[test]
    fn remote_write_errors_name_the_line_or_field() {
        let err = Config::parse("[remote_write]\n\ninterval = \"15 seconds\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("15 seconds"),
            "{err}"
        );
        let err = Config::parse("[remote_write]\nurll = \"http://x/\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("urll"), "{err}");
        for (text, field) in [
            ("batch_samples = 10\nqueue_samples = 5", "queue_samples"),
            ("batch_samples = 0", "batch_samples"),
            ("interval = \"0s\"", "interval"),
            ("timeout = \"0ms\"", "timeout"),
            ("url = \"https://x/api/v1/write\"", "url"),
            (
                "[remote_write.external_labels]\n\"a-b\" = \"x\"",
                "external_labels",
            ),
            (
                "[remote_write.external_labels]\n__x = \"x\"",
                "external_labels",
            ),
        ] {
            let config = Config::parse(&format!("[remote_write]\n{text}\n")).unwrap();
            let err = config.check().unwrap_err();
            assert!(
                err.contains(&format!("remote_write.{field}")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
        for bad in [
            "",
            "15",
            "s",
            "1.5s",
            "15 s",
            "-1s",
            "1d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fused_section() {
        let default = Config::parse("").unwrap();
        assert_eq!(
            default.fused.stats_file(),
            Some(Path::new(DEFAULT_FUSED_STATS_FILE))
        );
        let set = Config::parse("[fused]\nstats_file = \"/tmp/f.stats\"\n").unwrap();
        assert_eq!(set.fused.stats_file(), Some(Path::new("/tmp/f.stats")));
        let off = Config::parse("[fused]\nstats_file = \"\"\n").unwrap();
        assert_eq!(off.fused.stats_file(), None);
        assert!(Config::parse("[fused]\nstats = \"x\"\n").is_err());
    }

    #[test]
    fn cri_section() {
        let config =
            Config::parse("[cri]\nendpoint = \"/run/k3s/containerd.sock\"\nrefresh = \"30s\"\n")
                .unwrap();
        assert_eq!(
            config.cri.endpoint,
            PathBuf::from("/run/k3s/containerd.sock")
        );
        assert_eq!(config.cri.refresh, Duration::from_secs(30));
        assert_eq!(
            Config::default().cri.endpoint,
            PathBuf::from(DEFAULT_CRI_ENDPOINT)
        );
        let err = Config::parse("[cri]\nrefresh = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn descriptor_budget_keeps_a_reserve() {
        // This dev host: a hard limit of 20,000 leaves 17,500.
        assert_eq!(descriptor_budget(None, 20_000).keep, 17_500);
        // The unit's LimitNOFILE=65536: the default applies.
        assert_eq!(descriptor_budget(None, 65_536).keep, DEFAULT_OPEN_FILES);
        // A small limit keeps at least 1,024 free.
        assert_eq!(descriptor_budget(None, 1_024).keep, 0);
        assert_eq!(descriptor_budget(None, 4_096).keep, 3_072);
        let asked = descriptor_budget(Some(19_000), 20_000);
        assert_eq!((asked.keep, asked.over_limit), (19_000, true));
        assert!(!descriptor_budget(Some(0), 20_000).over_limit);
    }

    #[test]
    fn relative_root_is_refused() {
        let config = Config::parse("[discovery]\nroots = [\"docker\"]\n").unwrap();
        let err = config.check().unwrap_err();
        assert!(err.contains("\"docker\""), "{err}");
    }
}
