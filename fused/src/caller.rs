//! Whose view a request gets (DESIGN §3): the caller's cgroup, or its pid-namespace init's when
//! that is an ancestor (systemd or LXC inside the container), never another container's.

use crate::error::{Result, ViewError};
use proclens_cgroup::files::read_file;
use proclens_cgroup::files::{read_at, shrink_if_sparse};
use proclens_cgroup::parse::proc_pid::{parse_pid_cgroup, parse_proc_stat, parse_proc_status};
use proclens_cgroup::{CgroupSet, Collector, ContainerId, Error};
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most pid namespaces whose init is remembered; beyond this the cache is cleared (it refills on
/// the next reads, at a few small /proc reads each).
const INIT_CACHE_CAPACITY: usize = 4096;
/// Most (pid namespace, cgroups) views remembered at once.
const VIEW_CACHE_CAPACITY: usize = 1024;
/// Default for the most threads whose resolution is remembered (each keeps its
/// /proc/<tid>/cgroup open).
pub const THREAD_CACHE_CAPACITY: usize = 2048;
/// How long a thread's resolution is reused before it is resolved from scratch. Within it the
/// thread's own cgroup is still checked on every request; only a move of its namespace's init
/// to another cgroup (which changes the view only in the systemd-container case) waits for it.
const THREAD_TTL: Duration = Duration::from_secs(10);
/// Longest parent chain walked looking for a namespace's init.
const MAX_WALK: usize = 256;

/// The container a request is answered for.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A process at the root of every hierarchy: gets the host's own files.
    Host,
    /// A process in a container.
    Container(ContainerCaller),
}

/// What the views need to know about a container caller.
#[derive(Debug, Clone)]
pub struct ContainerCaller {
    /// The cgroups whose limits and usage the view shows.
    pub set: Arc<CgroupSet>,
    /// When the container started (see [`ContainerCaller::start_ticks`]).
    start: Arc<ContainerStart>,
    /// The caller's thread id (host pid namespace).
    pub pid: u32,
    /// The caller's thread id in its own pid namespace.
    pub ns_pid: u32,
    /// The container's identity and state key, taken once per resolved thread when first
    /// needed (see [`ContainerCaller::identity`]).
    state: Arc<OnceLock<(Arc<ContainerId>, [u64; 2])>>,
}

/// When a container started: known at resolution, or read from its init's /proc/<pid>/stat the
/// first time a view needs it (only uptime does), so a container's first read of another file
/// does not pay for it.
#[derive(Debug)]
struct ContainerStart {
    /// The process whose start time it is, while not yet read.
    init_pid: u32,
    ticks: OnceLock<u64>,
}

impl ContainerStart {
    fn known(ticks: u64) -> Arc<Self> {
        Arc::new(ContainerStart {
            init_pid: 0,
            ticks: OnceLock::from(ticks),
        })
    }

    fn of_pid(init_pid: u32) -> Arc<Self> {
        Arc::new(ContainerStart {
            init_pid,
            ticks: OnceLock::new(),
        })
    }
}

impl ContainerCaller {
    /// Start time of the container's init (its pid namespace's pid 1, or the oldest process of
    /// its cgroup for callers in the host pid namespace), in ticks after boot.
    pub fn start_ticks(&self, reader: &Collector) -> Result<u64> {
        if let Some(&ticks) = self.start.ticks.get() {
            return Ok(ticks);
        }
        let ticks = start_ticks(reader, self.start.init_pid)?;
        Ok(*self.start.ticks.get_or_init(|| ticks))
    }

    /// The container's identity (its set and directory inodes) and the key of its shared state
    /// ([`crate::state::container_key`]). Taken on the first call for a resolved thread and
    /// then reused: it stays right for as long as the thread's entry is used, because a cgroup
    /// holding the thread, or an ancestor of it, cannot be removed, and a moved thread is
    /// resolved again.
    pub fn identity(&self, reader: &Collector) -> Result<(Arc<ContainerId>, [u64; 2])> {
        if let Some((id, key)) = self.state.get() {
            return Ok((Arc::clone(id), *key));
        }
        let id = reader.identity(&self.set)?;
        let key = crate::state::container_key(&id);
        let (id, key) = self.state.get_or_init(|| (Arc::new(id), key));
        Ok((Arc::clone(id), *key))
    }
}

