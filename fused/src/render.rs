//! Produces the bytes of each file for a viewer: reads the host files and the container's cgroup
//! state (I/O), then calls the pure renderers of `proclens-view`.

use crate::caller::{ContainerCaller, Viewer};
use crate::error::{Result, ViewError};
use crate::recent::Recent;
use crate::sampler::LoadTracker;
use crate::shared::SharedState;
use proclens_cgroup::model::host::{Cpuinfo, Meminfo};
use proclens_cgroup::parse::cpulist::parse_cpulist;
use proclens_cgroup::parse::host::{
    parse_cpuinfo, parse_diskstats_names, parse_meminfo, parse_stat, parse_uptime,
};
use proclens_cgroup::USER_HZ;
use proclens_cgroup::{Collector, CpuQuota, CpuUsage, Error, MemorySnapshot, ParseError, Parts};
use proclens_view::{cpuinfo, diskstats, loadavg, meminfo, pressure, stat, swaps, sys_cpu, uptime};
use proclens_view::{visible_cpus, CpuView};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A file whose content proclens computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    /// proc/cpuinfo
    Cpuinfo,
    /// proc/diskstats
    Diskstats,
    /// proc/loadavg
    Loadavg,
    /// proc/meminfo
    Meminfo,
    /// proc/slabinfo
    Slabinfo,
    /// proc/stat
    Stat,
    /// proc/swaps
    Swaps,
    /// proc/uptime
    Uptime,
    /// proc/pressure/cpu
    PressureCpu,
    /// proc/pressure/io
    PressureIo,
    /// proc/pressure/memory
    PressureMemory,
    /// sys/devices/system/cpu/online
    CpuOnline,
    /// sys/devices/system/cpu/possible
    CpuPossible,
    /// sys/devices/system/cpu/present
    CpuPresent,
}

impl Computed {
    /// The host file the host's view passes through.
    fn host_path(self, proc_root: &Path, sys_root: &Path) -> PathBuf {
        let cpu = sys_root.join("devices/system/cpu");
        match self {
            Computed::Cpuinfo => proc_root.join("cpuinfo"),
            Computed::Diskstats => proc_root.join("diskstats"),
            Computed::Loadavg => proc_root.join("loadavg"),
            Computed::Meminfo => proc_root.join("meminfo"),
            Computed::Slabinfo => proc_root.join("slabinfo"),
            Computed::Stat => proc_root.join("stat"),
            Computed::Swaps => proc_root.join("swaps"),
            Computed::Uptime => proc_root.join("uptime"),
            Computed::PressureCpu => proc_root.join("pressure/cpu"),
            Computed::PressureIo => proc_root.join("pressure/io"),
            Computed::PressureMemory => proc_root.join("pressure/memory"),
            Computed::CpuOnline => cpu.join("online"),
            Computed::CpuPossible => cpu.join("possible"),
            Computed::CpuPresent => cpu.join("present"),
        }
    }
}

/// How long host-wide inputs that hardly change are reused ([`crate::recent`]): the CPU
/// descriptions (static but for their MHz) for a second, the online CPU list for a tenth. The
/// host's meminfo and stat are read for every request: their host-wide lines (ctxt, processes,
/// Committed_AS, ...) must be at least as new as anything read before the request.
const HOST_CPUINFO_AGE: Duration = Duration::from_secs(1);
const HOST_ONLINE_AGE: Duration = Duration::from_millis(100);

/// Host /proc/cpuinfo: parsed, or the raw text for layouts the parser does not know.
#[derive(Debug)]
enum HostCpuinfo {
    Parsed(Cpuinfo),
    Raw(String),
}

/// Renders computed files.
#[derive(Debug)]
pub struct Renderer {
    reader: Collector,
    cpu_view: CpuView,
    shared: Arc<SharedState>,
    host_cpuinfo: Recent<HostCpuinfo>,
    host_online: Recent<Vec<u32>>,
    load: Arc<LoadTracker>,
}

fn parse_err(path: &Path) -> impl FnOnce(ParseError) -> Error + '_ {
    move |e| Error::parse(path, e)
}

impl Renderer {
    /// A renderer over `reader`; loadavg and the task lines of stat come from `load`.
    pub fn new(
        reader: Collector,
        cpu_view: CpuView,
        shared: Arc<SharedState>,
        load: Arc<LoadTracker>,
    ) -> Self {
        Renderer {
            reader,
            cpu_view,
            shared,
            host_cpuinfo: Recent::new(HOST_CPUINFO_AGE),
            host_online: Recent::new(HOST_ONLINE_AGE),
            load,
        }
    }

