//! The filesystems under test ("subjects") and the files read from each, reached the way a
//! container reaches them: each served file is bind-mounted onto a plain path, as a runtime
//! bind-mounts `<mount>/proc/meminfo` over a container's `/proc/meminfo`. An open of such a path
//! sends no LOOKUP (the bind mount pins the dentry), so every subject pays OPEN, a data READ, an
//! EOF READ and RELEASE per open+read+close, plus whatever its own protocol choices add (proclens:
//! a GETATTR, see [`Subject::FloorGetattr`]; lxcfs: a FLUSH). proclens's per-container subtree
//! ([`Subject::Subtree`]) is bind-mounted the same way, from `containers/<pid>/proc/`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use proclens_tests::rig::{
    BindMount, FloorDaemon, FusedDaemon, LxcfsDaemon, Probe, ProbeOptions, TempCgroup,
};
use tempfile::TempDir;

use crate::report::Report;

/// Serving threads of the floors: proclens-fused's default `--threads`.
const FLOOR_THREADS: usize = 2;
/// Size of every floor file: about a container's meminfo.
const FLOOR_BYTES: usize = 1400;

/// A file the benchmark reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum File {
    /// proc/meminfo
    Meminfo,
    /// proc/stat
    Stat,
    /// proc/cpuinfo
    Cpuinfo,
    /// proc/uptime
    Uptime,
    /// proc/loadavg
    Loadavg,
}

impl File {
    /// Every file, in report order.
    pub const ALL: [File; 5] = [
        File::Meminfo,
        File::Stat,
        File::Cpuinfo,
        File::Uptime,
        File::Loadavg,
    ];

    /// The name under `proc/`.
    pub fn name(self) -> &'static str {
        match self {
            File::Meminfo => "meminfo",
            File::Stat => "stat",
            File::Cpuinfo => "cpuinfo",
            File::Uptime => "uptime",
            File::Loadavg => "loadavg",
        }
    }
}

impl fmt::Display for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A filesystem under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// The kernel's own /proc: the host's values, no FUSE.
    Kernel,
    /// `proclens-floor`: FUSE with no work at all and the fewest requests per open+read+close.
    Floor,
    /// `proclens-floor --attr-timeout 0`: the floor with proclens's zero attribute timeout, which
    /// with `default_permissions` costs a GETATTR on every open.
    FloorGetattr,
    /// `proclens-fused` (release build), default flags.
    Proclens,
    /// The same daemon's per-container subtree, `containers/<pid>/proc/<file>` of the reader's
    /// container: page-cached content, rendered again at an open once 100 ms old.
    Subtree,
    /// lxcfs 5.0.3, default flags; loadavg comes from a second instance with `-l`.
    Lxcfs,
}