/// A resolved container view, shared by every caller with the same cgroups and pid namespace.
#[derive(Debug, Clone)]
struct CachedView {
    set: Arc<CgroupSet>,
    start_ticks: u64,
    /// The pid namespace's init (0 for the host's), checked on every use: pid namespace inodes
    /// are reused quickly, so a restarted container can bring back the same key.
    init_pid: u32,
    resolved: Instant,
}

impl CachedView {
    /// Whether the view may still be used: young enough, and its init is still the same process.
    fn is_current(&self, reader: &Collector) -> bool {
        self.resolved.elapsed() < VIEW_TTL
            && (self.init_pid == 0
                || start_ticks(reader, self.init_pid).ok() == Some(self.start_ticks))
    }
}

/// What the caller's status and namespace link say about its pid namespace.
#[derive(Debug, Clone, Copy)]
struct Namespace {
    /// Inode of the namespace.
    ino: u64,
    /// The host's (the daemon's) pid namespace.
    is_host: bool,
}

/// A remembered pid-namespace init, guarded against pid reuse by its start time.
#[derive(Debug, Clone, Copy)]
struct InitEntry {
    pid: u32,
    start_ticks: u64,
}

/// How long a resolved view is reused for callers with the same cgroups and pid namespace.
/// Within it a moved init or a changed cgroup of the init is not noticed; a caller that moves to
/// another cgroup is (its own cgroup file is read on every request).
const VIEW_TTL: Duration = Duration::from_secs(1);

/// A thread whose view was resolved, with its /proc/<tid>/cgroup kept open. Reads through that
/// descriptor fail with ESRCH once the thread has exited, even if its tid is reused, so an entry
/// can never answer for another thread; each read also shows whether the thread has moved.
#[derive(Debug)]
struct ThreadEntry {
    cgroup_file: Arc<File>,
    /// Hash of the cgroup file's text at resolution.
    cgroup_hash: [u64; 2],
    caller: ContainerCaller,
    resolved: Instant,
    used: u64,
}

/// Threads by host tid, least recently used dropped first.
#[derive(Debug, Default)]
struct ThreadCache {
    by_tid: HashMap<u32, ThreadEntry>,
    clock: u64,
}

/// Resolves callers, caching tid → view (checked against the thread's cgroup on every request),
/// pid namespace → init and (pid namespace, cgroups) → view.
#[derive(Debug)]
pub struct CallerResolver {
    /// Most threads remembered (0: none).
    thread_capacity: usize,
    threads: Mutex<ThreadCache>,
    inits: Mutex<HashMap<u64, InitEntry>>,
    views: Mutex<HashMap<(u64, [u64; 2]), CachedView>>,
}

/// A 128-bit fingerprint of a cgroup file's text: FNV-1a and a multiply-rotate hash with an
/// unrelated odd constant, so a text colliding in both is not a practical concern.
pub fn text_hash(bytes: &[u8]) -> [u64; 2] {
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &byte in bytes {
        b = (b ^ u64::from(byte))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(23);
    }
    [crate::state::fnv1a(crate::state::FNV_OFFSET, bytes), b]
}

/// Largest /proc/<tid>/cgroup text read through a kept descriptor (longer texts are resolved
/// without the thread cache).
const CGROUP_TEXT_MAX: usize = 8192;

impl Default for CallerResolver {
    fn default() -> Self {
        CallerResolver::new(THREAD_CACHE_CAPACITY)
    }
}

impl CallerResolver {
    /// A resolver remembering at most `thread_capacity` threads.
    pub fn new(thread_capacity: usize) -> Self {
        CallerResolver {
            thread_capacity,
            threads: Mutex::default(),
            inits: Mutex::default(),
            views: Mutex::default(),
        }
    }

