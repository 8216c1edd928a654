//! proclens-fused's own numbers in every scrape. fused (which has no HTTP stack) rewrites a small
//! file in the Prometheus text format every few seconds (its `--stats-file`); each scrape reads
//! it, checks it strictly against the catalogue of fused families ([`FAMILIES`]), and writes
//! what it holds through the [`Encoder`], so both exposition formats and remote write get it.
//!
//! A missing, stale (older than three of fused's intervals: fused is gone) or malformed file
//! never fails a scrape: its series are left out and `proclens_fused_up` is 0; a malformed one
//! also counts in `proclens_exporter_fused_stats_errors_total`. Each change of state is logged
//! once.

use crate::encode::{Encoder, Kind, Value};
use crate::series::parse_label_list;
use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The largest stats file read (fused writes about 20 KiB); a bigger one is malformed.
pub const MAX_BYTES: u64 = 256 * 1024;
/// The most samples a stats file may hold (fused writes about 300).
pub const MAX_SAMPLES: usize = 2048;
/// How often fused writes its file when the file does not say.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// A file older than this many of fused's intervals means fused is gone.
pub const STALE_INTERVALS: u32 = 3;

/// One family fused may publish.
#[derive(Debug)]
pub struct FusedFamily {
    /// Its name.
    pub name: &'static str,
    /// Its HELP text (the file's own is checked for form, not copied).
    pub help: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The names its samples may have (a histogram's `_bucket`, `_sum` and `_count`).
    pub samples: &'static [&'static str],
    /// Whether its samples carry a `file` label.
    pub per_file: bool,
}

/// Every family fused publishes, in the order a scrape writes them.
pub const FAMILIES: [FusedFamily; 7] = [
    FusedFamily {
        name: "proclens_fused_reads_total",
        help: "Reads of a file proclens-fused serves (each read at offset 0, which renders it afresh).",
        kind: Kind::Counter,
        samples: &["proclens_fused_reads_total"],
        per_file: true,
    },
    FusedFamily {
        name: "proclens_fused_read_errors_total",
        help: "Reads of a file proclens-fused serves that were answered with an error.",
        kind: Kind::Counter,
        samples: &["proclens_fused_read_errors_total"],
        per_file: true,
    },
    FusedFamily {
        name: "proclens_fused_read_duration_seconds",
        help: "Time proclens-fused took to serve a read of a file, in seconds.",
        kind: Kind::Histogram,
        samples: &[
            "proclens_fused_read_duration_seconds_bucket",
            "proclens_fused_read_duration_seconds_sum",
            "proclens_fused_read_duration_seconds_count",
        ],
        per_file: true,
    },
    FusedFamily {
        name: "proclens_fused_containers",
        help: "Containers whose load averages proclens-fused keeps current.",
        kind: Kind::Gauge,
        samples: &["proclens_fused_containers"],
        per_file: false,
    },
    FusedFamily {
        name: "proclens_fused_worker_restarts_total",
        help: "proclens-fused serving workers that died and were replaced while the mount stayed up.",
        kind: Kind::Counter,
        samples: &["proclens_fused_worker_restarts_total"],
        per_file: false,
    },
    FusedFamily {
        name: "proclens_fused_stats_written_seconds",
        help: "When proclens-fused wrote the numbers in this scrape, in seconds since the epoch.",
        kind: Kind::Gauge,
        samples: &["proclens_fused_stats_written_seconds"],
        per_file: false,
    },
    FusedFamily {
        name: "proclens_fused_stats_interval_seconds",
        help: "How often proclens-fused writes its numbers, in seconds.",
        kind: Kind::Gauge,
        samples: &["proclens_fused_stats_interval_seconds"],
        per_file: false,
    },
];

/// The family the exporter adds: whether fused's numbers are in the scrape.
pub const UP: &str = "proclens_fused_up";
/// The exporter's count of malformed stats files.
pub const ERRORS: &str = "proclens_exporter_fused_stats_errors_total";

/// One checked sample of a stats file.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedSample {
    /// Index of its family in [`FAMILIES`].
    pub family: usize,
    /// Its sample name (from the catalogue).
    pub name: &'static str,
    /// Its labels, unescaped, in the file's order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// Why a stats file was refused, with the line that broke it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Malformed {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

