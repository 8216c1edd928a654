//! The filesystem: the lxcfs-compatible tree, per-open rendered buffers (seq_file semantics), the
//! host /sys/devices/system/cpu passthrough, and `containers`, a symlink to the per-container
//! subtree's own mount ([`crate::subtree`]). Implements [`Handler`].

use crate::caller::{CallerResolver, Viewer};
use crate::fuse::abi::{fopen, push_dirents};
use crate::fuse::{Attr, Errno, Handler, Request};
use crate::render::{Computed, Renderer};
use crate::shared::{SharedState, Target};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const ROOT: u64 = 1;
const PROC: u64 = 2;
const SYS: u64 = 3;
const SYS_DEVICES: u64 = 4;
const SYS_SYSTEM: u64 = 5;
const SYS_CPU: u64 = 6;
const PRESSURE: u64 = 7;
/// `containers`: a symlink to the subtree mount.
const CONTAINERS: u64 = 8;
/// Inodes of computed files start here.
const COMPUTED_BASE: u64 = 16;
/// Inodes of passthrough entries start here; each is this plus a stable hash of its path, so
/// every worker (and every binary version) gives a host path the same inode.
const PASSTHROUGH_BASE: u64 = 1024;
/// Deepest directory level below /sys/devices/system/cpu walked when a worker starts.
const WALK_DEPTH: usize = 8;
/// Most passthrough entries interned; the host tree under /sys/devices/system/cpu is far smaller.
const PASSTHROUGH_CAPACITY: usize = 1 << 16;

/// The computed files: the first [`PROC_FILE_COUNT`] under `proc/`, then `proc/pressure/` and
/// the sysfs cpu lists.
const COMPUTED: [(Computed, &str); 14] = [
    (Computed::Cpuinfo, "cpuinfo"),
    (Computed::Diskstats, "diskstats"),
    (Computed::Loadavg, "loadavg"),
    (Computed::Meminfo, "meminfo"),
    (Computed::Slabinfo, "slabinfo"),
    (Computed::Stat, "stat"),
    (Computed::Swaps, "swaps"),
    (Computed::Uptime, "uptime"),
    (Computed::PressureCpu, "cpu"),
    (Computed::PressureIo, "io"),
    (Computed::PressureMemory, "memory"),
    (Computed::CpuOnline, "online"),
    (Computed::CpuPossible, "possible"),
    (Computed::CpuPresent, "present"),
];

/// How many files the lxcfs layout has under `proc/` (PSI aside).
pub const PROC_FILE_COUNT: usize = 8;

/// The files under `proc/` (PSI aside), with their names: the subtree serves the same eight.
pub fn proc_files() -> &'static [(Computed, &'static str)] {
    &COMPUTED[..PROC_FILE_COUNT]
}

fn computed_ino(file: Computed) -> u64 {
    let index = COMPUTED.iter().position(|(f, _)| *f == file).unwrap_or(0);
    COMPUTED_BASE + index as u64
}

/// The index in [`crate::stats::FILES`] of computed inode `ino` (the same order as
/// [`COMPUTED`]); past the end for any other inode, which is then not counted.
fn computed_index(ino: u64) -> usize {
    usize::try_from(ino.saturating_sub(COMPUTED_BASE)).unwrap_or(usize::MAX)
}

fn computed_of(ino: u64) -> Option<Computed> {
    let index = usize::try_from(ino.checked_sub(COMPUTED_BASE)?).ok()?;
    COMPUTED.get(index).map(|(f, _)| *f)
}