    /// Forgets what can no longer be used: threads whose resolution is older than
    /// [`THREAD_TTL`] (exited threads among them, whose kept descriptors are closed here) and
    /// views older than [`VIEW_TTL`]; the tables give back their spare room. Returns how many
    /// threads were forgotten.
    pub fn prune(&self) -> usize {
        let mut forgotten = 0;
        if let Ok(mut cache) = self.threads.lock() {
            let before = cache.by_tid.len();
            cache
                .by_tid
                .retain(|_, e| e.resolved.elapsed() < THREAD_TTL);
            shrink_if_sparse(&mut cache.by_tid);
            forgotten = before - cache.by_tid.len();
        }
        if let Ok(mut views) = self.views.lock() {
            views.retain(|_, v| v.resolved.elapsed() < VIEW_TTL);
            shrink_if_sparse(&mut views);
        }
        forgotten
    }

    /// Resolves the view for thread `pid` (a host tid from the FUSE request).
    pub fn resolve(&self, reader: &Collector, pid: u32) -> Result<Viewer> {
        if pid == 0 {
            // The kernel sends 0 for callers outside our pid namespace: we cannot tell whose
            // view it is, so nothing is shown.
            return Err(ViewError::CallerOutsideNamespace);
        }
        let mut buf = [0u8; CGROUP_TEXT_MAX];
        if let Some(caller) = self.known_thread(pid, &mut buf) {
            return Ok(Viewer::Container(caller));
        }
        // One small read per request: a process may move between cgroups at any time.
        let cgroup_path = reader.host_paths().proc_root.join(format!("{pid}/cgroup"));
        let cgroup_file = File::open(&cgroup_path).map_err(|e| Error::io(&cgroup_path, e))?;
        let n = read_at(&cgroup_file, &mut buf, 0).map_err(|e| Error::io(&cgroup_path, e))?;
        let cgroup_text = std::str::from_utf8(&buf[..n]).map_err(|_| {
            Error::parse(&cgroup_path, proclens_cgroup::ParseError::new("not UTF-8"))
        })?;
        let lines = parse_pid_cgroup(cgroup_text).map_err(|e| Error::parse(&cgroup_path, e))?;
        let own = reader.layout().cgroup_set(&lines);
        if own.is_root() {
            return Ok(Viewer::Host);
        }
        let cgroup_hash = text_hash(&buf[..n]);
        let status_path = reader.host_paths().proc_root.join(format!("{pid}/status"));
        let status = parse_proc_status(&read_file(&status_path)?)
            .map_err(|e| Error::parse(&status_path, e))?;
        let ns_pid = status.ns_pids.last().copied().unwrap_or(pid);
        let is_host = status.ns_pids.len() == 1;
        let (set, start) = if !is_host && ns_pid == 1 {
            // A container's init reading itself: its own cgroups are the view, and neither its
            // namespace nor its start time is looked up now.
            (Arc::new(own), ContainerStart::of_pid(pid))
        } else {
            let view = self.view(reader, pid, own, cgroup_hash, is_host)?;
            (view.set, ContainerStart::known(view.start_ticks))
        };
        let caller = ContainerCaller {
            set,
            start,
            pid,
            ns_pid,
            state: Arc::default(),
        };
        if n < CGROUP_TEXT_MAX
            && self.thread_capacity > 0
            && proclens_cgroup::files::fails_stale_descriptors(&cgroup_file)
        {
            self.remember_thread(cgroup_file, cgroup_hash, caller.clone());
        }
        Ok(Viewer::Container(caller))
    }