impl Subject {
    /// Every subject, in report order.
    pub const ALL: [Subject; 6] = [
        Subject::Kernel,
        Subject::Floor,
        Subject::FloorGetattr,
        Subject::Proclens,
        Subject::Subtree,
        Subject::Lxcfs,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Kernel => "kernel",
            Subject::Floor => "floor",
            Subject::FloorGetattr => "floor+getattr",
            Subject::Proclens => "proclens",
            Subject::Subtree => "subtree",
            Subject::Lxcfs => "lxcfs",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The running subjects and the path of every (subject, file). Fields drop in order: the bind
/// mounts go before the daemons whose files they pin.
pub struct Subjects {
    binds: Vec<BindMount>,
    paths: BTreeMap<(Subject, File), PathBuf>,
    _bind_dir: TempDir,
    /// proclens-fused, default flags.
    pub proclens: FusedDaemon,
    /// lxcfs, default flags.
    pub lxcfs: LxcfsDaemon,
    /// lxcfs -l: loadavg virtualization on (its loadavg is lxcfs's for every comparison).
    pub lxcfs_load: LxcfsDaemon,
    /// The FUSE floor.
    pub floor: FloorDaemon,
    /// The FUSE floor with a zero attribute timeout.
    pub floor_getattr: FloorDaemon,
    /// The process whose container the subtree files are (see [`Subjects::attach_subtree`]).
    subtree_owner: Option<Probe>,
}

impl Subjects {
    /// Starts proclens-fused, lxcfs, lxcfs -l and the floors, and bind-mounts their files.
    pub fn start() -> Result<Self> {
        let proclens = FusedDaemon::start(&[]).context("proclens-fused")?;
        let lxcfs = LxcfsDaemon::start().context("lxcfs")?;
        let lxcfs_load = LxcfsDaemon::start_with(&["-l"]).context("lxcfs -l")?;
        let floor =
            FloorDaemon::start(FLOOR_THREADS, FLOOR_BYTES, 3600).context("proclens-floor")?;
        let floor_getattr = FloorDaemon::start(FLOOR_THREADS, FLOOR_BYTES, 0)
            .context("proclens-floor --attr-timeout 0")?;
        let bind_dir = tempfile::Builder::new()
            .prefix("proclens-bench-binds-")
            .tempdir()?;
        let mut subjects = Self {
            binds: Vec::new(),
            paths: BTreeMap::new(),
            _bind_dir: bind_dir,
            proclens,
            lxcfs,
            lxcfs_load,
            floor,
            floor_getattr,
            subtree_owner: None,
        };
        for file in File::ALL {
            let rel = format!("proc/{file}");
            subjects
                .paths
                .insert((Subject::Kernel, file), PathBuf::from("/").join(&rel));
            let sources = [
                (Subject::Floor, subjects.floor.path(&rel)),
                (Subject::FloorGetattr, subjects.floor_getattr.path(&rel)),
                (Subject::Proclens, subjects.proclens.path(&rel)),
                (
                    Subject::Lxcfs,
                    if file == File::Loadavg {
                        subjects.lxcfs_load.path(&rel)
                    } else {
                        subjects.lxcfs.path(&rel)
                    },
                ),
            ];
            for (subject, source) in sources {
                let target = subjects._bind_dir.path().join(format!("{subject}-{file}"));
                let bind = BindMount::new(&source, &target)?;
                subjects.paths.insert((subject, file), target);
                subjects.binds.push(bind);
            }
        }
        Ok(subjects)
    }

    /// Bind-mounts the subtree files of container `cg`: a process is started in it (the pid the
    /// subtree is looked up by) and kept for as long as the subjects run.
    pub fn attach_subtree(&mut self, cg: &TempCgroup) -> Result<()> {
        let mut owner = Probe::spawn(&cg.procs_files(), &ProbeOptions::default())
            .context("a process in the subtree's container")?;
        let (_, pid) = owner.pids()?;
        for file in File::ALL {
            let source = self.proclens.path(&format!("containers/{pid}/proc/{file}"));
            let target = self._bind_dir.path().join(format!("subtree-{file}"));
            self.binds.push(BindMount::new(&source, &target)?);
            self.paths.insert((Subject::Subtree, file), target);
        }
        self.subtree_owner = Some(owner);
        Ok(())
    }

    /// The subtree path of `file` for the container of the reader that opens it: `{pid}` stands
    /// for the reader's host pid (`proclens-bench-reader tick` fills it in).
    pub fn subtree_template(&self, file: File) -> PathBuf {
        self.proclens
            .path(&format!("containers/{{pid}}/proc/{file}"))
    }

    /// The path a container reader opens for `file` of `subject`.
    pub fn path(&self, subject: Subject, file: File) -> &Path {
        &self.paths[&(subject, file)]
    }

    /// One line naming the daemons and their pids.
    pub fn describe(&self) -> String {
        format!(
            "proclens-fused pid {} ({}), lxcfs pid {}, lxcfs -l pid {}, floor pids {} and {} ({} \
             threads, {} B files)",
            self.proclens.pid(),
            FusedDaemon::binary().map_or_else(|e| e.to_string(), |p| p.display().to_string()),
            self.lxcfs.pid(),
            self.lxcfs_load.pid(),
            self.floor.pid(),
            self.floor_getattr.pid(),
            FLOOR_THREADS,
            FLOOR_BYTES
        )
    }

    /// Every process of proclens-fused: the supervisor and its serving workers.
    pub fn proclens_pids(&self) -> Result<Vec<u32>> {
        let mut pids = vec![self.proclens.pid()];
        pids.extend(self.proclens.worker_pids()?);
        Ok(pids)
    }

    /// The processes serving `file` for `subject` (none for the kernel).
    pub fn pids(&self, subject: Subject, file: File) -> Result<Vec<u32>> {
        Ok(match subject {
            Subject::Kernel => Vec::new(),
            Subject::Floor => vec![self.floor.pid()],
            Subject::FloorGetattr => vec![self.floor_getattr.pid()],
            Subject::Proclens | Subject::Subtree => self.proclens_pids()?,
            Subject::Lxcfs if file == File::Loadavg => vec![self.lxcfs_load.pid()],
            Subject::Lxcfs => vec![self.lxcfs.pid()],
        })
    }

    /// Records in `report` any subject that died during the run.
    pub fn check_alive(&mut self, report: &mut Report) {
        if let Err(err) = self.lxcfs.check_alive() {
            report.failed("lxcfs", err);
        }
        if let Err(err) = self.lxcfs_load.check_alive() {
            report.failed("lxcfs -l", err);
        }
        if let Err(err) = self.floor.check_alive() {
            report.failed("floor", err);
        }
        if let Err(err) = self.floor_getattr.check_alive() {
            report.failed("floor+getattr", err);
        }
        match self.proclens.worker_pids() {
            Ok(pids) if !pids.is_empty() => {}
            Ok(_) => report.failed(
                "proclens-fused",
                anyhow::anyhow!("no serving worker; stderr:\n{}", self.proclens.stderr()),
            ),
            Err(err) => report.failed("proclens-fused", err),
        }
    }
}