/// A `file` label value fused may write: a short path of lowercase letters, digits and `/_-`.
fn is_file_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/_-".contains(&b))
}

/// Checks a stats file line by line: only [`FAMILIES`]' samples, each with exactly the labels
/// its family has (`file`, plus `le` on buckets), a number as value, no timestamp, no series
/// twice; HELP and TYPE lines only of those families, TYPE with their type. Pure.
pub fn parse(text: &str) -> Result<Vec<FusedSample>, Malformed> {
    let mut samples = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |reason: String| Malformed {
            line: index + 1,
            reason,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (keyword, name, rest) = (words.next(), words.next(), words.next());
            let family = name.and_then(|n| FAMILIES.iter().find(|f| f.name == n));
            match (keyword, family, rest) {
                (Some("HELP"), Some(_), Some(_)) => {}
                (Some("TYPE"), Some(f), Some(kind)) if kind == kind_word(f.kind) => {}
                _ => return Err(bad(format!("unexpected comment {line:?}"))),
            }
            continue;
        }
        if samples.len() >= MAX_SAMPLES {
            return Err(bad(format!("more than {MAX_SAMPLES} samples")));
        }
        let (head, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| bad("a sample without a value".to_string()))?;
        let value: f64 = value
            .parse()
            .map_err(|_| bad(format!("value {value:?} is not a number")))?;
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or_else(|| bad("unterminated label list".to_string()))?;
                let labels = parse_label_list(inner)
                    .ok_or_else(|| bad(format!("bad label list {inner:?}")))?;
                (name, labels)
            }
            None => (head, Vec::new()),
        };
        let (family, sample_name) = FAMILIES
            .iter()
            .enumerate()
            .find_map(|(i, f)| f.samples.iter().find(|s| **s == name).map(|s| (i, *s)))
            .ok_or_else(|| bad(format!("{name:?} is not a proclens-fused sample")))?;
        let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        let wanted: &[&str] = match (FAMILIES[family].per_file, sample_name.ends_with("_bucket")) {
            (true, true) => &["file", "le"],
            (true, false) => &["file"],
            (false, _) => &[],
        };
        if names != wanted {
            return Err(bad(format!("{name} has labels {names:?}, not {wanted:?}")));
        }
        for (label, value) in &labels {
            let ok = match label.as_str() {
                "file" => is_file_label(value),
                _ => value == "+Inf" || value.parse::<f64>().is_ok_and(f64::is_finite),
            };
            if !ok {
                return Err(bad(format!("bad {label} label {value:?}")));
            }
        }
        if !seen.insert((sample_name, labels.clone())) {
            return Err(bad(format!("{name}{{{inner:?}}} twice", inner = labels)));
        }
        samples.push(FusedSample {
            family,
            name: sample_name,
            labels,
            value,
        });
    }
    Ok(samples)
}

/// What the last look at the stats file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Fresh,
    Missing,
    Unreadable,
    Stale,
    Malformed,
}

/// Reads fused's stats file at every scrape and writes its families.
#[derive(Debug)]
pub struct FusedStats {
    path: PathBuf,
    errors: AtomicU64,
    health: Mutex<Health>,
}

impl FusedStats {
    /// Reads fused's numbers from `path` (fused's `--stats-file`).
    pub fn new(path: &Path) -> Self {
        FusedStats {
            path: path.to_path_buf(),
            errors: AtomicU64::new(0),
            health: Mutex::new(Health::Unknown),
        }
    }

