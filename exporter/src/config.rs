//! The exporter's configuration file (TOML). Every field is optional; unknown fields are an
//! error naming the line, so a typo never silently falls back to a default.

use proclens_cgroup::Discovery;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the exporter listens when neither `--listen` nor the file says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9639";

/// Descriptors of cgroup files kept open between scrapes when the file does not say: enough
/// for ~1,000 containers' files (each re-read with one pread instead of open+read+close).
pub const DEFAULT_OPEN_FILES: usize = 20_000;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` to serve /metrics on (`--listen` wins).
    pub listen: Option<String>,
    /// Descriptors of cgroup files kept open (0: open every file for every read).
    pub open_files: Option<usize>,
    /// Web configuration file (exporter-toolkit format: TLS, basic auth, headers);
    /// `--web.config.file` wins. A relative path is taken from the working directory.
    pub web_config: Option<PathBuf>,
    /// Where to look for containers.
    pub discovery: DiscoveryConfig,
    /// Which families to write.
    pub metrics: MetricsConfig,
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

    /// Checks values the types cannot: roots are absolute cgroup paths.
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
        Ok(())
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
    fn relative_root_is_refused() {
        let config = Config::parse("[discovery]\nroots = [\"docker\"]\n").unwrap();
        let err = config.check().unwrap_err();
        assert!(err.contains("\"docker\""), "{err}");
    }
}
