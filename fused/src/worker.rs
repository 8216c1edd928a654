//! The serving worker: a child of the supervisor that inherits cloned /dev/fuse fds of both
//! connections, the lxcfs layout's and the per-container subtree's (one per serving thread, plus
//! one per spare thread it may start while slow requests hold the others), serves requests on
//! them, and on SIGTERM finishes the requests it has read and exits, leaving the connections to
//! the next worker. Beside the serving threads runs one loadavg
//! sampler thread ([`crate::sampler`]), stopped with them.

use crate::config::Config;
use crate::fuse::Handler;
use crate::sampler::LoadTracker;
use crate::shared::SharedState;
use crate::shm::Region;
use crate::signals::{install_interrupt_handler, SignalSet};
use crate::subtree::SubtreeFs;
use crate::{fs, fuse, render};
use anyhow::Context;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Environment variable naming the inherited connection fds (comma-separated) of a worker.
pub const FDS_ENV: &str = "PROCLENS_WORKER_FDS";
/// Environment variable naming the inherited fds (comma-separated) of the subtree's connection.
pub const SUBTREE_FDS_ENV: &str = "PROCLENS_WORKER_SUBTREE_FDS";
/// Environment variable naming the fd a worker writes one byte to once it serves.
pub const READY_ENV: &str = "PROCLENS_WORKER_READY_FD";
/// Environment variable naming the shared state region's memfd.
pub const STATE_ENV: &str = "PROCLENS_WORKER_STATE_FD";

/// What a worker inherits from the supervisor.
pub struct Inherited {
    /// Cloned connection fds: the first `--threads` for the serving threads, the rest for spare
    /// threads started on demand.
    pub fds: Vec<OwnedFd>,
    /// Cloned fds of the subtree's connection (none from a supervisor without a subtree): the
    /// first for its serving thread, the rest for spares.
    pub subtree_fds: Vec<OwnedFd>,
    /// Pipe to signal readiness on.
    pub ready: Option<OwnedFd>,
    /// The shared state region.
    pub state: OwnedFd,
}

/// How often the worker forgets expired caller resolutions, drops old subtree content, gives
/// back state region pages that hold only free slots and cells, and returns the allocator's free
/// pages.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the worker closes descriptors left unread since the previous time (so one stays
/// open for 30 to 60 s after its last read).
const IDLE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a stopping worker waits for its threads to finish their current request.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes ownership of an inherited fd number named in the environment.
fn inherited_fd(text: &str) -> anyhow::Result<OwnedFd> {
    let fd: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("bad inherited fd {text:?}"))?;
    // SAFETY: F_GETFD only checks that the number is an open descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    anyhow::ensure!(flags >= 0, "fd {fd} is not open");
    // SAFETY: the supervisor passed this open fd to us and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of the fds of a comma-separated list (empty: none).
fn inherited_fds(list: &str) -> anyhow::Result<Vec<OwnedFd>> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',').map(inherited_fd).collect()
}

/// The worker's fds, if this process was started as a worker.
pub fn inherited() -> anyhow::Result<Option<Inherited>> {
    let Ok(list) = std::env::var(FDS_ENV) else {
        return Ok(None);
    };
    let fds = inherited_fds(&list)?;
    anyhow::ensure!(!fds.is_empty(), "{FDS_ENV} is empty");
    let subtree_fds = match std::env::var(SUBTREE_FDS_ENV) {
        Ok(list) => inherited_fds(&list)?,
        Err(_) => Vec::new(),
    };
    let ready = std::env::var(READY_ENV)
        .ok()
        .map(|t| inherited_fd(&t))
        .transpose()?;
    let state = std::env::var(STATE_ENV).with_context(|| format!("{STATE_ENV} not set"))?;
    let state = inherited_fd(&state)?;
    // Children of this worker (none today) must not think they are workers.
    for var in [FDS_ENV, SUBTREE_FDS_ENV, READY_ENV, STATE_ENV] {
        std::env::remove_var(var);
    }
    Ok(Some(Inherited {
        fds,
        subtree_fds,
        ready,
        state,
    }))
}