    /// The remembered view of thread `pid`, if the thread is the one resolved (alive: its kept
    /// descriptor still reads) in the same cgroups, within [`THREAD_TTL`].
    fn known_thread(&self, pid: u32, buf: &mut [u8]) -> Option<ContainerCaller> {
        let (file, hash) = {
            let mut cache = self.threads.lock().ok()?;
            cache.clock += 1;
            let clock = cache.clock;
            let entry = cache.by_tid.get_mut(&pid)?;
            if entry.resolved.elapsed() >= THREAD_TTL {
                cache.by_tid.remove(&pid);
                return None;
            }
            entry.used = clock;
            (Arc::clone(&entry.cgroup_file), entry.cgroup_hash)
        };
        let current = read_at(&file, buf, 0)
            .ok()
            .filter(|&n| n < buf.len())
            .map(|n| text_hash(&buf[..n]));
        let mut cache = self.threads.lock().ok()?;
        if current != Some(hash) {
            // Exited (ESRCH: the tid may already be another thread's) or moved.
            cache.by_tid.remove(&pid);
            return None;
        }
        cache.by_tid.get(&pid).map(|e| e.caller.clone())
    }

    fn remember_thread(&self, cgroup_file: File, cgroup_hash: [u64; 2], caller: ContainerCaller) {
        let Ok(mut cache) = self.threads.lock() else {
            return;
        };
        if cache.by_tid.len() >= self.thread_capacity {
            // Drop the least recently used half.
            let mut used: Vec<u64> = cache.by_tid.values().map(|e| e.used).collect();
            let half = used.len() / 2;
            let cutoff = *used.select_nth_unstable(half).1;
            cache.by_tid.retain(|_, e| e.used > cutoff);
        }
        let used = cache.clock;
        cache.by_tid.insert(
            caller.pid,
            ThreadEntry {
                cgroup_file: Arc::new(cgroup_file),
                cgroup_hash,
                caller,
                resolved: Instant::now(),
                used,
            },
        );
    }

    /// The view of a caller that is not its namespace's init, shared by the callers with the
    /// same cgroups and pid namespace for [`VIEW_TTL`].
    fn view(
        &self,
        reader: &Collector,
        pid: u32,
        own: CgroupSet,
        cgroup_hash: [u64; 2],
        is_host: bool,
    ) -> Result<CachedView> {
        let ns_ino = pid_ns_inode(reader, pid)?;
        let key = (ns_ino, cgroup_hash);
        let cached = self.views.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(view) = cached.filter(|v| v.is_current(reader)) {
            return Ok(view);
        }
        let namespace = Namespace {
            ino: ns_ino,
            is_host,
        };
        let view = self.resolve_uncached(reader, pid, own, namespace)?;
        if let Ok(mut map) = self.views.lock() {
            if map.len() >= VIEW_CACHE_CAPACITY {
                map.retain(|_, v| v.resolved.elapsed() < VIEW_TTL);
                if map.len() >= VIEW_CACHE_CAPACITY {
                    map.clear();
                }
            }
            map.insert(key, view.clone());
        }
        Ok(view)
    }

    /// The full resolution: the caller's pid namespace, its init, and the DESIGN §3 rule.
    fn resolve_uncached(
        &self,
        reader: &Collector,
        pid: u32,
        own: CgroupSet,
        namespace: Namespace,
    ) -> Result<CachedView> {
        let resolved = Instant::now();
        if namespace.is_host {
            // Host pid namespace (hostPID pods, plain cgroup jobs): the cgroup alone decides.
            let start_ticks = oldest_start(reader, &own).unwrap_or(0);
            return Ok(CachedView {
                set: Arc::new(own),
                start_ticks,
                init_pid: 0,
                resolved,
            });
        }
        let init = self.init_of(reader, pid, namespace.ino)?;
        let init_set = reader.cgroups_of(init.pid)?;
        let set = choose_view(&own, &init_set);
        Ok(CachedView {
            set: Arc::new(set),
            start_ticks: init.start_ticks,
            init_pid: init.pid,
            resolved,
        })
    }