    /// Malformed files met so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The file's checked samples if it is present, fresh at `now` and well-formed.
    pub fn read(&self, now: SystemTime) -> Option<Vec<FusedSample>> {
        let (health, samples) = match self.load(now) {
            Ok(samples) => (Health::Fresh, Some(samples)),
            Err((health, detail)) => {
                if health == Health::Malformed {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.note(health, &detail);
                (health, None)
            }
        };
        if health == Health::Fresh {
            self.note(health, "");
        }
        samples
    }

    /// Logs a change of health once.
    fn note(&self, health: Health, detail: &str) {
        let mut last = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if *last == health {
            return;
        }
        *last = health;
        let path = self.path.display();
        match health {
            Health::Fresh => tracing::info!(path = %path, "reading proclens-fused's numbers"),
            _ => tracing::warn!(path = %path, state = ?health, detail,
                "proclens-fused's numbers left out of scrapes (logged once until this changes)"),
        }
    }

    fn load(&self, now: SystemTime) -> Result<Vec<FusedSample>, (Health, String)> {
        let file = std::fs::File::open(&self.path).map_err(|e| {
            let health = if e.kind() == std::io::ErrorKind::NotFound {
                Health::Missing
            } else {
                Health::Unreadable
            };
            (health, e.to_string())
        })?;
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| (Health::Unreadable, e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| (Health::Unreadable, e.to_string()))?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err((Health::Malformed, format!("larger than {MAX_BYTES} bytes")));
        }
        let text =
            String::from_utf8(bytes).map_err(|_| (Health::Malformed, "not UTF-8".to_string()))?;
        let samples = parse(&text).map_err(|e| (Health::Malformed, e.to_string()))?;
        let interval = samples
            .iter()
            .find(|s| s.name == "proclens_fused_stats_interval_seconds")
            .and_then(|s| Duration::try_from_secs_f64(s.value).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_INTERVAL);
        let age = now.duration_since(modified).unwrap_or_default();
        if age > interval.saturating_mul(STALE_INTERVALS) {
            return Err((
                Health::Stale,
                format!("written {age:?} ago, every {interval:?}"),
            ));
        }
        Ok(samples)
    }

