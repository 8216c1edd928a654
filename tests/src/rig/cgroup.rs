//! [`TempCgroup`]: a uniquely named cgroup in every hierarchy a container view depends on, on
//! cgroup v1 (each hierarchy found from mountinfo) and on a unified-only cgroup v2 host.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_cgroup::parse::cpulist::parse_cpulist;
use proclens_cgroup::write::{apply as apply_limits, CpuBandwidth, Limit, LimitUpdate};
use proclens_cgroup::{HostPaths, Layout, Version};

/// v1 controllers a container view reads; a hierarchy carrying any of them gets a directory.
const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"];

/// v2 controllers enabled for the test cgroup, when the root offers them.
const V2_CONTROLLERS: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];

/// A v1 throttle rate far above any disk's (1 TiB/s): a rule that limits nothing.
const UNLIMITED_BPS: u64 = 1 << 40;

/// How long `Drop` keeps killing tasks and retrying `rmdir`.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    /// Mount point of the hierarchy's root (e.g. `/sys/fs/cgroup/memory`).
    pub mount: PathBuf,
    /// v1: controllers from the mount options (`cpu`, `name=systemd`, …). v2: the root's
    /// `cgroup.controllers`.
    pub controllers: Vec<String>,
    /// True for the cgroup2 hierarchy.
    pub unified: bool,
}

impl Hierarchy {
    /// True if `controller` is bound to this hierarchy.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Every cgroup hierarchy mounted in this mount namespace, as `proclens_cgroup`'s
/// [`Layout::discover`] finds them from `/proc/self/mountinfo` (one per hierarchy, the first
/// mount of each).
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let layout = Layout::discover(&HostPaths::default()).context("discover cgroup hierarchies")?;
    Ok(layout
        .hierarchies
        .into_iter()
        .map(|h| Hierarchy {
            mount: h.mount_point,
            controllers: h.controllers,
            unified: h.version == Version::V2,
        })
        .collect())
}

/// The `cgroup.procs` file of the root cgroup of every hierarchy (v1 and v2, named ones too):
/// a process written to all of them is a host process as far as cgroups go.
pub fn root_procs_files() -> Result<Vec<PathBuf>> {
    Ok(hierarchies()?
        .into_iter()
        .map(|h| h.mount.join("cgroup.procs"))
        .collect())
}

/// Limits to set on a new [`TempCgroup`]; build it with [`TempCgroupBuilder::create`].
#[derive(Clone, Debug, Default)]
pub struct TempCgroupBuilder {
    memory_bytes: Option<u64>,
    cpus: Option<String>,
    cfs: Option<(u64, u64)>,
}

impl TempCgroupBuilder {
    /// Memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Allowed CPUs as a kernel cpulist, e.g. `"0"` or `"0-1"` (`cpuset.cpus`).
    pub fn cpus(mut self, cpulist: &str) -> Self {
        self.cpus = Some(cpulist.to_string());
        self
    }

    /// CFS bandwidth: `quota_us` of CPU time per `period_us` (v1 `cpu.cfs_quota_us` and
    /// `cpu.cfs_period_us`, v2 `cpu.max`).
    pub fn cfs_quota(mut self, quota_us: u64, period_us: u64) -> Self {
        self.cfs = Some((quota_us, period_us));
        self
    }