/// Children of the static directories (`containers` is added by the caller when there is a
/// subtree).
fn static_children(ino: u64, with_pressure: bool) -> Vec<(&'static str, u64)> {
    let computed = |range: std::ops::Range<usize>| {
        COMPUTED[range]
            .iter()
            .map(|(f, name)| (*name, computed_ino(*f)))
            .collect::<Vec<_>>()
    };
    match ino {
        ROOT => vec![("proc", PROC), ("sys", SYS)],
        PROC => {
            let mut v = computed(0..PROC_FILE_COUNT);
            if with_pressure {
                v.push(("pressure", PRESSURE));
            }
            v
        }
        PRESSURE => computed(PROC_FILE_COUNT..11),
        SYS => vec![("devices", SYS_DEVICES)],
        SYS_DEVICES => vec![("system", SYS_SYSTEM)],
        SYS_SYSTEM => vec![("cpu", SYS_CPU)],
        SYS_CPU => computed(11..14),
        _ => Vec::new(),
    }
}

/// A host path below /sys/devices/system/cpu, or a virtual `cpuN/online`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PassEntry {
    /// Path relative to the host's /sys/devices/system/cpu.
    relative: PathBuf,
    /// A computed "1" (`cpuN/online`), not a host file.
    virtual_online: bool,
}

impl PassEntry {
    /// The entry's inode: FNV-1a of its path, stable across workers and versions.
    fn ino(&self) -> u64 {
        use crate::state::{fnv1a, FNV_OFFSET};
        let path = std::os::unix::ffi::OsStrExt::as_bytes(self.relative.as_os_str());
        let hash = fnv1a(fnv1a(FNV_OFFSET, path), &[u8::from(self.virtual_online)]);
        PASSTHROUGH_BASE + (hash >> 2)
    }
}

/// What a handle is open on; encoded into the shared handle table as a [`Target`].
#[derive(Debug, Clone)]
enum Opened {
    Computed(Computed),
    Passthrough(PassEntry),
}

const TARGET_COMPUTED: u32 = 1;
const TARGET_PASSTHROUGH: u32 = 2;

/// The proclens filesystem.
#[derive(Debug)]
pub struct ProcFs {
    renderer: Renderer,
    callers: CallerResolver,
    host_cpu_dir: PathBuf,
    with_pressure: bool,
    /// Passthrough entries by inode: filled by a walk of the host tree at start and by lookups.
    passthrough: Mutex<HashMap<u64, PassEntry>>,
    shared: Arc<SharedState>,
    mount_time: u64,
    /// Where the per-container subtree is mounted (`containers` points there).
    subtree_mountpoint: Option<PathBuf>,
}

/// How long the kernel may cache what never changes while the filesystem is mounted: the
/// attributes of proclens's own directories and computed files (fixed inode, mode, size and time;
/// with direct_io the size is never used to serve a read) and the entries of their fixed names.
/// Without it, `default_permissions` makes the kernel send a GETATTR before every open.
const FIXED_TTL_SECS: u64 = 3600;

/// Attributes of a directory that never changes.
pub fn dir_attr(ino: u64, time: u64) -> Attr {
    Attr {
        ino,
        size: 0,
        time_secs: time,
        time_nsecs: 0,
        mode: libc::S_IFDIR | 0o555,
        nlink: 2,
        attr_ttl_secs: FIXED_TTL_SECS,
        attr_ttl_nsecs: 0,
        entry_ttl_secs: FIXED_TTL_SECS,
    }
}

/// Attributes of a read-only file whose attributes never change.
pub fn file_attr(ino: u64, time: u64, size: u64) -> Attr {
    Attr {
        ino,
        size,
        time_secs: time,
        time_nsecs: 0,
        mode: libc::S_IFREG | 0o444,
        nlink: 1,
        attr_ttl_secs: FIXED_TTL_SECS,
        attr_ttl_nsecs: 0,
        entry_ttl_secs: FIXED_TTL_SECS,
    }
}