    /// Writes fused's families (when its file is fresh and valid), `proclens_fused_up` and the
    /// malformed-file counter.
    pub fn write(&self, encoder: &mut Encoder<'_>) {
        let samples = self.read(SystemTime::now());
        if let Some(samples) = &samples {
            for (index, family) in FAMILIES.iter().enumerate() {
                let mut of_family = samples.iter().filter(|s| s.family == index).peekable();
                if of_family.peek().is_none() {
                    continue;
                }
                encoder.family(family.name, family.help, family.kind);
                for sample in of_family {
                    let labels: Vec<(&str, &str)> = sample
                        .labels
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    encoder.sample_named(sample.name, "", &labels, Value::Float(sample.value));
                }
            }
        }
        encoder.family(
            UP,
            "Whether proclens-fused's stats file was present, fresh and well-formed at this scrape (1) or not (0).",
            Kind::Gauge,
        );
        encoder.sample("", &[], Value::Int(u64::from(samples.is_some())));
        encoder.family(
            ERRORS,
            "proclens-fused stats files left out of a scrape because they were malformed.",
            Kind::Counter,
        );
        encoder.sample("", &[], Value::Int(self.errors()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Format;

    const GOOD: &str = "# HELP proclens_fused_reads_total Reads.\n\
        # TYPE proclens_fused_reads_total counter\n\
        proclens_fused_reads_total{file=\"meminfo\"} 7\n\
        proclens_fused_reads_total{file=\"pressure/cpu\"} 0\n\
        # HELP proclens_fused_read_duration_seconds Time.\n\
        # TYPE proclens_fused_read_duration_seconds histogram\n\
        proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"0.000025\"} 1\n\
        proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"+Inf\"} 7\n\
        proclens_fused_read_duration_seconds_sum{file=\"meminfo\"} 0.0042\n\
        proclens_fused_read_duration_seconds_count{file=\"meminfo\"} 7\n\
        # TYPE proclens_fused_worker_restarts_total counter\n\
        proclens_fused_worker_restarts_total 2\n\
        proclens_fused_stats_interval_seconds 1\n";

    #[test]
    fn a_good_file_parses() {
        let samples = parse(GOOD).unwrap();
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[0].name, "proclens_fused_reads_total");
        assert_eq!(
            samples[0].labels,
            [("file".to_string(), "meminfo".to_string())]
        );
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[3].labels[1], ("le".to_string(), "+Inf".to_string()));
    }

    #[test]
    fn anything_else_is_malformed() {
        let cases = [
            (
                "container_cpu_usage_seconds_total 1\n",
                "not a proclens-fused",
            ),
            ("proclens_fused_up 1\n", "not a proclens-fused"),
            ("proclens_fused_reads_total 1\n", "labels"),
            (
                "proclens_fused_reads_total{file=\"meminfo\",x=\"1\"} 1\n",
                "labels",
            ),
            (
                "proclens_fused_reads_total{file=\"Mem info\"} 1\n",
                "bad file",
            ),
            (
                "proclens_fused_reads_total{file=\"meminfo\"} one\n",
                "not a number",
            ),
            (
                "proclens_fused_reads_total{file=\"meminfo\"} 1 1700000000\n",
                "unterminated",
            ),
            ("proclens_fused_reads_total{file=\"meminfo} 1\n", "label"),
            (
                "proclens_fused_read_duration_seconds_bucket{file=\"a\"} 1\n",
                "labels",
            ),
            (
                "proclens_fused_read_duration_seconds_bucket{file=\"a\",le=\"x\"} 1\n",
                "bad le",
            ),
            ("# TYPE proclens_fused_reads_total gauge\n", "comment"),
            ("# random words\n", "comment"),
            (
                "proclens_fused_containers 1\nproclens_fused_containers 2\n",
                "twice",
            ),
            ("garbage\n", "without a value"),
        ];
        for (text, why) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains(why), "{text:?}: {err}");
        }
        let many = "proclens_fused_containers 1\n".repeat(MAX_SAMPLES + 1);
        assert!(parse(&many).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in r#"[a-z_{}=",# \n\\0-9.+I]{0,200}"#) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }

    fn write_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("fused.stats");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn scrape(stats: &FusedStats, format: Format) -> String {
        let mut out = String::new();
        let mut encoder = Encoder::new(&mut out, format);
        stats.write(&mut encoder);
        encoder.finish();
        out
    }

    #[test]
    fn a_fresh_file_is_copied_through_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let stats = FusedStats::new(&write_file(dir.path(), GOOD));
        let text = scrape(&stats, Format::Text);
        for line in [
            "# TYPE proclens_fused_reads_total counter",
            "proclens_fused_reads_total{file=\"meminfo\"} 7",
            "# TYPE proclens_fused_read_duration_seconds histogram",
            "proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"+Inf\"} 7",
            "proclens_fused_worker_restarts_total 2",
            "proclens_fused_up 1",
            "proclens_exporter_fused_stats_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let om = scrape(&stats, Format::OpenMetrics);
        assert!(om.contains("# TYPE proclens_fused_reads counter\n"), "{om}");
        assert!(om.contains("proclens_fused_reads_total{file=\"meminfo\"} 7\n"));
        assert!(om.contains("# TYPE proclens_fused_read_duration_seconds histogram\n"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn remote_write_gets_the_same_series() {
        let dir = tempfile::tempdir().unwrap();
        let stats = FusedStats::new(&write_file(dir.path(), GOOD));
        let mut set = crate::series::SeriesSet::new(0);
        let mut encoder = Encoder::series(&mut set);
        stats.write(&mut encoder);
        encoder.finish();
        let bucket = set
            .iter()
            .find(|s| s.name == "proclens_fused_read_duration_seconds_bucket")
            .unwrap();
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            bucket.extra,
            [pair("file", "meminfo"), pair("le", "0.000025")]
        );
        assert_eq!(bucket.value, 1.0);
        assert_eq!(
            set.len(),
            8 + 2,
            "the file's samples, up and the error counter"
        );
        assert_eq!(set.unparsable(), 0);
    }

    #[test]
    fn missing_stale_or_malformed_leaves_fused_out_but_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = FusedStats::new(&dir.path().join("none"));
        let text = scrape(&missing, Format::Text);
        assert!(text.contains("proclens_fused_up 0\n"), "{text}");
        assert!(!text.contains("proclens_fused_reads_total"));
        assert_eq!(missing.errors(), 0);

        let path = write_file(dir.path(), GOOD);
        let stats = FusedStats::new(&path);
        let later = SystemTime::now() + Duration::from_secs(4);
        assert!(stats.read(later).is_none(), "older than 3 × the file's 1 s");
        assert!(stats.read(SystemTime::now()).is_some());

        std::fs::write(
            &path,
            "proclens_fused_reads_total{file=\"meminfo\"} 1\nbad\n",
        )
        .unwrap();
        let text = scrape(&stats, Format::Text);
        assert!(text.contains("proclens_fused_up 0\n"), "{text}");
        assert!(!text.contains("proclens_fused_reads_total{"), "{text}");
        assert!(text.contains("proclens_exporter_fused_stats_errors_total 1\n"));
    }
}