    /// Creates the cgroup directories and writes the limits with `proclens_cgroup`'s write
    /// path. On any error the directories already created are removed again.
    pub fn create(self) -> Result<TempCgroup> {
        let all = hierarchies()?;
        let v1: Vec<&Hierarchy> = all
            .iter()
            .filter(|h| !h.unified && V1_CONTROLLERS.iter().any(|c| h.has(c)))
            .collect();
        let mut cg = TempCgroup {
            name: super::unique_name(),
            dirs: Vec::new(),
        };
        let mut update = LimitUpdate {
            memory_max: self.memory_bytes.map(Limit::Bytes),
            cpu_max: self.cfs.map(|(quota_us, period_us)| CpuBandwidth {
                quota_us: Some(quota_us),
                period_us,
            }),
            cpuset_cpus: self
                .cpus
                .as_deref()
                .map(|cpus| parse_cpulist(cpus).with_context(|| format!("cpulist {cpus:?}")))
                .transpose()?,
            ..LimitUpdate::default()
        };
        if !v1.is_empty() {
            for h in v1 {
                let path = h.mount.join(&cg.name);
                mkdir(&path)?;
                cg.dirs.push(Dir {
                    path,
                    hierarchy: h.clone(),
                });
            }
            // A new v1 cpuset needs cpuset.cpus and cpuset.mems before a task can join.
            if let Some(dir) = cg.dir("cpuset") {
                let parent = dir.parent().context("cpuset dir has a parent")?;
                let parent_list = |file: &str| -> Result<Vec<u32>> {
                    let text = read_trimmed(&parent.join(file))?;
                    parse_cpulist(&text).with_context(|| format!("{file} {text:?}"))
                };
                if update.cpuset_cpus.is_none() {
                    update.cpuset_cpus = Some(parent_list("cpuset.cpus")?);
                }
                update.cpuset_mems = Some(parent_list("cpuset.mems")?);
            } else if self.cpus.is_some() {
                bail!("cpuset limit requested but no v1 cpuset hierarchy is mounted");
            }
        } else {
            let h = all
                .iter()
                .find(|h| h.unified)
                .context("no cgroup hierarchy is mounted (checked /proc/self/mountinfo)")?;
            enable_v2_controllers(&h.mount)?;
            let path = h.mount.join(&cg.name);
            mkdir(&path)?;
            cg.dirs.push(Dir {
                path,
                hierarchy: h.clone(),
            });
        }
        let layout = Layout::discover(&HostPaths::default())?;
        apply_limits(&layout, &layout.set_at(&cg.name), &update)
            .with_context(|| format!("set the limits of {}", cg.name))?;
        Ok(cg)
    }
}