    /// The collector the views read containers through.
    pub fn reader(&self) -> &Collector {
        &self.reader
    }

    fn proc_file(&self, name: &str) -> PathBuf {
        self.reader.host_paths().proc_root.join(name)
    }

    /// The host's online CPUs.
    pub fn host_online(&self) -> Result<Arc<Vec<u32>>> {
        self.host_online
            .get(|| {
                let path = self
                    .reader
                    .host_paths()
                    .sys_root
                    .join("devices/system/cpu/online");
                parse_cpulist(&self.reader.read(&path)?).map_err(parse_err(&path))
            })
            .map_err(ViewError::from)
    }

    /// The container's CPU time and the host CPUs it sees, in container order: one snapshot.
    fn cpu_and_visible(&self, caller: &ContainerCaller) -> Result<(CpuUsage, Vec<u32>)> {
        let snap = self
            .reader
            .snapshot(&caller.set, Parts::CPU_LIMITS | Parts::CPU_USAGE)?;
        let visible = self.visible_of(snap.cpuset.as_deref(), snap.cpu_quota)?;
        Ok((snap.cpu_usage.unwrap_or_default(), visible))
    }

    /// The host CPUs `caller` sees, in container order.
    pub fn visible(&self, caller: &ContainerCaller) -> Result<Vec<u32>> {
        let snap = self.reader.snapshot(&caller.set, Parts::CPU_LIMITS)?;
        self.visible_of(snap.cpuset.as_deref(), snap.cpu_quota)
    }

    /// The container's memory (default values without a memory controller).
    fn memory(&self, caller: &ContainerCaller) -> Result<MemorySnapshot> {
        let snap = self.reader.snapshot(&caller.set, Parts::MEMORY)?;
        Ok(snap.memory.unwrap_or_default())
    }

    /// The online host CPUs a container with `cpuset` and `quota` sees, in container order.
    fn visible_of(&self, cpuset: Option<&[u32]>, quota: Option<CpuQuota>) -> Result<Vec<u32>> {
        Ok(visible_cpus(
            cpuset,
            quota,
            &self.host_online()?,
            self.cpu_view,
        ))
    }

    /// Renders `file` for `viewer`.
    pub fn render(&self, file: Computed, viewer: &Viewer) -> Result<Vec<u8>> {
        let caller = match viewer {
            Viewer::Host => {
                let paths = self.reader.host_paths();
                let path = file.host_path(&paths.proc_root, &paths.sys_root);
                return std::fs::read(&path).map_err(|e| Error::io(&path, e).into());
            }
            Viewer::Container(caller) => caller,
        };
        let text = match file {
            Computed::Meminfo => self.meminfo(caller)?,
            Computed::Cpuinfo => self.cpuinfo(caller)?,
            Computed::Stat => self.stat(caller)?,
            Computed::Uptime => self.uptime(caller)?,
            Computed::Loadavg => self.loadavg(caller)?,
            Computed::Swaps => self.swaps(caller)?,
            Computed::Diskstats => self.diskstats(caller)?,
            Computed::Slabinfo => self.slabinfo(caller)?,
            Computed::PressureCpu | Computed::PressureIo | Computed::PressureMemory => {
                self.pressure(file, caller)?
            }
            Computed::CpuOnline | Computed::CpuPossible | Computed::CpuPresent => {
                sys_cpu::render_cpu_range(self.visible(caller)?.len())
            }
        };
        Ok(text.into_bytes())
    }

    /// The host's /proc/meminfo text, read afresh.
    fn host_meminfo_text(&self) -> Result<String> {
        Ok(self.reader.read(&self.proc_file("meminfo"))?)
    }

