//! One scrape: list the containers, read each through the collector (only the parts the enabled
//! families need), and write every family in the asked format.

use crate::encode::{push_label, Encoder, Format, Kind, Value};
use crate::families::{ContainerSample, Family, ScrapeContext, Source, FAMILIES};
use crate::filter::MetricFilter;
use crate::fused::FusedStats;
use crate::remote_write::RemoteWriteStats;
use crate::series::SeriesSet;
use proclens_cgroup::collector::{in_parallel, CGROUPS_PER_BLOCK};
use proclens_cgroup::parse::cpulist::parse_cpulist;
use proclens_cgroup::parse::host::{parse_diskstats_names, parse_meminfo};
use proclens_cgroup::{CgroupKind, Collector, Discovery, Error as CgroupError, FoundCgroup, Parts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Labels a runtime knows for a cgroup (from CRI), beyond its `id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeLabels {
    /// `name`: the container's runtime name or id.
    pub name: String,
    /// `image`: the image reference.
    pub image: String,
    /// `namespace`: the Kubernetes namespace.
    pub namespace: String,
    /// `pod`: the pod name.
    pub pod: String,
    /// `container`: the container name in its pod (empty for a pod cgroup).
    pub container: String,
}

/// Where runtime labels come from (CRI); [`NoRuntime`] when there is none.
pub trait LabelSource: Send + Sync {
    /// The labels of a listed cgroup, if the runtime knows it. Called once per container per
    /// scrape: must answer from memory, never by a call to the runtime.
    fn labels(&self, cgroup: &FoundCgroup) -> Option<Arc<RuntimeLabels>>;
}

/// No runtime: every series has only its `id` label.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRuntime;

impl LabelSource for NoRuntime {
    fn labels(&self, _: &FoundCgroup) -> Option<Arc<RuntimeLabels>> {
        None
    }
}

/// The exporter's own counters, exposed as `proclens_exporter_*`.
#[derive(Debug, Default)]
pub struct ExporterStats {
    scrapes: AtomicU64,
    vanished: AtomicU64,
    failed: AtomicU64,
    last_containers: AtomicU64,
    last_duration_us: AtomicU64,
}

/// What one collection read: every container that could be read, and when.
struct Collected {
    /// When the listing started (for `proclens_exporter_collect_seconds`).
    started: Instant,
    /// When the last container was read: the collection's time.
    at: SystemTime,
    context: ScrapeContext,
    samples: Vec<ContainerSample>,
}

/// Reads and writes every container's metrics.
pub struct Exporter {
    collector: Collector,
    discovery: Discovery,
    families: Vec<&'static Family>,
    parts: Parts,
    read_processes: bool,
    read_network: bool,
    read_start_time: bool,
    labels: Arc<dyn LabelSource>,
    /// Threads a collection reads on (0: the host's available parallelism).
    threads: usize,
    stats: ExporterStats,
    /// Remote write's counters, written with the exporter's own when remote write is on.
    remote_write: Option<Arc<RemoteWriteStats>>,
    /// proclens-fused's numbers, when its stats file is configured.
    fused: Option<FusedStats>,
    /// The last scrape's output size, so the next one allocates once.
    last_len: Mutex<usize>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("discovery", &self.discovery)
            .field("families", &self.families.len())
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter over `collector`, finding containers with `discovery`, writing the families
    /// `filter` lets through, labelled from `labels`.
    pub fn new(
        collector: Collector,
        discovery: Discovery,
        filter: &MetricFilter,
        labels: Arc<dyn LabelSource>,
    ) -> Self {
        let families: Vec<&'static Family> =
            FAMILIES.iter().filter(|f| filter.allows(f.name)).collect();
        let mut parts = Parts::NONE;
        let (mut processes, mut network, mut start) = (false, false, false);
        for family in &families {
            match family.source {
                Source::Snapshot(p) => parts = parts | p,
                Source::Processes => processes = true,
                Source::Network => network = true,
                Source::StartTime => start = true,
                Source::Clock => {}
            }
        }
        Exporter {
            collector,
            discovery,
            families,
            parts,
            read_processes: processes || network,
            read_network: network,
            read_start_time: start,
            labels,
            threads: 0,
            stats: ExporterStats::default(),
            remote_write: None,
            fused: None,
            last_len: Mutex::new(0),
        }
    }

    /// Also writes remote write's counters (`proclens_remote_write_*`) with the exporter's own.
    pub fn with_remote_write_stats(mut self, stats: Arc<RemoteWriteStats>) -> Self {
        self.remote_write = Some(stats);
        self
    }

    /// Reads a collection on up to `threads` threads (0, the default: the host's available
    /// parallelism; 1: the scraping thread only).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Also writes proclens-fused's numbers, read from its stats file at `path` at every
    /// collection (`None`: not).
    pub fn with_fused_stats(mut self, path: Option<&std::path::Path>) -> Self {
        self.fused = path.map(FusedStats::new);
        self
    }

    /// The collector this exporter reads through.
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Lists and reads every container, then writes the exposition. A container whose cgroup
    /// vanishes (or cannot be read) during the scrape is left out of this scrape only. Fails
    /// only when the host's cgroups cannot be listed at all.
    pub fn scrape(&self, format: Format) -> Result<String, CgroupError> {
        let collected = self.collect()?;
        let capacity = *self.last_len.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(capacity + capacity / 8);
        let mut encoder = Encoder::new(&mut out, format);
        self.stats.scrapes.fetch_add(1, Ordering::Relaxed);
        self.write_all(&collected, &mut encoder);
        encoder.finish();
        *self.last_len.lock().unwrap_or_else(|e| e.into_inner()) = out.len();
        Ok(out)
    }

    /// Lists and reads every container like [`Exporter::scrape`], but keeps every series the
    /// exposition would hold as label pairs and a value, stamped with the collection's time
    /// (for remote write). Does not count as a scrape served.
    pub fn collect_series(&self) -> Result<SeriesSet, CgroupError> {
        let collected = self.collect()?;
        let timestamp_ms = collected
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut set = SeriesSet::new(timestamp_ms);
        let mut encoder = Encoder::series(&mut set);
        self.write_all(&collected, &mut encoder);
        encoder.finish();
        Ok(set)
    }

    /// Lists and reads every container, on up to `threads` threads: its cgroup files through
    /// [`Collector::collect`] (each file once), then its processes, network and creation time.
    fn collect(&self) -> Result<Collected, CgroupError> {
        let started = Instant::now();
        let found = self
            .collector
            .collect(&self.discovery, self.parts, self.threads)?;
        let host_netns = if self.read_network {
            self.collector.host_netns_inode().ok()
        } else {
            None
        };
        let rest = in_parallel(
            &found,
            self.threads,
            CGROUPS_PER_BLOCK,
            |(cgroup, snapshot)| {
                snapshot
                    .as_ref()
                    .ok()
                    .map(|_| self.sample_without_snapshot(cgroup, host_netns))
            },
        );
        let mut samples = Vec::with_capacity(found.len());
        for ((cgroup, snapshot), rest) in found.into_iter().zip(rest) {
            let sample = match (snapshot, rest) {
                (Ok(snapshot), Some(Ok(sample))) => Ok(ContainerSample { snapshot, ..sample }),
                (Err(e), _) | (Ok(_), Some(Err(e))) => Err(e),
                (Ok(_), None) => continue,
            };
            match sample {
                Ok(sample) => samples.push(sample),
                Err(CgroupError::Vanished { .. }) => {
                    self.stats.vanished.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(id = %cgroup.path, error = %e, "container left out of this scrape");
                }
            }
        }
        // Descriptors no file of this collection used (cgroups removed since the last one).
        self.collector.files().close_idle();
        let at = SystemTime::now();
        Ok(Collected {
            started,
            at,
            context: self.context(at),
            samples,
        })
    }

    /// Writes every family of a collection, the machine's and the exporter's own.
    fn write_all(&self, collected: &Collected, encoder: &mut Encoder<'_>) {
        for family in &self.families {
            encoder.family(family.name, family.help, family.kind);
            for sample in &collected.samples {
                family.write(sample, &collected.context, encoder);
            }
        }
        self.write_machine(encoder);
        self.stats
            .last_containers
            .store(collected.samples.len() as u64, Ordering::Relaxed);
        let elapsed = collected.started.elapsed().as_micros();
        self.stats.last_duration_us.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.write_own(encoder);
    }

    /// Reads what one container has beyond its cgroup files (read before this): its labels,
    /// processes, network and creation time. A cgroup gone by now fails with `Vanished`.
    fn sample_without_snapshot(
        &self,
        cgroup: &FoundCgroup,
        host_netns: Option<u64>,
    ) -> Result<ContainerSample, CgroupError> {
        let mut sample = ContainerSample {
            labels: self.label_list(cgroup),
            ..ContainerSample::default()
        };
        if self.read_processes {
            let pids = self.collector.process_ids(&cgroup.set)?;
            sample.processes = Some(pids.len() as u64);
            if let (true, Some(host), Some(&pid)) = (self.read_network, host_netns, pids.first()) {
                // A process exiting between the listing and this read leaves the network out.
                // A namespace that cannot be read (permissions, a parse failure) leaves only
                // the network series out: the cgroup's own series do not depend on it.
                match self.collector.network_of(pid, host) {
                    Ok(network) => sample.network = network.map(Arc::new),
                    Err(CgroupError::Vanished { .. }) => {}
                    Err(e) => {
                        tracing::debug!(id = %cgroup.path, pid, error = %e, "network counters left out");
                    }
                }
            }
        }
        if self.read_start_time {
            sample.start_time_seconds = self
                .collector
                .created_at(&cgroup.set)?
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64());
        }
        Ok(sample)
    }

    /// The container's label list: `id`, then what the runtime knows (pod cgroups get `pod`
    /// and `namespace`, no `container`), else for a Docker cgroup its id as `name`.
    fn label_list(&self, cgroup: &FoundCgroup) -> String {
        let mut labels = String::with_capacity(cgroup.path.len() + 8);
        push_label(&mut labels, "id", &cgroup.path);
        if let Some(runtime) = self.labels.labels(cgroup) {
            for (name, value) in [
                ("name", &runtime.name),
                ("image", &runtime.image),
                ("namespace", &runtime.namespace),
                ("pod", &runtime.pod),
                ("container", &runtime.container),
            ] {
                if !value.is_empty() {
                    push_label(&mut labels, name, value);
                }
            }
        } else if let CgroupKind::Docker { id } = &cgroup.kind {
            push_label(&mut labels, "name", id);
        }
        labels
    }

    /// The scrape's clock (`at`) and the host's block device names.
    fn context(&self, at: SystemTime) -> ScrapeContext {
        let now_seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let diskstats = self.collector.host_paths().proc_root.join("diskstats");
        let devices = std::fs::read_to_string(&diskstats)
            .ok()
            .and_then(|text| parse_diskstats_names(&text).ok())
            .map(|names| {
                names
                    .into_iter()
                    .map(|d| ((d.major, d.minor), d.name))
                    .collect()
            })
            .unwrap_or_default();
        ScrapeContext {
            devices,
            now_seconds,
        }
    }

    /// `machine_cpu_cores` (online CPUs) and `machine_memory_bytes` (MemTotal), read now.
    fn write_machine(&self, encoder: &mut Encoder<'_>) {
        let paths = self.collector.host_paths();
        let online = paths.sys_root.join("devices/system/cpu/online");
        if let Some(cpus) = std::fs::read_to_string(&online)
            .ok()
            .and_then(|t| parse_cpulist(t.trim()).ok())
        {
            encoder.family(
                "machine_cpu_cores",
                "Number of logical CPU cores online.",
                Kind::Gauge,
            );
            encoder.sample("", &[], Value::Int(cpus.len() as u64));
        }
        let meminfo = paths.proc_root.join("meminfo");
        if let Some(total_kb) = std::fs::read_to_string(&meminfo)
            .ok()
            .and_then(|t| parse_meminfo(&t).ok().and_then(|m| m.get("MemTotal")))
        {
            encoder.family(
                "machine_memory_bytes",
                "Amount of memory installed, in bytes.",
                Kind::Gauge,
            );
            encoder.sample("", &[], Value::Int(total_kb.saturating_mul(1024)));
        }
    }

    /// The exporter's own numbers.
    fn write_own(&self, encoder: &mut Encoder<'_>) {
        let s = &self.stats;
        let counters: [(&'static str, &str, &AtomicU64); 3] = [
            (
                "proclens_exporter_scrapes_total",
                "Scrapes served.",
                &s.scrapes,
            ),
            (
                "proclens_exporter_containers_vanished_total",
                "Containers left out of a scrape because their cgroup vanished while it was read.",
                &s.vanished,
            ),
            (
                "proclens_exporter_container_errors_total",
                "Containers left out of a scrape because a file could not be read or parsed.",
                &s.failed,
            ),
        ];
        for (name, help, value) in counters {
            encoder.single(
                name,
                help,
                Kind::Counter,
                Value::Int(value.load(Ordering::Relaxed)),
            );
        }
        encoder.family(
            "proclens_exporter_containers",
            "Containers in the last collection (a scrape, or a remote write push).",
            Kind::Gauge,
        );
        encoder.sample(
            "",
            &[],
            Value::Int(s.last_containers.load(Ordering::Relaxed)),
        );
        encoder.family(
            "proclens_exporter_collect_seconds",
            "Time the last collection (a scrape, or a remote write push) took to list and read every container, in seconds.",
            Kind::Gauge,
        );
        let us = s.last_duration_us.load(Ordering::Relaxed);
        encoder.sample("", &[], Value::Float(us as f64 / 1e6));
        if let Some(remote_write) = &self.remote_write {
            remote_write.write(encoder);
        }
        if let Some(fused) = &self.fused {
            fused.write(encoder);
        }
    }
}
