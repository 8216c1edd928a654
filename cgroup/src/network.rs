//! What a container is beyond its cgroup files: its processes (v1 and v2 `cgroup.procs`), the
//! network counters of the namespace they run in, and when its cgroup was created.

use crate::collector::Collector;
use crate::error::{Error, ParseError, Result};
use crate::files::read_file;
use crate::layout::{join_cgroup, CgroupSet};
use crate::model::NetworkSnapshot;
use crate::parse::host::parse_net_dev;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

impl Collector {
    /// The directory of the container's cgroup in the identity hierarchy (the one its `id`
    /// path comes from, [`Collector::list`]), else in the first hierarchy where the set has a
    /// path (a set read by path may lack the identity hierarchy).
    fn identity_dir(&self, set: &CgroupSet) -> Option<PathBuf> {
        let layout = self.layout();
        let index = self
            .identity_hierarchy()
            .filter(|&i| set.path(i).is_some())
            .or_else(|| (0..layout.hierarchies.len()).find(|&i| set.path(i).is_some()))?;
        let path = set.path(index)?;
        Some(join_cgroup(&layout.hierarchies[index].mount_point, path))
    }

    /// Process ids in the container's own cgroup (`cgroup.procs` of its identity hierarchy; not
    /// of its sub-cgroups), read through a fresh open (the file keeps state per descriptor).
    /// Fails with `Vanished` when the cgroup is gone.
    pub fn process_ids(&self, set: &CgroupSet) -> Result<Vec<u32>> {
        let Some(dir) = self.identity_dir(set) else {
            return Ok(Vec::new());
        };
        let path = dir.join("cgroup.procs");
        let text = read_file(&path)?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.trim()
                    .parse::<u32>()
                    .map_err(|_| Error::parse(&path, ParseError::new(format!("bad pid {l:?}"))))
            })
            .collect()
    }

    /// When the container's cgroup directory was created (its inode's change time, which
    /// cgroupfs sets at creation and changes only on chmod/chown of the directory).
    pub fn created_at(&self, set: &CgroupSet) -> Result<Option<SystemTime>> {
        let Some(dir) = self.identity_dir(set) else {
            return Ok(None);
        };
        let meta = std::fs::metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        let (secs, nanos) = (meta.ctime(), meta.ctime_nsec());
        let since_epoch = Duration::new(
            u64::try_from(secs).unwrap_or(0),
            u32::try_from(nanos).unwrap_or(0),
        );
        Ok(Some(SystemTime::UNIX_EPOCH + since_epoch))
    }

    /// The network namespace inode of the host, against which a container's is compared to tell
    /// host-network containers apart: pid 1's, or this process's own where pid 1's cannot be
    /// read (a sandboxed init; the exporter runs in the host's network namespace).
    pub fn host_netns_inode(&self) -> Result<u64> {
        let proc_root = &self.host_paths().proc_root;
        let init = proc_root.join("1/ns/net");
        std::fs::metadata(&init)
            .or_else(|_| std::fs::metadata(proc_root.join("self/ns/net")))
            .map(|m| m.ino())
            .map_err(|e| Error::io(&init, e))
    }

    /// The network counters of process `pid`'s namespace, `None` when it is `host_netns`
    /// (a host-network container has no counters of its own). Fails with `Vanished` when the
    /// process is gone.
    pub fn network_of(&self, pid: u32, host_netns: u64) -> Result<Option<NetworkSnapshot>> {
        let proc_dir = self.host_paths().proc_root.join(pid.to_string());
        let ns = proc_dir.join("ns/net");
        let inode = std::fs::metadata(&ns)
            .map(|m| m.ino())
            .map_err(|e| Error::io(&ns, e))?;
        if inode == host_netns {
            return Ok(None);
        }
        let dev = proc_dir.join("net/dev");
        let text = read_file(&dev)?;
        let mut interfaces = parse_net_dev(&text).map_err(|e| Error::parse(&dev, e))?;
        interfaces.retain(|i| i.interface != "lo");
        Ok(Some(NetworkSnapshot {
            netns_inode: inode,
            interfaces,
        }))
    }
}