    fn host_meminfo<'t>(&self, text: &'t str) -> Result<Meminfo<'t>> {
        // The path is built only for the error: the read already built it once.
        parse_meminfo(text).map_err(|e| Error::parse(&self.proc_file("meminfo"), e).into())
    }

    fn meminfo(&self, caller: &ContainerCaller) -> Result<String> {
        let text = self.host_meminfo_text()?;
        let host = self.host_meminfo(&text)?;
        Ok(meminfo::render_meminfo(&host, &self.memory(caller)?))
    }

    fn cpuinfo(&self, caller: &ContainerCaller) -> Result<String> {
        let host = self.host_cpuinfo.get(|| {
            let text = self.reader.read(&self.proc_file("cpuinfo"))?;
            Ok::<_, Error>(match parse_cpuinfo(&text) {
                Ok(parsed) => HostCpuinfo::Parsed(parsed),
                // Layouts other than x86's: better the host's text than nothing.
                Err(_) => HostCpuinfo::Raw(text),
            })
        })?;
        match &*host {
            HostCpuinfo::Parsed(host) => Ok(cpuinfo::render_cpuinfo(host, &self.visible(caller)?)),
            HostCpuinfo::Raw(text) => Ok(text.clone()),
        }
    }

    fn stat(&self, caller: &ContainerCaller) -> Result<String> {
        let path = self.proc_file("stat");
        let text = self.reader.read(&path)?;
        let host = parse_stat(&text).map_err(parse_err(&path))?;
        let (usage, visible) = self.cpu_and_visible(caller)?;
        let rows = stat::container_cpu_rows(&host, &visible, &usage);
        let (id, key) = caller.identity(&self.reader)?;
        let (_, tasks) = self.load.current(&id, key)?;
        let rows = self.shared.with_container(key, |s| {
            let rows = stat::monotonic(&s.stat_rows, rows);
            s.stat_rows.clone_from(&rows);
            rows
        });
        Ok(stat::render_stat(&host, &rows, &tasks))
    }

    fn uptime(&self, caller: &ContainerCaller) -> Result<String> {
        let path = self.proc_file("uptime");
        let host = parse_uptime(&self.reader.read(&path)?).map_err(parse_err(&path))?;
        let (usage, visible) = self.cpu_and_visible(caller)?;
        let busy_secs = (usage.user_ns + usage.system_ns) as f64 / 1e9;
        let start_secs = caller.start_ticks(&self.reader)? as f64 / USER_HZ as f64;
        let (up, idle) =
            uptime::container_uptime(host.uptime_secs, start_secs, visible.len(), busy_secs);
        Ok(uptime::render_uptime(up, idle))
    }

    fn loadavg(&self, caller: &ContainerCaller) -> Result<String> {
        let (id, key) = caller.identity(&self.reader)?;
        let (load, tasks) = self.load.current(&id, key)?;
        Ok(loadavg::render_loadavg(
            &load,
            tasks.running,
            tasks.total,
            caller.ns_pid,
        ))
    }

    fn swaps(&self, caller: &ContainerCaller) -> Result<String> {
        let text = self.host_meminfo_text()?;
        let host = self.host_meminfo(&text)?;
        let memory = self.memory(caller)?;
        let (total, used) = meminfo::container_swap_kb(&host, &memory).unwrap_or((
            host.get("SwapTotal").unwrap_or(0),
            host.get("SwapTotal")
                .unwrap_or(0)
                .saturating_sub(host.get("SwapFree").unwrap_or(0)),
        ));
        Ok(swaps::render_swaps(total, used))
    }

    fn diskstats(&self, caller: &ContainerCaller) -> Result<String> {
        let path = self.proc_file("diskstats");
        let names = parse_diskstats_names(&self.reader.read(&path)?).map_err(parse_err(&path))?;
        Ok(diskstats::render_diskstats(
            &self
                .reader
                .snapshot(&caller.set, Parts::IO)?
                .io
                .unwrap_or_default()
                .devices,
            &names,
        ))
    }

    fn slabinfo(&self, caller: &ContainerCaller) -> Result<String> {
        // v1 keeps per-cgroup slab statistics; otherwise only the format header is shown.
        if let Some((_, dir)) = self
            .reader
            .dir(&caller.set, proclens_cgroup::Controller::Memory)
        {
            // Recent kernels keep the file but leave it empty: then show the header.
            if let Ok(text) = std::fs::read_to_string(dir.join("memory.kmem.slabinfo")) {
                if !text.trim().is_empty() {
                    return Ok(text);
                }
            }
        }
        let host = std::fs::read_to_string(self.proc_file("slabinfo")).unwrap_or_default();
        let header: String = host.lines().take(2).map(|l| format!("{l}\n")).collect();
        Ok(header)
    }

    fn pressure(&self, file: Computed, caller: &ContainerCaller) -> Result<String> {
        let psi = self.reader.snapshot(&caller.set, Parts::PRESSURE)?.pressure;
        let psi = psi.and_then(|p| match file {
            Computed::PressureCpu => p.cpu,
            Computed::PressureIo => p.io,
            _ => p.memory,
        });
        match psi {
            Some(psi) => Ok(pressure::render_pressure(&psi)),
            None => Err(ViewError::NoPressure),
        }
    }
}