    /// Finds pid 1 of `pid`'s pid namespace, cached by namespace inode. Tried in order: the
    /// kernel's own translation (NS_GET_TGID_FROM_PIDNS, Linux 6.11+), a walk up the parents while
    /// they stay in the namespace, and a scan of /proc (callers that entered the namespace with
    /// setns — `runc exec`, `kubectl exec`, nsenter — have parents outside it). Only a verified
    /// init is cached.
    fn init_of(&self, reader: &Collector, pid: u32, ns_ino: u64) -> Result<InitEntry> {
        let cached = self
            .inits
            .lock()
            .map(|m| m.get(&ns_ino).copied())
            .unwrap_or(None);
        if let Some(entry) = cached {
            if start_ticks(reader, entry.pid).ok() == Some(entry.start_ticks) {
                return Ok(entry);
            }
        }
        let found = init_by_ioctl(reader, pid)
            .filter(|&init| is_init_of(reader, init, ns_ino))
            .or_else(|| init_by_walk(reader, pid, ns_ino))
            .or_else(|| init_by_scan(reader, ns_ino));
        let Some(init) = found else {
            return Err(ViewError::NoInit { pid });
        };
        let entry = InitEntry {
            pid: init,
            start_ticks: start_ticks(reader, init)?,
        };
        if let Ok(mut map) = self.inits.lock() {
            if map.len() >= INIT_CACHE_CAPACITY {
                map.clear();
            }
            map.insert(ns_ino, entry);
        }
        Ok(entry)
    }
}

/// `NS_GET_TGID_FROM_PIDNS`: `_IOR(0xb7, 0x7, int)` from linux/nsfs.h.
const NS_GET_TGID_FROM_PIDNS: libc::c_ulong = 0x8004_b707;

/// Inode of `pid`'s pid namespace.
fn pid_ns_inode(reader: &Collector, pid: u32) -> Result<u64> {
    let path = reader.host_paths().proc_root.join(format!("{pid}/ns/pid"));
    let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
    Ok(std::os::unix::fs::MetadataExt::ino(&meta))
}

/// Whether `pid` is pid 1 of the pid namespace with inode `ns_ino` (the cheap namespace check
/// first: the /proc scan calls this for every process).
fn is_init_of(reader: &Collector, pid: u32, ns_ino: u64) -> bool {
    if pid_ns_inode(reader, pid).ok() != Some(ns_ino) {
        return false;
    }
    let status_path = reader.host_paths().proc_root.join(format!("{pid}/status"));
    read_file(&status_path)
        .ok()
        .and_then(|t| parse_proc_status(&t).ok())
        .is_some_and(|s| s.ns_pids.last() == Some(&1))
}

/// Asks the kernel which host pid is pid 1 in `pid`'s namespace (Linux 6.11+; `None` before).
fn init_by_ioctl(reader: &Collector, pid: u32) -> Option<u32> {
    let path = reader.host_paths().proc_root.join(format!("{pid}/ns/pid"));
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the ioctl takes the pid to translate by value and returns the translated pid.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            NS_GET_TGID_FROM_PIDNS,
            1 as libc::c_int,
        )
    };
    u32::try_from(rc).ok().filter(|&p| p > 0)
}

/// Walks from `pid` up its parents while they stay in namespace `ns_ino`, looking for pid 1.
fn init_by_walk(reader: &Collector, pid: u32, ns_ino: u64) -> Option<u32> {
    let proc_root = &reader.host_paths().proc_root;
    let mut current = pid;
    for _ in 0..MAX_WALK {
        if is_init_of(reader, current, ns_ino) {
            return Some(current);
        }
        let stat_path = proc_root.join(format!("{current}/stat"));
        let stat = parse_proc_stat(&read_file(&stat_path).ok()?).ok()?;
        if stat.ppid == 0 || pid_ns_inode(reader, stat.ppid).ok()? != ns_ino {
            return None;
        }
        current = stat.ppid;
    }
    None
}

/// Scans every process for pid 1 of namespace `ns_ino` (the fallback for setns'd callers on
/// kernels without NS_GET_TGID_FROM_PIDNS; its result is cached).
fn init_by_scan(reader: &Collector, ns_ino: u64) -> Option<u32> {
    let entries = std::fs::read_dir(&reader.host_paths().proc_root).ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| is_init_of(reader, pid, ns_ino))
}

