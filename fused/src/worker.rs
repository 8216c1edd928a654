//! The serving worker: a child of the supervisor that inherits cloned /dev/fuse fds (one per
//! thread), serves requests on them, and on SIGTERM finishes the requests it has read and exits,
//! leaving the connection to the next worker. Beside the serving threads runs one loadavg
//! sampler thread ([`crate::sampler`]), stopped with them.

use crate::config::Config;
use crate::sampler::LoadTracker;
use crate::shared::SharedState;
use crate::shm::Region;
use crate::signals::{install_interrupt_handler, SignalSet};
use crate::{fs, fuse, render};
use anyhow::Context;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Environment variable naming the inherited connection fds (comma-separated) of a worker.
pub const FDS_ENV: &str = "PROCLENS_WORKER_FDS";
/// Environment variable naming the fd a worker writes one byte to once it serves.
pub const READY_ENV: &str = "PROCLENS_WORKER_READY_FD";
/// Environment variable naming the shared state region's memfd.
pub const STATE_ENV: &str = "PROCLENS_WORKER_STATE_FD";

/// What a worker inherits from the supervisor.
pub struct Inherited {
    /// Cloned connection fds, one per serving thread.
    pub fds: Vec<OwnedFd>,
    /// Pipe to signal readiness on.
    pub ready: Option<OwnedFd>,
    /// The shared state region.
    pub state: OwnedFd,
}

/// How often the worker forgets expired caller resolutions, gives back state region pages that
/// hold only free slots and cells, and returns the allocator's free pages.
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

/// The worker's fds, if this process was started as a worker.
pub fn inherited() -> anyhow::Result<Option<Inherited>> {
    let Ok(list) = std::env::var(FDS_ENV) else {
        return Ok(None);
    };
    let fds = list
        .split(',')
        .map(inherited_fd)
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!fds.is_empty(), "{FDS_ENV} is empty");
    let ready = std::env::var(READY_ENV)
        .ok()
        .map(|t| inherited_fd(&t))
        .transpose()?;
    let state = std::env::var(STATE_ENV).with_context(|| format!("{STATE_ENV} not set"))?;
    let state = inherited_fd(&state)?;
    // Children of this worker (none today) must not think they are workers.
    for var in [FDS_ENV, READY_ENV, STATE_ENV] {
        std::env::remove_var(var);
    }
    Ok(Some(Inherited { fds, ready, state }))
}

/// Serves on `fds` until SIGTERM (graceful stop) or until the filesystem is unmounted.
pub fn run(config: &Config, inherited: Inherited) -> anyhow::Result<()> {
    let Inherited { fds, ready, state } = inherited;
    let stop_signals = SignalSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    stop_signals.block().context("blocking signals")?;
    install_interrupt_handler().context("installing the SIGUSR1 handler")?;

    let region = Region::map(state).context("mapping the shared state")?;
    let shared = Arc::new(SharedState::attach(region).context("attaching the shared state")?);
    let (filesystem, tracker) = build_filesystem(config, Arc::clone(&shared))?;
    let filesystem = Arc::new(filesystem);
    let sampler = {
        let tracker = Arc::clone(&tracker);
        std::thread::Builder::new()
            .name("loadavg".to_string())
            .spawn(move || tracker.run())
            .context("spawning the loadavg sampler")?
    };
    let result = serve(fds, ready, &stop_signals, &filesystem, &shared);
    tracker.stop();
    if sampler.join().is_err() {
        tracing::error!("the loadavg sampler panicked");
    }
    result
}

/// Runs one serving thread per fd until a stop signal (then lets them finish the requests in
/// hand) or until the filesystem is unmounted.
fn serve(
    fds: Vec<OwnedFd>,
    ready: Option<OwnedFd>,
    stop_signals: &SignalSet,
    filesystem: &Arc<fs::ProcFs>,
    shared: &SharedState,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(fds.len());
    for (index, fd) in fds.into_iter().enumerate() {
        let (filesystem, stop) = (Arc::clone(filesystem), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(format!("fuse-{index}"))
            .spawn(move || {
                let result = fuse::session::serve(fd.as_fd(), filesystem.as_ref(), &stop);
                if let Err(err) = &result {
                    tracing::error!(%err, "serving loop failed");
                }
                // The fd stays open in the supervisor: dropping our copy ends nothing.
                drop(fd);
                result
            })
            .context("spawning a serving thread")?;
        threads.push(thread);
    }
    if let Some(ready) = ready {
        let mut pipe = std::fs::File::from(ready);
        let _ = pipe.write_all(b"R");
    }
    tracing::info!(
        threads = threads.len(),
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
        if threads.iter().all(|t| t.is_finished()) {
            tracing::info!("all serving loops ended: the filesystem is unmounted");
            return Ok(());
        }
        if Instant::now() >= next_release {
            let forgotten = filesystem.forget_expired_callers();
            if forgotten > 0 {
                tracing::debug!(forgotten, "forgot expired caller resolutions");
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
        if let Some(signal) = stop_signals.wait(Duration::from_millis(500))? {
            tracing::info!(signal, "worker stopping: finishing requests in hand");
            break;
        }
    }
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + STOP_TIMEOUT;
    // A thread may be between its flag check and the read: keep interrupting until it is out.
    while !threads.iter().all(|t| t.is_finished()) && Instant::now() < deadline {
        for thread in threads.iter().filter(|t| !t.is_finished()) {
            // SAFETY: the thread is alive (not finished, not joined), so its pthread_t is valid.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), libc::SIGUSR1) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let stuck = threads.iter().filter(|t| !t.is_finished()).count();
    anyhow::ensure!(
        stuck == 0,
        "{stuck} serving threads did not stop within {STOP_TIMEOUT:?}"
    );
    Ok(())
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
    let reader = proclens_cgroup::CgroupReader::discover(config.host.clone())
        .context("discovering cgroup hierarchies")?
        .with_open_files(open_files);
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
    );
    Ok((filesystem, tracker))
}