/// Serves on the inherited fds until SIGTERM (graceful stop) or until the filesystem is
/// unmounted.
pub fn run(config: &Config, inherited: Inherited) -> anyhow::Result<()> {
    let Inherited {
        fds,
        subtree_fds,
        ready,
        state,
    } = inherited;
    let stop_signals = SignalSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    stop_signals.block().context("blocking signals")?;
    install_interrupt_handler().context("installing the SIGUSR1 handler")?;

    let region = Region::map(state).context("mapping the shared state")?;
    let shared = Arc::new(SharedState::attach(region).context("attaching the shared state")?);
    let with_subtree = !subtree_fds.is_empty();
    let (filesystem, tracker) = build_filesystem(config, Arc::clone(&shared), with_subtree)?;
    let filesystem = Arc::new(filesystem);
    let subtree = Arc::new(SubtreeFs::new(
        Arc::clone(&filesystem),
        config.subtree_max_age,
    ));
    let sampler = {
        let tracker = Arc::clone(&tracker);
        std::thread::Builder::new()
            .name("loadavg".to_string())
            .spawn(move || tracker.run())
            .context("spawning the loadavg sampler")?
    };
    let connections = Connections {
        fds,
        subtree_fds,
        filesystem,
        subtree,
    };
    let result = serve(config, connections, ready, &stop_signals, &shared);
    tracker.stop();
    if sampler.join().is_err() {
        tracing::error!("the loadavg sampler panicked");
    }
    result
}

/// How often the worker looks for serving threads held by one request. A request held across
/// two looks has taken at least this long.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a spare serving thread waits for a request before it stops and gives its fd back.
const SPARE_IDLE_LIMIT: Duration = Duration::from_secs(5);

/// One serving thread and what the worker watches of it.
struct ServingThread {
    handle: JoinHandle<(OwnedFd, std::io::Result<fuse::session::Ended>)>,
    /// The loop's request counter ([`fuse::session::LoopControl::progress`]).
    progress: Arc<AtomicU64>,
    /// The counter at the previous look.
    seen: u64,
    /// Started on demand; stops when idle.
    spare: bool,
}

impl ServingThread {
    /// Whether the thread has held the same request since the previous look (and remembers the
    /// counter for the next one).
    fn held_since_last_look(&mut self) -> bool {
        let now = self.progress.load(Ordering::Relaxed);
        let held = now % 2 == 1 && now == self.seen;
        self.seen = now;
        held
    }
}

/// The serving threads: one per base fd, always running, plus spare threads started while every
/// running thread is held by a slow request (a hung cgroup or /proc read must not stall every
/// other container's reads), each stopped after [`SPARE_IDLE_LIMIT`] without a request.
struct ServingPool<H> {
    filesystem: Arc<H>,
    stop: Arc<AtomicBool>,
    threads: Vec<ServingThread>,
    /// Connection fds (held by the supervisor too) no thread serves on now.
    spare_fds: Vec<OwnedFd>,
    /// Whether the last look found every thread held and no spare fd left (logged once).
    exhausted: bool,
    started: usize,
    /// Prefix of the threads' names.
    name: &'static str,
}

