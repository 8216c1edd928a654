//! The catalogue of per-container metric families: cAdvisor's names where the meaning is the
//! same (DESIGN §5), each with what it reads and how a container's sample becomes its series.
//! Pure: a [`ContainerSample`] in, series out through an [`Encoder`].

use crate::encode::{Encoder, Kind, Value};
use proclens_cgroup::model::{ContainerSnapshot, NetDevStat, NetworkSnapshot, Psi};
use proclens_cgroup::Parts;
use std::sync::Arc;

/// Everything read about one container in one scrape.
#[derive(Debug, Clone, Default)]
pub struct ContainerSample {
    /// Its label list, escaped and comma-separated (`id="…",pod="…"`), built once per scrape.
    pub labels: String,
    /// Its cgroup files.
    pub snapshot: ContainerSnapshot,
    /// Processes in its own cgroup, when read.
    pub processes: Option<u64>,
    /// Its network namespace's counters (shared by the containers of one pod); `None` for a
    /// host-network container or when not read.
    pub network: Option<Arc<NetworkSnapshot>>,
    /// When its cgroup was created, seconds since the epoch.
    pub start_time_seconds: Option<f64>,
}

/// What a scrape knows besides the containers.
#[derive(Debug, Clone, Default)]
pub struct ScrapeContext {
    /// Block device names by (major, minor), for the `device` label (`/dev/vda`).
    pub devices: Vec<((u32, u32), String)>,
    /// The scrape's time, seconds since the epoch (`container_last_seen`).
    pub now_seconds: f64,
}

impl ScrapeContext {
    /// The `device` label of a block device: `/dev/<name>`, or `major:minor` when the host does
    /// not list it.
    fn device_label(&self, major: u32, minor: u32) -> String {
        match self.devices.iter().find(|(id, _)| *id == (major, minor)) {
            Some((_, name)) => format!("/dev/{name}"),
            None => format!("{major}:{minor}"),
        }
    }
}

/// What a family reads, beyond nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Parts of the cgroup snapshot.
    Snapshot(Parts),
    /// The container's `cgroup.procs`.
    Processes,
    /// Its network namespace (needs a process, so also `cgroup.procs`).
    Network,
    /// Its cgroup directory's creation time.
    StartTime,
    /// Nothing (the scrape's clock).
    Clock,
}

/// Writes one container's series of one family.
pub struct Series<'e, 'a> {
    encoder: &'e mut Encoder<'a>,
    labels: &'e str,
}

impl Series<'_, '_> {
    /// One series with the container's labels plus `extra`.
    pub fn put(&mut self, extra: &[(&str, &str)], value: Value) {
        self.encoder.sample(self.labels, extra, value);
    }
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    /// Its name (counters end in `_total`, except cAdvisor's `container_memory_failcnt`).
    pub name: &'static str,
    /// Its HELP text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// What it reads.
    pub source: Source,
    /// Writes a container's series (none when the kernel does not give the value).
    pub emit: fn(&ContainerSample, &ScrapeContext, &mut Series<'_, '_>),
}

impl Family {
    /// Writes this family's series for one container.
    pub fn write(
        &self,
        sample: &ContainerSample,
        context: &ScrapeContext,
        encoder: &mut Encoder<'_>,
    ) {
        let mut series = Series {
            encoder,
            labels: &sample.labels,
        };
        (self.emit)(sample, context, &mut series);
    }
}

fn seconds_from_ns(ns: u64) -> Value {
    Value::Float(ns as f64 / 1e9)
}

fn seconds_from_us(us: u64) -> Value {
    Value::Float(us as f64 / 1e6)
}

fn put_int(series: &mut Series<'_, '_>, value: Option<u64>) {
    if let Some(v) = value {
        series.put(&[], Value::Int(v));
    }
}

fn psi_total(series: &mut Series<'_, '_>, psi: Option<&Psi>, full: bool) {
    let line = psi.and_then(|p| if full { p.full } else { Some(p.some) });
    if let Some(line) = line {
        series.put(&[], seconds_from_us(line.total_us));
    }
}

fn per_interface(
    sample: &ContainerSample,
    series: &mut Series<'_, '_>,
    value: fn(&NetDevStat) -> u64,
) {
    if let Some(network) = &sample.network {
        for interface in &network.interfaces {
            series.put(
                &[("interface", &interface.interface)],
                Value::Int(value(interface)),
            );
        }
    }
}

fn per_device(
    sample: &ContainerSample,
    context: &ScrapeContext,
    series: &mut Series<'_, '_>,
    value: fn(&proclens_cgroup::model::IoDeviceStat) -> u64,
) {
    if let Some(io) = &sample.snapshot.io {
        for device in &io.devices {
            let label = context.device_label(device.major, device.minor);
            series.put(&[("device", &label)], Value::Int(value(device)));
        }
    }
}

