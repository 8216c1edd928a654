//! fused's own numbers: reads, errors and read latency per served file, containers tracked and
//! worker restarts survived, kept in the shared state region ([`crate::shared`]) and published as
//! a small Prometheus text file for the exporter.
//!
//! Where the counters live: in spare bytes of the region's header page (offsets
//! [`STATS_AT`]..[`STATS_END`]), which every layout-1 region has and which older binaries leave
//! zero. The region belongs to the supervisor and is handed to every worker and to a
//! re-executed supervisor, so the counters survive a worker's `kill -9`, a reload (SIGHUP) and a
//! supervisor upgrade (SIGUSR2) with nothing to fold or hand over: a worker only adds to them.
//! They start from zero only when the whole service starts afresh (a counter reset Prometheus
//! expects).
//!
//! Cost on the read path: [`Counters::record`] is four relaxed atomic additions on one shared
//! page (reads, errors when failed, one histogram bucket, the duration sum). Publishing runs in
//! the supervisor, another process, and only loads those words: it never takes a lock a read
//! needs.

use crate::shm::Region;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `file` label of every file fused counts reads of, by index: the computed files in the
/// filesystem's inode order, then every host sysfs entry passed through.
pub const FILES: [&str; FILE_COUNT] = [
    "cpuinfo",
    "diskstats",
    "loadavg",
    "meminfo",
    "slabinfo",
    "stat",
    "swaps",
    "uptime",
    "pressure/cpu",
    "pressure/io",
    "pressure/memory",
    "cpu/online",
    "cpu/possible",
    "cpu/present",
    "cpu/passthrough",
];

/// How many files are counted.
pub const FILE_COUNT: usize = 15;

/// Index of the host sysfs passthrough entries in [`FILES`].
pub const PASSTHROUGH: usize = 14;

/// Upper bounds of the latency histogram's buckets, in µs (×2 steps from 25 µs to 102.4 ms);
/// one more bucket holds what is slower.
pub const BUCKETS_US: [u64; 13] = [
    25, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400,
];

/// Words per file: reads, errors, duration sum (ns), then one count per bucket and one above.
const FILE_WORDS: usize = 3 + BUCKETS_US.len() + 1;
/// Where the counters start in the header page (the header's own fields end at byte 40).
pub const STATS_AT: usize = 1024;
const RESTARTS_AT: usize = STATS_AT + FILE_COUNT * FILE_WORDS * 8;
const CONTAINERS_AT: usize = RESTARTS_AT + 8;
/// One past the last byte of the counters: within the 4096-byte header page.
pub const STATS_END: usize = CONTAINERS_AT + 8;

const _: () = assert!(STATS_END <= 4096);

/// The counters, over a mapped state region.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'r> {
    region: &'r Region,
}

impl<'r> Counters<'r> {
    /// The counters of `region` (a state region made by [`crate::shared::create_region`]).
    pub fn new(region: &'r Region) -> Self {
        Counters { region }
    }

    fn word(&self, offset: usize) -> &'r AtomicU64 {
        self.region.atomic_u64(offset)
    }

    fn file_word(&self, file: usize, word: usize) -> &'r AtomicU64 {
        self.word(STATS_AT + (file * FILE_WORDS + word) * 8)
    }

    /// Counts one read of file `file` (an index into [`FILES`]; others are ignored) that took
    /// `elapsed` and succeeded or not.
    pub fn record(&self, file: usize, elapsed: Duration, ok: bool) {
        if file >= FILE_COUNT {
            return;
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound_us| ns <= bound_us * 1_000)
            .unwrap_or(BUCKETS_US.len());
        self.file_word(file, 0).fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.file_word(file, 1).fetch_add(1, Ordering::Relaxed);
        }
        self.file_word(file, 2).fetch_add(ns, Ordering::Relaxed);
        self.file_word(file, 3 + bucket)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one worker restart survived (a worker replaced after it died).
    pub fn count_restart(&self) {
        self.word(RESTARTS_AT).fetch_add(1, Ordering::Relaxed);
    }

    /// Sets how many containers fused keeps current.
    pub fn set_containers(&self, containers: u64) {
        self.word(CONTAINERS_AT)
            .store(containers, Ordering::Relaxed);
    }

    /// A copy of every counter now.
    pub fn snapshot(&self) -> Snapshot {
        let mut files = [FileStats::default(); FILE_COUNT];
        for (index, stats) in files.iter_mut().enumerate() {
            let load = |word: usize| self.file_word(index, word).load(Ordering::Relaxed);
            stats.reads = load(0);
            stats.errors = load(1);
            stats.sum_ns = load(2);
            for (bucket, count) in stats.buckets.iter_mut().enumerate() {
                *count = load(3 + bucket);
            }
        }
        Snapshot {
            files,
            restarts: self.word(RESTARTS_AT).load(Ordering::Relaxed),
            containers: self.word(CONTAINERS_AT).load(Ordering::Relaxed),
        }
    }
}