impl<H: Handler + 'static> ServingPool<H> {
    /// Starts one thread per fd in `base`; `spares` wait for [`Self::watch`] to need them.
    /// Threads are named `<name>-N` (`<name>-spare-N`).
    fn start(
        name: &'static str,
        filesystem: &Arc<H>,
        base: Vec<OwnedFd>,
        spares: Vec<OwnedFd>,
    ) -> anyhow::Result<ServingPool<H>> {
        let mut pool = ServingPool {
            name,
            filesystem: Arc::clone(filesystem),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::with_capacity(base.len() + spares.len()),
            spare_fds: spares,
            exhausted: false,
            started: 0,
        };
        for fd in base {
            pool.spawn(fd, false)?;
        }
        Ok(pool)
    }

    fn spawn(&mut self, fd: OwnedFd, spare: bool) -> anyhow::Result<()> {
        let (filesystem, stop) = (Arc::clone(&self.filesystem), Arc::clone(&self.stop));
        let progress = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&progress);
        let name = if spare {
            format!("{}-spare-{}", self.name, self.started)
        } else {
            format!("{}-{}", self.name, self.started)
        };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let control = fuse::session::LoopControl {
                    stop: &stop,
                    progress: &counter,
                    idle_limit: spare.then_some(SPARE_IDLE_LIMIT),
                };
                let result = fuse::session::serve(fd.as_fd(), filesystem.as_ref(), &control);
                if let Err(err) = &result {
                    tracing::error!(%err, "serving loop failed");
                }
                // The fd stays open in the supervisor: handing our copy back ends nothing.
                (fd, result)
            })
            .context("spawning a serving thread")?;
        self.started += 1;
        self.threads.push(ServingThread {
            handle,
            progress,
            seen: 0,
            spare,
        });
        Ok(())
    }

    /// Joins spare threads that stopped for being idle and keeps their fds for the next need.
    fn reap_idle_spares(&mut self) {
        let mut index = 0;
        while index < self.threads.len() {
            let thread = &self.threads[index];
            if !(thread.spare && thread.handle.is_finished()) {
                index += 1;
                continue;
            }
            let thread = self.threads.swap_remove(index);
            match thread.handle.join() {
                Ok((fd, Ok(fuse::session::Ended::Idle))) => {
                    tracing::info!(
                        threads = self.threads.len(),
                        "spare serving thread stopped after {SPARE_IDLE_LIMIT:?} idle"
                    );
                    self.spare_fds.push(fd);
                }
                Ok((fd, _)) => self.spare_fds.push(fd),
                Err(_) => tracing::error!("a spare serving thread panicked"),
            }
        }
    }

    /// Starts a spare thread if every running thread has held one request since the previous
    /// look (one spare per look, so a burst of slow requests adds threads one interval apart).
    fn watch(&mut self) -> anyhow::Result<()> {
        self.reap_idle_spares();
        let mut all_held = !self.threads.is_empty();
        for thread in &mut self.threads {
            // Every thread's counter is sampled, so each has a fresh `seen` for the next look.
            all_held &= thread.held_since_last_look() && !thread.handle.is_finished();
        }
        if !all_held {
            self.exhausted = false;
            return Ok(());
        }
        match self.spare_fds.pop() {
            Some(fd) => {
                tracing::warn!(
                    threads = self.threads.len() + 1,
                    connection = self.name,
                    "every serving thread has held one request for over {WATCH_INTERVAL:?} \
                     (a slow cgroup or /proc file?): started a spare serving thread"
                );
                self.spawn(fd, true)
            }
            None => {
                if !self.exhausted {
                    tracing::error!(
                        threads = self.threads.len(),
                        "every serving thread, spares included, is held by a slow request: \
                         reads wait until one ends (raise --spare-threads?)"
                    );
                    self.exhausted = true;
                }
                Ok(())
            }
        }
    }

    /// Whether no thread serves any more (the filesystem was unmounted).
    fn all_ended(&self) -> bool {
        self.threads
            .iter()
            .all(|t| !t.spare && t.handle.is_finished())
    }

    /// Raises the stop flag and interrupts every thread's wait until all have returned, or until
    /// `STOP_TIMEOUT`; fails naming how many did not stop.
    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + STOP_TIMEOUT;
        // A thread may be between its flag check and its wait: keep interrupting until it is out.
        while !self.threads.iter().all(|t| t.handle.is_finished()) && Instant::now() < deadline {
            for thread in self.threads.iter().filter(|t| !t.handle.is_finished()) {
                // SAFETY: the thread is alive (not finished, not joined), so its pthread_t is
                // valid.
                unsafe { libc::pthread_kill(thread.handle.as_pthread_t(), libc::SIGUSR1) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let stuck = self
            .threads
            .iter()
            .filter(|t| !t.handle.is_finished())
            .count();
        anyhow::ensure!(
            stuck == 0,
            "{stuck} serving threads did not stop within {STOP_TIMEOUT:?}"
        );
        Ok(())
    }
}

/// The worker's two connections and their filesystems.
struct Connections {
    /// The lxcfs layout's connection fds: `--threads` serving threads, the rest spares.
    fds: Vec<OwnedFd>,
    /// The subtree's connection fds (empty without a subtree): one serving thread, the rest
    /// spares.
    subtree_fds: Vec<OwnedFd>,
    filesystem: Arc<fs::ProcFs>,
    subtree: Arc<SubtreeFs>,
}

/// Runs one serving thread per base fd of each connection (and spares on demand) until a stop
/// signal (then lets them finish the requests in hand) or until the filesystem is unmounted.
fn serve(
    config: &Config,
    connections: Connections,
    ready: Option<OwnedFd>,
    stop_signals: &SignalSet,
    shared: &SharedState,
) -> anyhow::Result<()> {
    let Connections {
        fds: mut base,
        subtree_fds: mut subtree_base,
        filesystem,
        subtree,
    } = connections;
    let spares = base.split_off(config.threads.min(base.len()));
    let spare_count = spares.len();
    let mut pool = ServingPool::start("fuse", &filesystem, base, spares)?;
    let subtree_spares = subtree_base.split_off(subtree_base.len().min(1));
    let mut subtree_pool = ServingPool::start("subtree", &subtree, subtree_base, subtree_spares)?;
    if let Some(ready) = ready {
        let mut pipe = std::fs::File::from(ready);
        let _ = pipe.write_all(b"R");
    }
    tracing::info!(
        threads = pool.threads.len(),
        spare_threads = spare_count,
        subtree_threads = subtree_pool.threads.len(),
        pid = std::process::id(),
        "worker serving"
    );
    // Start-up code (argument parsing, cgroup discovery) is not needed again: serving maps back
    // in only what it runs.
    match crate::resident::release_startup_pages() {
        Ok(released) => tracing::debug!(
            mappings = released.mappings,
            file_kb = released.file_kb,
            "released resident pages"
        ),
        Err(err) => tracing::warn!(%err, "cannot release resident pages"),
    }

    let mut next_release = Instant::now() + RELEASE_INTERVAL;
    let mut next_idle_check = Instant::now() + IDLE_INTERVAL;
    loop {
        if pool.all_ended() {
            tracing::info!("all serving loops ended: the filesystem is unmounted");
            return Ok(());
        }
        pool.watch()?;
        subtree_pool.watch()?;
        if Instant::now() >= next_release {
            let forgotten = filesystem.forget_expired_callers();
            if forgotten > 0 {
                tracing::debug!(forgotten, "forgot expired caller resolutions");
            }
            let dropped = subtree.prune();
            if dropped > 0 {
                tracing::debug!(dropped, "dropped old subtree content");
            }
            let released = shared.release_free_pages();
            if released > 0 {
                tracing::debug!(kib = released / 1024, "freed unused state region pages");
            }
            crate::resident::trim_heap();
            next_release = Instant::now() + RELEASE_INTERVAL;
        }
        if Instant::now() >= next_idle_check {
            let files = filesystem.close_idle_files();
            if files > 0 {
                tracing::debug!(files, "closed idle kept files");
            }
            next_idle_check = Instant::now() + IDLE_INTERVAL;
        }
        if let Some(signal) = stop_signals.wait(WATCH_INTERVAL)? {
            tracing::info!(signal, "worker stopping: finishing requests in hand");
            break;
        }
    }
    let stopped = pool.stop();
    subtree_pool.stop().and(stopped)
}

/// Descriptors the caches may keep open: RLIMIT_NOFILE raised to its hard limit, minus a reserve
/// for everything else.
fn descriptor_budget() -> usize {
    const RESERVE: usize = 256;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVE)
}