const MEMORY: Source = Source::Snapshot(Parts::MEMORY);
const MEMORY_DETAIL: Source = Source::Snapshot(Parts::MEMORY_DETAIL);
const CPU_USAGE: Source = Source::Snapshot(Parts::CPU_USAGE);
const CPU_DETAIL: Source = Source::Snapshot(Parts::CPU_DETAIL);
const IO: Source = Source::Snapshot(Parts::IO);
const PRESSURE: Source = Source::Snapshot(Parts::PRESSURE);
const PIDS: Source = Source::Snapshot(Parts::PIDS);

/// Every per-container family, in exposition order.
pub static FAMILIES: &[Family] = &[
    Family {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative CPU time consumed, in seconds.",
        kind: Kind::Counter,
        source: CPU_USAGE,
        emit: |s, _, out| {
            if let Some(cpu) = &s.snapshot.cpu_usage {
                out.put(&[("cpu", "total")], seconds_from_ns(cpu.total_ns));
            }
        },
    },
    Family {
        name: "container_cpu_user_seconds_total",
        help: "Cumulative CPU time consumed in user mode, in seconds.",
        kind: Kind::Counter,
        source: CPU_USAGE,
        emit: |s, _, out| {
            if let Some(cpu) = &s.snapshot.cpu_usage {
                out.put(&[], seconds_from_ns(cpu.user_ns));
            }
        },
    },
    Family {
        name: "container_cpu_system_seconds_total",
        help: "Cumulative CPU time consumed in kernel mode, in seconds.",
        kind: Kind::Counter,
        source: CPU_USAGE,
        emit: |s, _, out| {
            if let Some(cpu) = &s.snapshot.cpu_usage {
                out.put(&[], seconds_from_ns(cpu.system_ns));
            }
        },
    },
    Family {
        name: "container_cpu_cfs_periods_total",
        help: "Number of elapsed CFS enforcement periods.",
        kind: Kind::Counter,
        source: CPU_DETAIL,
        emit: |s, _, out| {
            let t = s.snapshot.cpu_detail.as_ref().and_then(|d| d.throttling);
            put_int(out, t.map(|t| t.periods));
        },
    },
    Family {
        name: "container_cpu_cfs_throttled_periods_total",
        help: "Number of CFS periods in which the container was throttled.",
        kind: Kind::Counter,
        source: CPU_DETAIL,
        emit: |s, _, out| {
            let t = s.snapshot.cpu_detail.as_ref().and_then(|d| d.throttling);
            put_int(out, t.map(|t| t.throttled_periods));
        },
    },
    Family {
        name: "container_cpu_cfs_throttled_seconds_total",
        help: "Total time the container was throttled by CFS, in seconds.",
        kind: Kind::Counter,
        source: CPU_DETAIL,
        emit: |s, _, out| {
            let t = s.snapshot.cpu_detail.as_ref().and_then(|d| d.throttling);
            if let Some(t) = t {
                out.put(&[], seconds_from_ns(t.throttled_ns));
            }
        },
    },
    Family {
        name: "container_memory_usage_bytes",
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        kind: Kind::Gauge,
        source: MEMORY,
        emit: |s, _, out| put_int(out, s.snapshot.memory.as_ref().map(|m| m.usage_bytes)),
    },
    Family {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes: usage minus inactive file pages.",
        kind: Kind::Gauge,
        source: MEMORY,
        emit: |s, _, out| {
            put_int(out, s.snapshot.memory.as_ref().map(|m| m.working_set_bytes()))
        },
    },
    Family {
        name: "container_memory_rss",
        help: "Size of anonymous memory (RSS) in bytes.",
        kind: Kind::Gauge,
        source: MEMORY,
        emit: |s, _, out| put_int(out, s.snapshot.memory.as_ref().map(|m| m.stat.anon_bytes)),
    },
    Family {
        name: "container_memory_cache",
        help: "Size of the page cache charged to the container, in bytes.",
        kind: Kind::Gauge,
        source: MEMORY,
        emit: |s, _, out| put_int(out, s.snapshot.memory.as_ref().map(|m| m.stat.file_bytes)),
    },
    Family {
        name: "container_memory_mapped_file",
        help: "Size of memory-mapped files, in bytes.",
        kind: Kind::Gauge,
        source: MEMORY,
        emit: |s, _, out| {
            put_int(out, s.snapshot.memory.as_ref().map(|m| m.stat.mapped_file_bytes))
        },
    },
    Family {
        name: "container_memory_swap",
        help: "Swap usage in bytes (absent where the kernel does not account swap).",
        kind: Kind::Gauge,
        source: MEMORY,
        emit: |s, _, out| {
            let memory = s.snapshot.memory.as_ref().filter(|m| m.swap_accounted);
            put_int(out, memory.map(|m| m.swap_usage_bytes));
        },
    },
    Family {
        name: "container_memory_max_usage_bytes",
        help: "Highest memory usage recorded, in bytes (where the kernel records it).",
        kind: Kind::Gauge,
        source: MEMORY_DETAIL,
        emit: |s, _, out| put_int(out, s.snapshot.memory_detail.and_then(|d| d.peak_bytes)),
    },
    Family {
        name: "container_memory_failcnt",
        help: "Number of times memory usage hit the limit.",
        kind: Kind::Counter,
        source: MEMORY_DETAIL,
        emit: |s, _, out| put_int(out, s.snapshot.memory_detail.map(|d| d.events.max)),
    },
    Family {
        name: "container_oom_events_total",
        help: "Number of processes of the container killed by the OOM killer.",
        kind: Kind::Counter,
        source: MEMORY_DETAIL,
        emit: |s, _, out| {
            put_int(out, s.snapshot.memory_detail.and_then(|d| d.events.oom_kill))
        },
    },
    Family {
        name: "container_fs_reads_bytes_total",
        help: "Cumulative bytes read from block devices (on cgroup v1 only devices the kernel accounts: see the docs).",
        kind: Kind::Counter,
        source: IO,
        emit: |s, c, out| per_device(s, c, out, |d| d.read_bytes),
    },
    Family {
        name: "container_fs_writes_bytes_total",
        help: "Cumulative bytes written to block devices.",
        kind: Kind::Counter,
        source: IO,
        emit: |s, c, out| per_device(s, c, out, |d| d.write_bytes),
    },
    Family {
        name: "container_fs_reads_total",
        help: "Cumulative count of block device reads completed.",
        kind: Kind::Counter,
        source: IO,
        emit: |s, c, out| per_device(s, c, out, |d| d.read_ios),
    },
    Family {
        name: "container_fs_writes_total",
        help: "Cumulative count of block device writes completed.",
        kind: Kind::Counter,
        source: IO,
        emit: |s, c, out| per_device(s, c, out, |d| d.write_ios),
    },
    Family {
        name: "container_network_receive_bytes_total",
        help: "Cumulative bytes received.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.rx_bytes),
    },
    Family {
        name: "container_network_receive_packets_total",
        help: "Cumulative packets received.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.rx_packets),
    },
    Family {
        name: "container_network_receive_errors_total",
        help: "Cumulative errors while receiving.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.rx_errors),
    },
    Family {
        name: "container_network_receive_packets_dropped_total",
        help: "Cumulative received packets dropped.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.rx_dropped),
    },
    Family {
        name: "container_network_transmit_bytes_total",
        help: "Cumulative bytes transmitted.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.tx_bytes),
    },
    Family {
        name: "container_network_transmit_packets_total",
        help: "Cumulative packets transmitted.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.tx_packets),
    },
    Family {
        name: "container_network_transmit_errors_total",
        help: "Cumulative errors while transmitting.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.tx_errors),
    },
    Family {
        name: "container_network_transmit_packets_dropped_total",
        help: "Cumulative packets dropped while transmitting.",
        kind: Kind::Counter,
        source: Source::Network,
        emit: |s, _, out| per_interface(s, out, |i| i.tx_dropped),
    },
    Family {
        name: "container_pressure_cpu_waiting_seconds_total",
        help: "Total time tasks waited for CPU (PSI some), in seconds; cgroup v2 only.",
        kind: Kind::Counter,
        source: PRESSURE,
        emit: |s, _, out| {
            psi_total(out, s.snapshot.pressure.as_ref().and_then(|p| p.cpu.as_ref()), false)
        },
    },
    Family {
        name: "container_pressure_cpu_stalled_seconds_total",
        help: "Total time all tasks stalled on CPU (PSI full), in seconds; cgroup v2 only.",
        kind: Kind::Counter,
        source: PRESSURE,
        emit: |s, _, out| {
            psi_total(out, s.snapshot.pressure.as_ref().and_then(|p| p.cpu.as_ref()), true)
        },
    },
    Family {
        name: "container_pressure_memory_waiting_seconds_total",
        help: "Total time tasks waited for memory (PSI some), in seconds; cgroup v2 only.",
        kind: Kind::Counter,
        source: PRESSURE,
        emit: |s, _, out| {
            psi_total(out, s.snapshot.pressure.as_ref().and_then(|p| p.memory.as_ref()), false)
        },
    },
    Family {
        name: "container_pressure_memory_stalled_seconds_total",
        help: "Total time all tasks stalled on memory (PSI full), in seconds; cgroup v2 only.",
        kind: Kind::Counter,
        source: PRESSURE,
        emit: |s, _, out| {
            psi_total(out, s.snapshot.pressure.as_ref().and_then(|p| p.memory.as_ref()), true)
        },
    },
    Family {
        name: "container_pressure_io_waiting_seconds_total",
        help: "Total time tasks waited for I/O (PSI some), in seconds; cgroup v2 only.",
        kind: Kind::Counter,
        source: PRESSURE,
        emit: |s, _, out| {
            psi_total(out, s.snapshot.pressure.as_ref().and_then(|p| p.io.as_ref()), false)
        },
    },
    Family {
        name: "container_pressure_io_stalled_seconds_total",
        help: "Total time all tasks stalled on I/O (PSI full), in seconds; cgroup v2 only.",
        kind: Kind::Counter,
        source: PRESSURE,
        emit: |s, _, out| {
            psi_total(out, s.snapshot.pressure.as_ref().and_then(|p| p.io.as_ref()), true)
        },
    },
    Family {
        name: "container_spec_cpu_quota",
        help: "CPU quota of the container's own cgroup, in microseconds per period (absent when unlimited).",
        kind: Kind::Gauge,
        source: CPU_DETAIL,
        emit: |s, _, out| {
            let own = s.snapshot.cpu_detail.as_ref().and_then(|d| d.own_max);
            put_int(out, own.and_then(|m| m.quota_us));
        },
    },
    Family {
        name: "container_spec_cpu_period",
        help: "CPU CFS period of the container's own cgroup, in microseconds.",
        kind: Kind::Gauge,
        source: CPU_DETAIL,
        emit: |s, _, out| {
            let own = s.snapshot.cpu_detail.as_ref().and_then(|d| d.own_max);
            put_int(out, own.map(|m| m.period_us));
        },
    },
    Family {
        name: "container_spec_cpu_shares",
        help: "CPU shares of the container (cgroup v2 weight converted to shares).",
        kind: Kind::Gauge,
        source: CPU_DETAIL,
        emit: |s, _, out| {
            let weight = s.snapshot.cpu_detail.as_ref().and_then(|d| d.weight);
            put_int(out, weight.map(|w| w.shares()));
        },
    },
    Family {
        name: "container_spec_memory_limit_bytes",
        help: "Memory limit of the container's own cgroup, in bytes (absent when unlimited).",
        kind: Kind::Gauge,
        source: MEMORY_DETAIL,
        emit: |s, _, out| put_int(out, s.snapshot.memory_detail.and_then(|d| d.own_limit_bytes)),
    },
    Family {
        name: "container_spec_memory_swap_limit_bytes",
        help: "Swap limit of the container's own cgroup, in bytes (absent when unlimited or not accounted).",
        kind: Kind::Gauge,
        source: MEMORY_DETAIL,
        emit: |s, _, out| {
            put_int(out, s.snapshot.memory_detail.and_then(|d| d.own_swap_limit_bytes))
        },
    },
    Family {
        name: "container_spec_memory_high_bytes",
        help: "memory.high of the container's own cgroup, in bytes (cgroup v2; absent when max).",
        kind: Kind::Gauge,
        source: MEMORY_DETAIL,
        emit: |s, _, out| put_int(out, s.snapshot.memory_detail.and_then(|d| d.high_bytes)),
    },
    Family {
        name: "container_processes",
        help: "Number of processes in the container's own cgroup.",
        kind: Kind::Gauge,
        source: Source::Processes,
        emit: |s, _, out| put_int(out, s.processes),
    },
    Family {
        name: "container_threads",
        help: "Number of threads (tasks) in the container, sub-cgroups included.",
        kind: Kind::Gauge,
        source: PIDS,
        emit: |s, _, out| put_int(out, s.snapshot.pids.map(|p| p.current)),
    },
    Family {
        name: "container_threads_max",
        help: "Maximum number of threads allowed (pids.max; absent when unlimited).",
        kind: Kind::Gauge,
        source: PIDS,
        emit: |s, _, out| put_int(out, s.snapshot.pids.and_then(|p| p.limit)),
    },
    Family {
        name: "container_start_time_seconds",
        help: "When the container's cgroup was created, in seconds since the epoch.",
        kind: Kind::Gauge,
        source: Source::StartTime,
        emit: |s, _, out| {
            if let Some(t) = s.start_time_seconds {
                out.put(&[], Value::Float(t));
            }
        },
    },
    Family {
        name: "container_last_seen",
        help: "When the exporter last saw the container, in seconds since the epoch.",
        kind: Kind::Gauge,
        source: Source::Clock,
        emit: |_, c, out| out.put(&[], Value::Float(c.now_seconds)),
    },
];