/// One file's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Reads served (each READ at offset 0, which renders the file afresh).
    pub reads: u64,
    /// Of those, reads answered with an error.
    pub errors: u64,
    /// Time spent serving them, ns.
    pub sum_ns: u64,
    /// Reads per latency bucket ([`BUCKETS_US`], then slower), not cumulative.
    pub buckets: [u64; BUCKETS_US.len() + 1],
}

/// Every counter at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Per file, indexed like [`FILES`].
    pub files: [FileStats; FILE_COUNT],
    /// Worker restarts survived.
    pub restarts: u64,
    /// Containers kept current.
    pub containers: u64,
}

/// `snapshot` in the Prometheus text format 0.0.4, stamped with when it was written (seconds
/// since the epoch) and how often it is (seconds). A histogram's `_count` is the sum of its
/// buckets, so the two always agree even when a read lands between their loads.
pub fn render(snapshot: &Snapshot, written_at: f64, interval: Duration) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let family = |name: &str, kind: &str, help: &str, out: &mut String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    family(
        "proclens_fused_reads_total",
        "counter",
        "Reads of a served file (READ requests at offset 0, each rendering it afresh).",
        &mut out,
    );
    for (name, stats) in FILES.iter().zip(&snapshot.files) {
        let _ = writeln!(
            out,
            "proclens_fused_reads_total{{file=\"{name}\"}} {}",
            stats.reads
        );
    }
    family(
        "proclens_fused_read_errors_total",
        "counter",
        "Reads of a served file answered with an error.",
        &mut out,
    );
    for (name, stats) in FILES.iter().zip(&snapshot.files) {
        let _ = writeln!(
            out,
            "proclens_fused_read_errors_total{{file=\"{name}\"}} {}",
            stats.errors
        );
    }
    family(
        "proclens_fused_read_duration_seconds",
        "histogram",
        "Time fused took to serve a read of a served file, in seconds.",
        &mut out,
    );
    for (name, stats) in FILES.iter().zip(&snapshot.files) {
        let mut cumulative = 0u64;
        for (bound, count) in BUCKETS_US.iter().zip(&stats.buckets) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "proclens_fused_read_duration_seconds_bucket{{file=\"{name}\",le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += stats.buckets[BUCKETS_US.len()];
        let _ = writeln!(
            out,
            "proclens_fused_read_duration_seconds_bucket{{file=\"{name}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "proclens_fused_read_duration_seconds_sum{{file=\"{name}\"}} {}",
            stats.sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "proclens_fused_read_duration_seconds_count{{file=\"{name}\"}} {cumulative}"
        );
    }
    family(
        "proclens_fused_containers",
        "gauge",
        "Containers whose load averages fused keeps current (their loadavg or stat was read recently).",
        &mut out,
    );
    let _ = writeln!(out, "proclens_fused_containers {}", snapshot.containers);
    family(
        "proclens_fused_worker_restarts_total",
        "counter",
        "Serving workers that died (crash, kill -9) and were replaced while the mount stayed up.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "proclens_fused_worker_restarts_total {}",
        snapshot.restarts
    );
    family(
        "proclens_fused_stats_written_seconds",
        "gauge",
        "When fused wrote these numbers, in seconds since the epoch.",
        &mut out,
    );
    let _ = writeln!(out, "proclens_fused_stats_written_seconds {written_at}");
    family(
        "proclens_fused_stats_interval_seconds",
        "gauge",
        "How often fused writes these numbers, in seconds.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "proclens_fused_stats_interval_seconds {}",
        interval.as_secs_f64()
    );
    out
}

/// Replaces `path` with `text` atomically: written to a temporary file beside it, then renamed
/// over it, so a reader sees the old file or the new one, never a part. The directory is
/// created if missing.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the stats file path names no file"))?
        .to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(name);
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        crate::shared::create_region(crate::shared::Geometry {
            handles: 16,
            containers: 16,
            cells: 16,
        })
        .unwrap()
    }

    #[test]
    fn reads_land_in_their_file_and_bucket() {
        let region = region();
        let counters = Counters::new(&region);
        let meminfo = FILES.iter().position(|f| *f == "meminfo").unwrap();
        counters.record(meminfo, Duration::from_micros(10), true);
        counters.record(meminfo, Duration::from_micros(25), true);
        counters.record(meminfo, Duration::from_micros(26), false);
        counters.record(meminfo, Duration::from_secs(1), true);
        counters.record(FILE_COUNT, Duration::from_micros(1), true);
        counters.count_restart();
        counters.set_containers(3);
        let snapshot = counters.snapshot();
        let stats = snapshot.files[meminfo];
        assert_eq!(stats.reads, 4);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.sum_ns, 1_000_061_000);
        assert_eq!(stats.buckets[0], 2, "10 µs and exactly 25 µs");
        assert_eq!(stats.buckets[1], 1, "26 µs");
        assert_eq!(stats.buckets[BUCKETS_US.len()], 1, "1 s");
        assert_eq!(snapshot.restarts, 1);
        assert_eq!(snapshot.containers, 3);
        for (index, other) in snapshot.files.iter().enumerate() {
            if index != meminfo {
                assert_eq!(*other, FileStats::default(), "{}", FILES[index]);
            }
        }
    }

    #[test]
    fn counters_are_shared_by_every_mapping_of_the_region() {
        let supervisor = region();
        let worker = Region::map(supervisor.fd().try_clone_to_owned().unwrap()).unwrap();
        Counters::new(&worker).record(0, Duration::from_micros(100), true);
        drop(worker);
        let next_worker = Region::map(supervisor.fd().try_clone_to_owned().unwrap()).unwrap();
        Counters::new(&next_worker).record(0, Duration::from_micros(100), true);
        assert_eq!(Counters::new(&supervisor).snapshot().files[0].reads, 2);
    }

    #[test]
    fn the_state_region_still_attaches() {
        let region = region();
        Counters::new(&region).record(3, Duration::from_micros(30), true);
        assert!(crate::shared::SharedState::attach(region).is_ok());
    }

    #[test]
    fn rendered_text_is_cumulative_and_consistent() {
        let region = region();
        let counters = Counters::new(&region);
        counters.record(3, Duration::from_micros(30), true);
        counters.record(3, Duration::from_millis(200), true);
        let text = render(&counters.snapshot(), 1700000000.5, Duration::from_secs(5));
        for line in [
            "proclens_fused_reads_total{file=\"meminfo\"} 2",
            "proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"0.000025\"} 0",
            "proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"0.00005\"} 1",
            "proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"0.1024\"} 1",
            "proclens_fused_read_duration_seconds_bucket{file=\"meminfo\",le=\"+Inf\"} 2",
            "proclens_fused_read_duration_seconds_count{file=\"meminfo\"} 2",
            "proclens_fused_read_duration_seconds_sum{file=\"meminfo\"} 0.20003",
            "proclens_fused_read_errors_total{file=\"cpu/passthrough\"} 0",
            "proclens_fused_stats_written_seconds 1700000000.5",
            "proclens_fused_stats_interval_seconds 5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fused.stats");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["fused.stats"], "no temporary file left behind");
    }
}