/// Start time of `pid` in ticks after boot.
fn start_ticks(reader: &Collector, pid: u32) -> Result<u64> {
    let path = reader.host_paths().proc_root.join(format!("{pid}/stat"));
    Ok(parse_proc_stat(&read_file(&path)?)
        .map_err(|e| Error::parse(&path, e))?
        .start_time_ticks)
}

/// The earliest start time among the processes of the cgroup (bounded scan).
fn oldest_start(reader: &Collector, set: &CgroupSet) -> Option<u64> {
    let tids = reader.thread_ids(set).ok()?;
    tids.iter()
        .take(4096)
        .filter_map(|&t| start_ticks(reader, t).ok())
        .min()
}

/// Per hierarchy: the init's cgroup (with a trailing `init.scope` removed, where systemd puts
/// PID 1) when it is a non-root ancestor of, or equal to, the caller's; otherwise the caller's own.
pub fn choose_view(own: &CgroupSet, init: &CgroupSet) -> CgroupSet {
    let paths = own
        .paths
        .iter()
        .enumerate()
        .map(|(i, own_path)| {
            let own_path = own_path.as_ref()?;
            let init_path = init.path(i).map(|p| match p.strip_suffix("/init.scope") {
                Some("") => "/",
                Some(parent) => parent,
                None => p,
            });
            match init_path {
                Some(ip) if ip != "/" && is_ancestor_or_self(ip, own_path) => Some(ip.to_string()),
                _ => Some(own_path.clone()),
            }
        })
        .collect();
    CgroupSet { paths }
}

fn is_ancestor_or_self(ancestor: &str, path: &str) -> bool {
    path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> CgroupSet {
        CgroupSet {
            paths: paths.iter().map(|p| Some(p.to_string())).collect(),
        }
    }

    fn remembered(resolver: &CallerResolver, pid: u32, age: Duration) {
        let file = File::open("/proc/self/cgroup").unwrap();
        resolver.remember_thread(
            file,
            [0, 0],
            ContainerCaller {
                set: Arc::new(set(&["/c1"])),
                start: ContainerStart::known(1),
                pid,
                ns_pid: 1,
                state: Arc::default(),
            },
        );
        let mut cache = resolver.threads.lock().unwrap();
        let entry = cache.by_tid.get_mut(&pid).unwrap();
        entry.resolved = Instant::now().checked_sub(age).unwrap();
    }

    #[test]
    fn prune_forgets_only_expired_threads() {
        let resolver = CallerResolver::new(16);
        remembered(&resolver, 10, THREAD_TTL + Duration::from_secs(1));
        remembered(&resolver, 11, Duration::ZERO);
        assert_eq!(resolver.prune(), 1);
        let cache = resolver.threads.lock().unwrap();
        assert_eq!(cache.by_tid.keys().collect::<Vec<_>>(), [&11]);
    }

    #[test]
    fn exec_into_container_shares_the_cgroup() {
        assert_eq!(choose_view(&set(&["/c1"]), &set(&["/c1"])), set(&["/c1"]));
    }

    #[test]
    fn shared_pid_namespace_pod_uses_own_cgroup() {
        let own = set(&["/pod/app"]);
        let pause = set(&["/pod/pause"]);
        assert_eq!(choose_view(&own, &pause), own);
    }

    #[test]
    fn systemd_container_uses_the_container_root() {
        let own = set(&["/lxc/c1/system.slice/nginx.service"]);
        let init = set(&["/lxc/c1/init.scope"]);
        assert_eq!(choose_view(&own, &init), set(&["/lxc/c1"]));
    }

    #[test]
    fn root_init_never_widens_the_view() {
        let own = set(&["/limited"]);
        assert_eq!(choose_view(&own, &set(&["/"])), own);
        assert_eq!(choose_view(&own, &set(&["/init.scope"])), own);
        assert!(!is_ancestor_or_self("/a", "/ab"));
    }

    #[test]
    fn per_hierarchy_decision() {
        let own = set(&["/c1/sub", "/"]);
        let init = set(&["/c1", "/"]);
        assert_eq!(choose_view(&own, &init), set(&["/c1", "/"]));
    }
}