/// Builds the filesystem and the load tracker from the configuration (cgroup discovery happens
/// here, in the worker, so a new binary's worker uses its own code for it).
fn build_filesystem(
    config: &Config,
    shared: Arc<SharedState>,
    with_subtree: bool,
) -> anyhow::Result<(fs::ProcFs, Arc<LoadTracker>)> {
    let budget = descriptor_budget();
    let thread_files = crate::caller::THREAD_CACHE_CAPACITY.min(budget / 2);
    let open_files = config.open_files.min(budget - thread_files);
    if open_files < config.open_files {
        tracing::warn!(
            wanted = config.open_files,
            open_files,
            "the open-file limit (RLIMIT_NOFILE) leaves room for fewer kept files"
        );
    }
    let files = proclens_cgroup::files::FileCache::new(open_files);
    let reader = proclens_cgroup::Collector::discover(config.host.clone(), files)
        .context("discovering cgroup hierarchies")?;
    for h in &reader.layout().hierarchies {
        tracing::debug!(version = ?h.version, controllers = %h.controllers.join(","),
            mount = %h.mount_point.display(), "cgroup hierarchy");
    }
    let with_pressure = reader
        .layout()
        .hierarchy_for(proclens_cgroup::Controller::Memory)
        .and_then(|i| reader.layout().version(i))
        == Some(proclens_cgroup::Version::V2);
    let tracker = Arc::new(LoadTracker::new(reader.clone(), Arc::clone(&shared)));
    let filesystem = fs::ProcFs::new(
        render::Renderer::new(
            reader,
            config.cpu_view,
            Arc::clone(&shared),
            Arc::clone(&tracker),
        ),
        crate::caller::CallerResolver::new(thread_files),
        with_pressure,
        shared,
        with_subtree.then(|| config.subtree_mountpoint.clone()),
    );
    Ok((filesystem, tracker))
}