/// Enables the test controllers the v2 cgroup at `root` offers in its `cgroup.subtree_control`
/// (for its children).
fn enable_v2_controllers(root: &Path) -> Result<()> {
    let offered = read_trimmed(&root.join("cgroup.controllers"))?;
    let enabled = read_trimmed(&root.join("cgroup.subtree_control"))?;
    for c in V2_CONTROLLERS {
        let is = |list: &str| list.split_whitespace().any(|x| x == c);
        if is(&offered) && !is(&enabled) {
            write(&root.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
    }
    Ok(())
}

/// A cgroup named `proclens-test-<pid>-<n>` directly under the root of every hierarchy carrying
/// memory, cpu, cpuacct, cpuset, blkio or pids (v1), or the one cgroup2 hierarchy on a
/// unified-only host. `Drop` kills every task left in it, waits until it is empty and removes it.
#[derive(Debug)]
pub struct TempCgroup {
    name: String,
    dirs: Vec<Dir>,
}

/// One directory of a [`TempCgroup`].
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    hierarchy: Hierarchy,
}

impl TempCgroup {
    /// A builder for a cgroup with the given limits.
    pub fn builder() -> TempCgroupBuilder {
        TempCgroupBuilder::default()
    }

    /// The cgroup's path below each hierarchy's root (`proclens-test-<pid>-<n>`, or
    /// `proclens-test-<pid>-<n>/<child>` for a child).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates child cgroup `name` (e.g. `init.scope`) in every directory of this one, with no
    /// limits of its own (v1 cpuset: the parent's cpus and mems). Drop it before its parent.
    pub fn child(&self, name: &str) -> Result<TempCgroup> {
        let mut child = TempCgroup {
            name: format!("{}/{name}", self.name),
            dirs: Vec::new(),
        };
        for d in &self.dirs {
            let path = d.path.join(name);
            mkdir(&path)?;
            child.dirs.push(Dir {
                path: path.clone(),
                hierarchy: d.hierarchy.clone(),
            });
            if !d.hierarchy.unified && d.hierarchy.has("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    write(&path.join(file), &read_trimmed(&d.path.join(file))?)?;
                }
            }
        }
        Ok(child)
    }

    /// On cgroup v2, passes the test controllers this cgroup has on to its children (a child
    /// has memory, cpu, cpuset, io and pids files only then); nothing to do on v1.
    pub fn enable_controllers_for_children(&self) -> Result<()> {
        for d in self.dirs.iter().filter(|d| d.hierarchy.unified) {
            enable_v2_controllers(&d.path)?;
        }
        Ok(())
    }

    /// The cgroup's directory in the hierarchy carrying `controller` (any directory on v2).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.unified || d.hierarchy.has(controller))
            .map(|d| d.path.as_path())
    }

    /// The `cgroup.procs` file of every directory: writing a pid to all of them moves it in.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` into the cgroup in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        for file in self.procs_files() {
            write(&file, &pid.to_string())?;
        }
        Ok(())
    }

    /// The pids in the cgroup, over all its directories, sorted and deduplicated.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let mut pids = BTreeSet::new();
        for d in &self.dirs {
            pids.extend(read_pids(&d.path.join("cgroup.procs"))?);
        }
        Ok(pids.into_iter().collect())
    }

    /// Makes the kernel count this cgroup's I/O on block device `dev` (`MAJ:MIN`) in its
    /// statistics. cgroup v1 `blkio.throttle.io_service_bytes` and `io_serviced` count only on
    /// a disk whose throttling was ever configured (seen on 6.18: a fresh cgroup's 1 MiB read
    /// showed `Total 0`; the kernel counts in blk-throttle, which a disk gets with its first
    /// rule and keeps until it goes away): this writes read and write rules of 1 TiB/s, which
    /// limit nothing, for `dev` in this cgroup. v2 `io.stat` counts without rules: nothing to do.
    pub fn count_io_on(&self, dev: &str) -> Result<()> {
        let Some(dir) = self.dir("blkio") else {
            bail!("no blkio hierarchy and no cgroup v2 hierarchy is mounted");
        };
        if !dir.join("blkio.throttle.io_service_bytes").exists() {
            return Ok(());
        }
        for file in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
        ] {
            write(&dir.join(file), &format!("{dev} {UNLIMITED_BPS}"))?;
        }
        Ok(())
    }

    /// Bytes this cgroup read from block device `dev` (`MAJ:MIN`), as the kernel counts them:
    /// v1 `blkio.throttle.io_service_bytes` (`MAJ:MIN Read N`), v2 `io.stat` (`rbytes=N`); 0
    /// where the device has no line. On v1, see [`Self::count_io_on`].
    pub fn io_read_bytes(&self, dev: &str) -> Result<u64> {
        let dir = self
            .dir("blkio")
            .context("no blkio hierarchy and no cgroup v2 hierarchy is mounted")?;
        let v1 = dir.join("blkio.throttle.io_service_bytes");
        let (path, key) = if v1.exists() {
            (v1, "Read")
        } else {
            (dir.join("io.stat"), "rbytes")
        };
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let value = text.lines().find_map(|l| {
            let rest = l.strip_prefix(dev)?.strip_prefix(' ')?;
            match rest.split_once(' ') {
                Some((k, v)) if k == key => Some(v.trim()),
                _ => rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')),
            }
        });
        match value {
            Some(v) => v
                .parse()
                .with_context(|| format!("{}: {key} of {dev} is {v:?}", path.display())),
            None => Ok(0),
        }
    }

    /// Kills the tasks of one directory until it is empty, then removes it.
    fn remove(dir: &Path) -> Result<()> {
        let procs = dir.join("cgroup.procs");
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        loop {
            let pids = match read_pids(&procs) {
                Ok(pids) => pids,
                Err(_) if !dir.exists() => return Ok(()),
                Err(err) => return Err(err),
            };
            if pids.is_empty() {
                match fs::remove_dir(dir) {
                    Ok(()) => return Ok(()),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    // Exiting tasks keep the cgroup busy for a moment after they leave procs.
                    Err(err) if Instant::now() >= deadline => {
                        return Err(err).context(format!("rmdir {}", dir.display()));
                    }
                    Err(_) => {}
                }
            } else {
                if Instant::now() >= deadline {
                    bail!(
                        "{} still has tasks {pids:?} after {CLEANUP_TIMEOUT:?}",
                        dir.display()
                    );
                }
                for pid in pids {
                    let _ = super::process::signal(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            if let Err(err) = Self::remove(&d.path) {
                eprintln!(
                    "!!! TempCgroup {}: cleanup failed, cgroup leaked: {err:#}",
                    self.name
                );
            }
        }
    }
}

/// Reads a `cgroup.procs`-style file of one pid per line.
fn read_pids(path: &Path) -> Result<Vec<u32>> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .map(|l| {
            l.trim()
                .parse()
                .with_context(|| format!("{}: line {l:?}", path.display()))
        })
        .collect()
}

/// Reads a one-value file, without the trailing newline.
fn read_trimmed(path: &Path) -> Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Writes `value` to a cgroup control file with one `write(2)`.
fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("write {value:?} to {}", path.display()))
}

/// Creates one cgroup directory; it must not exist yet.
fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("mkdir {}", path.display()))
}