/// Parses "cpuN" into N.
fn cpu_dir_number(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("cpu")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl ProcFs {
    /// A filesystem serving views computed by `renderer` for callers resolved by `callers`;
    /// `with_pressure` adds proc/pressure/.
    pub fn new(
        renderer: Renderer,
        callers: CallerResolver,
        with_pressure: bool,
        shared: Arc<SharedState>,
        subtree_mountpoint: Option<PathBuf>,
    ) -> Self {
        let host_cpu_dir = renderer
            .reader()
            .host_paths()
            .sys_root
            .join("devices/system/cpu");
        let mount_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let fs = ProcFs {
            renderer,
            callers,
            host_cpu_dir,
            with_pressure,
            passthrough: Mutex::new(HashMap::new()),
            shared,
            mount_time,
            subtree_mountpoint,
        };
        fs.walk_host_tree();
        fs
    }

    /// Forgets expired caller resolutions (what exited threads left behind); returns how many
    /// threads were forgotten.
    pub fn forget_expired_callers(&self) -> usize {
        self.callers.prune()
    }

    /// Closes kept descriptors not read since the last call (removed cgroups' and gone
    /// containers' files); returns how many were closed.
    pub fn close_idle_files(&self) -> usize {
        self.renderer.reader().files().close_idle()
    }

    /// The state shared with the supervisor and the next worker.
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// The renderer of every view.
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// Resolves the view of thread `pid` (host pid namespace).
    pub fn resolve(&self, pid: u32) -> crate::error::Result<Viewer> {
        self.callers.resolve(self.renderer.reader(), pid)
    }

    /// When the filesystem was mounted (seconds since the epoch): the time of fixed entries.
    pub fn mount_time(&self) -> u64 {
        self.mount_time
    }

    /// The view of the request's caller; EIO (logged) if it cannot be resolved.
    pub fn viewer(&self, req: &Request) -> Result<Viewer, Errno> {
        self.callers
            .resolve(self.renderer.reader(), req.pid)
            .map_err(|err| {
                tracing::warn!(pid = req.pid, %err, "cannot resolve caller");
                libc::EIO
            })
    }

    /// The host CPUs the caller sees (host callers: all online CPUs).
    fn visible(&self, req: &Request) -> Result<Vec<u32>, Errno> {
        let result = match self.viewer(req)? {
            Viewer::Host => self.renderer.host_online().map(|v| v.to_vec()),
            Viewer::Container(c) => self.renderer.visible(&c),
        };
        result.map_err(|err| {
            tracing::warn!(pid = req.pid, %err, "cannot read cpus");
            libc::EIO
        })
    }

    /// Records `entry` so its inode can be resolved later; a different path hashing to an inode
    /// already taken is refused (never observed: the hash space is 2^62).
    fn intern(&self, entry: PassEntry) -> Result<u64, Errno> {
        let ino = entry.ino();
        let mut map = self.passthrough.lock().map_err(|_| libc::EIO)?;
        match map.get(&ino) {
            Some(known) if *known == entry => Ok(ino),
            Some(known) => {
                tracing::error!(?known, ?entry, ino, "passthrough inode collision");
                Err(libc::EIO)
            }
            None if map.len() >= PASSTHROUGH_CAPACITY => Err(libc::ENOMEM),
            None => {
                map.insert(ino, entry);
                Ok(ino)
            }
        }
    }

    fn pass_entry(&self, ino: u64) -> Option<PassEntry> {
        self.passthrough.lock().ok()?.get(&ino).cloned()
    }

    /// Records every entry of the host tree, so inodes handed out by an earlier worker resolve.
    fn walk_host_tree(&self) {
        let mut stack = vec![(PathBuf::new(), 0usize)];
        while let Some((relative, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(self.host_cpu_dir.join(&relative)) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            if is_top_cpu_dir(&relative) {
                names.push("online".to_string());
            }
            for name in names {
                let entry = self.child_entry(&relative, &name);
                let host = self.host_path(&entry);
                let child = entry.relative.clone();
                if self.intern(entry).is_err() {
                    return;
                }
                let is_dir = std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir());
                if is_dir && depth < WALK_DEPTH {
                    stack.push((child, depth + 1));
                }
            }
        }
    }

    /// The entry `name` inside passthrough directory `dir`: a top-level `cpuN` directory gets a
    /// virtual `online` ("1") where the host has none (cpu0 on x86).
    fn child_entry(&self, dir: &Path, name: &str) -> PassEntry {
        let relative = dir.join(name);
        let virtual_online =
            name == "online" && is_top_cpu_dir(dir) && !self.host_cpu_dir.join(&relative).exists();
        PassEntry {
            relative,
            virtual_online,
        }
    }

    fn host_path(&self, entry: &PassEntry) -> PathBuf {
        self.host_cpu_dir.join(&entry.relative)
    }

    fn pass_attr(&self, ino: u64, entry: &PassEntry) -> Result<Attr, Errno> {
        if entry.virtual_online {
            return Ok(file_attr(ino, self.mount_time, 4096));
        }
        let meta = std::fs::symlink_metadata(self.host_path(entry))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let ft = meta.file_type();
        let (mode, nlink) = if ft.is_dir() {
            (libc::S_IFDIR | 0o555, 2)
        } else if ft.is_symlink() {
            (libc::S_IFLNK | 0o777, 1)
        } else if ft.is_file() {
            (libc::S_IFREG | (meta.mode() & 0o444), 1)
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            return Err(libc::EACCES);
        } else {
            return Err(libc::EIO);
        };
        Ok(Attr {
            ino,
            size: meta.len(),
            time_secs: meta.mtime().max(0) as u64,
            time_nsecs: 0,
            mode,
            nlink,
            // Host entries follow the host (and cpuN entries depend on the caller): ask each time.
            attr_ttl_secs: 0,
            attr_ttl_nsecs: 0,
            entry_ttl_secs: 0,
        })
    }

    /// Host entry names of a passthrough directory.
    fn host_names(&self, dir: &Path) -> Result<Vec<String>, Errno> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Entries of directory `ino` for this caller, as (name, ino, DT_* type).
    fn entries(&self, req: &Request, ino: u64) -> Result<Vec<(String, u64, u32)>, Errno> {
        let dt = |mode: u32| match mode & libc::S_IFMT {
            libc::S_IFDIR => u32::from(libc::DT_DIR),
            libc::S_IFLNK => u32::from(libc::DT_LNK),
            _ => u32::from(libc::DT_REG),
        };
        let mut out: Vec<(String, u64, u32)> = static_children(ino, self.with_pressure)
            .into_iter()
            .map(|(name, child)| {
                let kind = if computed_of(child).is_some() {
                    libc::DT_REG
                } else {
                    libc::DT_DIR
                };
                (name.to_string(), child, u32::from(kind))
            })
            .collect();
        if ino == ROOT && self.subtree_mountpoint.is_some() {
            out.push((
                "containers".to_string(),
                CONTAINERS,
                u32::from(libc::DT_LNK),
            ));
        }
        if ino == SYS_CPU {
            for n in 0..self.visible(req)?.len() {
                let name = format!("cpu{n}");
                let child = self.lookup(req, ino, name.as_bytes())?;
                out.push((name, child.ino, u32::from(libc::DT_DIR)));
            }
            for name in self.host_names(&self.host_cpu_dir)? {
                if cpu_dir_number(&name).is_some() || out.iter().any(|(n, _, _)| *n == name) {
                    continue;
                }
                if let Ok(attr) = self.lookup(req, ino, name.as_bytes()) {
                    out.push((name, attr.ino, dt(attr.mode)));
                }
            }
        } else if let Some(entry) = self.pass_entry(ino) {
            let mut names = self.host_names(&self.host_path(&entry))?;
            if is_top_cpu_dir(&entry.relative) && !names.iter().any(|n| n == "online") {
                names.push("online".to_string());
            }
            for name in names {
                if let Ok(attr) = self.lookup(req, ino, name.as_bytes()) {
                    out.push((name, attr.ino, dt(attr.mode)));
                }
            }
        } else if computed_of(ino).is_some() {
            return Err(libc::ENOTDIR);
        } else if ino > SYS_CPU && ino != PRESSURE {
            return Err(libc::ENOENT);
        }
        Ok(out)
    }

    /// Renders what handle target `target` is open on.
    fn render_target(&self, req: &Request, target: Target) -> Result<Vec<u8>, Errno> {
        let opened = match target.kind {
            TARGET_COMPUTED => Opened::Computed(computed_of(target.id).ok_or(libc::EBADF)?),
            _ => Opened::Passthrough(self.pass_entry(target.id).ok_or(libc::EBADF)?),
        };
        self.render(req, &opened)
    }

    fn render(&self, req: &Request, target: &Opened) -> Result<Vec<u8>, Errno> {
        match target {
            Opened::Computed(file) => {
                let viewer = self.viewer(req)?;
                self.renderer.render(*file, &viewer).map_err(|err| {
                    tracing::warn!(pid = req.pid, ?file, %err, "read failed");
                    libc::EIO
                })
            }
            Opened::Passthrough(entry) if entry.virtual_online => Ok(b"1\n".to_vec()),
            Opened::Passthrough(entry) => std::fs::read(self.host_path(entry))
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}

/// Whether `relative` is a top-level `cpuN` directory.
fn is_top_cpu_dir(relative: &Path) -> bool {
    let mut components = relative.components();
    matches!(
        (components.next(), components.next()),
        (Some(c), None) if c.as_os_str().to_str().and_then(cpu_dir_number).is_some()
    )
}

impl Handler for ProcFs {
    /// Symlinks (`containers`, the host's cpu tree links) do not change while mounted.
    fn init_flags(&self) -> u32 {
        crate::fuse::abi::init_flags::CACHE_SYMLINKS
    }

    fn lookup(&self, req: &Request, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        if parent == ROOT && name == "containers" {
            return self.getattr(req, CONTAINERS);
        }
        if let Some((_, child)) = static_children(parent, self.with_pressure)
            .into_iter()
            .find(|(n, _)| *n == name)
        {
            return self.getattr(req, child);
        }
        if name == "." || name == ".." || name.contains('/') {
            return Err(libc::ENOENT);
        }
        let entry = if parent == SYS_CPU {
            match cpu_dir_number(name) {
                Some(n) => {
                    let visible = self.visible(req)?;
                    let host_cpu = visible.get(n).ok_or(libc::ENOENT)?;
                    self.child_entry(Path::new(""), &format!("cpu{host_cpu}"))
                }
                None => self.child_entry(Path::new(""), name),
            }
        } else {
            let dir = self.pass_entry(parent).ok_or(libc::ENOENT)?;
            self.child_entry(&dir.relative, name)
        };
        // Only existing host entries are interned, so lookups of made-up names cannot fill the
        // table.
        let mut attr = self.pass_attr(0, &entry)?;
        attr.ino = self.intern(entry)?;
        Ok(attr)
    }

    fn getattr(&self, _req: &Request, ino: u64) -> Result<Attr, Errno> {
        match ino {
            ROOT | PROC | SYS | SYS_DEVICES | SYS_SYSTEM | SYS_CPU => {
                Ok(dir_attr(ino, self.mount_time))
            }
            PRESSURE if self.with_pressure => Ok(dir_attr(ino, self.mount_time)),
            CONTAINERS => {
                let target = self.subtree_mountpoint.as_ref().ok_or(libc::ENOENT)?;
                let mut attr = file_attr(ino, self.mount_time, target.as_os_str().len() as u64);
                attr.mode = libc::S_IFLNK | 0o777;
                Ok(attr)
            }
            _ => {
                if let Some(file) = computed_of(ino) {
                    let sysfs = matches!(
                        file,
                        Computed::CpuOnline | Computed::CpuPossible | Computed::CpuPresent
                    );
                    return Ok(file_attr(
                        ino,
                        self.mount_time,
                        if sysfs { 4096 } else { 0 },
                    ));
                }
                let entry = self.pass_entry(ino).ok_or(libc::ENOENT)?;
                self.pass_attr(ino, &entry)
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: u64) -> Result<Vec<u8>, Errno> {
        if ino == CONTAINERS {
            let target = self.subtree_mountpoint.as_ref().ok_or(libc::ENOENT)?;
            return Ok(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec());
        }
        let entry = self.pass_entry(ino).ok_or(libc::EINVAL)?;
        let target = std::fs::read_link(self.host_path(&entry))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
        Ok(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec())
    }

    fn open(&self, _req: &Request, ino: u64) -> Result<(u64, u32), Errno> {
        let target = if computed_of(ino).is_some() {
            Target {
                kind: TARGET_COMPUTED,
                id: ino,
            }
        } else {
            self.pass_entry(ino).ok_or(libc::ENOENT)?;
            Target {
                kind: TARGET_PASSTHROUGH,
                id: ino,
            }
        };
        let fh = self.shared.open(target).ok_or_else(|| {
            tracing::warn!("every open-file slot is in use");
            libc::ENFILE
        })?;
        Ok((fh, fopen::DIRECT_IO | fopen::NOFLUSH))
    }

    fn read(
        &self,
        req: &Request,
        _ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        // Like seq_file: offset 0 renders afresh; other offsets read the last rendering, which
        // lives in shared memory and so survives a worker restart.
        let started = (offset == 0).then(std::time::Instant::now);
        let (target, cached) = self.shared.get(fh, offset != 0).ok_or(libc::EBADF)?;
        let content = match cached {
            Some(content) => content,
            None => {
                let rendered = self.render_target(req, target);
                if let Some(started) = started {
                    let file = match target.kind {
                        TARGET_COMPUTED => computed_index(target.id),
                        _ => crate::stats::PASSTHROUGH,
                    };
                    self.shared
                        .stats()
                        .record(file, started.elapsed(), rendered.is_ok());
                }
                let content = rendered?;
                self.shared.store(fh, &content);
                content
            }
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(size as usize);
        out.extend_from_slice(content.get(start..end.min(content.len())).unwrap_or(&[]));
        Ok(())
    }

    fn release(&self, fh: u64) {
        self.shared.release(fh);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let parent = match ino {
            ROOT => ROOT,
            PROC | SYS => ROOT,
            _ => ino,
        };
        let mut all = vec![
            (".".to_string(), ino, u32::from(libc::DT_DIR)),
            ("..".to_string(), parent, u32::from(libc::DT_DIR)),
        ];
        all.extend(self.entries(req, ino)?);
        push_dirents(out, &all, offset, size);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_dir_names() {
        assert_eq!(cpu_dir_number("cpu0"), Some(0));
        assert_eq!(cpu_dir_number("cpu17"), Some(17));
        assert_eq!(cpu_dir_number("cpufreq"), None);
        assert_eq!(cpu_dir_number("cpu"), None);
        assert!(is_top_cpu_dir(Path::new("cpu3")));
        assert!(!is_top_cpu_dir(Path::new("cpu3/cache")));
        assert!(!is_top_cpu_dir(Path::new("cpuidle")));
    }

    #[test]
    fn inode_table_is_consistent() {
        for (file, name) in COMPUTED {
            assert_eq!(computed_of(computed_ino(file)), Some(file), "{name}");
        }
        assert!(COMPUTED_BASE + (COMPUTED.len() as u64) < PASSTHROUGH_BASE);
        let proc_names: Vec<&str> = static_children(PROC, false)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            proc_names,
            [
                "cpuinfo",
                "diskstats",
                "loadavg",
                "meminfo",
                "slabinfo",
                "stat",
                "swaps",
                "uptime"
            ]
        );
        for (index, (file, name)) in COMPUTED.iter().enumerate() {
            let label = crate::stats::FILES[computed_index(computed_ino(*file))];
            assert_eq!(label.rsplit('/').next(), Some(*name), "{index}");
        }
        assert_eq!(crate::stats::PASSTHROUGH, COMPUTED.len());
        let cpu_names: Vec<&str> = static_children(SYS_CPU, false)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(cpu_names, ["online", "possible", "present"]);
    }
}
