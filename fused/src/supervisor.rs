//! The supervisor: mounts the main filesystem and the per-container subtree, owns their
//! /dev/fuse connections and the per-thread clones of them, and keeps one serving worker running.
//! It does nothing else, so it has nothing to crash on.
//!
//! - A worker that dies (crash, `kill -9`) is replaced at once on the same fds. Requests it had
//!   read but not answered are requeued by FUSE_NOTIFY_RESEND (Linux 6.9+); on older kernels the
//!   dead worker's clones are closed, which ends those requests with ECONNABORTED (at most one per
//!   serving thread), and fresh clones are made.
//! - SIGHUP (`systemctl reload`): the worker finishes the requests it holds and exits, and a
//!   worker from the binary now on disk takes over; requests arriving in between wait in the
//!   kernel's queue. If the new binary does not come up, the supervisor's own image serves.
//! - SIGUSR2: the supervisor re-executes itself from the binary on disk, keeping the connection
//!   (inherited fds), and then replaces the worker the same way.
//! - SIGTERM/SIGINT: unmount, stop the worker, exit 0.

use crate::config::Config;
use crate::fuse;
use crate::resident;
use crate::shared;
use crate::shm::Region;
use crate::signals::SignalSet;
use crate::stats;
use crate::worker;
use anyhow::{bail, Context};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Environment variable carrying a re-executed supervisor's state:
/// `master,worker_pid,state,clone...`.
const ADOPT_ENV: &str = "PROCLENS_SUPERVISOR_ADOPT";
/// Environment variable carrying the subtree connection of a re-executed supervisor:
/// `master,clone...` (absent from images before the subtree: the new image mounts it).
const ADOPT_SUBTREE_ENV: &str = "PROCLENS_SUPERVISOR_ADOPT_SUBTREE";
/// Spare serving threads of the subtree's connection (beside its one serving thread): its
/// requests are few, one GETATTR and READ per changed file and maximum age.
const SUBTREE_SPARE_THREADS: usize = 2;
/// How long a new worker may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping worker may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Restarts within this time of the previous one count as a crash loop and back off.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(2);

/// The running worker.
struct Worker {
    pid: u32,
    child: Option<Child>,
    started: Instant,
}

impl Worker {
    /// Non-blocking check whether the worker exited; returns its status.
    fn try_reap(&mut self) -> Option<std::process::ExitStatus> {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten(),
            None => {
                // Adopted across a supervisor re-exec: reap by pid.
                let mut status = 0;
                // SAFETY: waitpid on our own child with WNOHANG.
                let rc =
                    unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
                (rc > 0).then(|| std::process::ExitStatus::from_raw(status))
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: sending a signal to our own (unreaped) child.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Asks the worker to stop gracefully; kills it after `STOP_TIMEOUT`. Returns whether it
    /// stopped on its own (so no request it held is lost).
    fn stop(&mut self) -> bool {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.try_reap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        tracing::error!(pid = self.pid, "worker did not stop in time: killing it");
        self.signal(libc::SIGKILL);
        while self.try_reap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

/// The supervisor's resources.
struct Supervisor {
    config: Config,
    args: Vec<OsString>,
    /// The binary on disk (a newer one after an upgrade).
    exe_path: PathBuf,
    /// The image this supervisor runs, kept open as the fallback for a broken upgrade.
    own_image: std::fs::File,
    master: OwnedFd,
    clones: Vec<OwnedFd>,
    /// The subtree's connection and its clones.
    subtree_master: OwnedFd,
    subtree_clones: Vec<OwnedFd>,
    /// The shared state region (memfd), handed to every worker.
    state: OwnedFd,
    resend_supported: Option<bool>,
    last_restart: Option<Instant>,
    backoff: Duration,
    /// The state region, mapped for fused's own counters (only its header page is touched).
    region: Region,
    /// Writes the stats file, if one is configured.
    publisher: Option<Publisher>,
}

/// Writes fused's counters to the stats file every interval ([`crate::stats`]). Runs in the
/// supervisor, which only loads the counters: publishing never touches a read.
struct Publisher {
    path: PathBuf,
    interval: Duration,
    next: Instant,
    /// Whether the last write failed (logged once until one succeeds).
    failing: bool,
}

impl Publisher {
    /// Writes the file now if it is due, and returns how long until the next write.
    fn tick(&mut self, region: &Region) -> Duration {
        let now = Instant::now();
        if now >= self.next {
            self.publish(region);
            self.next = now + self.interval;
        }
        self.next.saturating_duration_since(now)
    }

    fn publish(&mut self, region: &Region) {
        let written_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let text = stats::render(
            &stats::Counters::new(region).snapshot(),
            written_at,
            self.interval,
        );
        match stats::write_atomically(&self.path, &text) {
            Ok(()) if self.failing => {
                tracing::info!(path = %self.path.display(), "stats file written again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(err) if !self.failing => {
                tracing::warn!(path = %self.path.display(), %err,
                    "cannot write the stats file (retried every interval; logged once)");
                self.failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Runs the supervisor until SIGTERM/SIGINT.
pub fn run(config: Config, args: Vec<OsString>) -> anyhow::Result<()> {
    let signals = SignalSet::of(&[
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGCHLD,
        libc::SIGUSR2,
    ]);
    signals.block().context("blocking signals")?;
    let exe_path = std::env::current_exe().context("locating the proclens-fused binary")?;
    let own_image = std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?;

    let adopted = adopted_state()?;
    let adopted_subtree = adopted_subtree()?;
    let (master, clones, state, worker_pid) = match adopted {
        Some(Adopted {
            master,
            worker_pid,
            state,
            mut clones,
        }) => {
            tracing::info!(worker_pid, "supervisor re-executed: connection adopted");
            // An image from before spare threads handed over fewer clones: add the missing ones.
            let wanted = config.threads + config.spare_threads;
            if clones.len() < wanted {
                clones.extend(make_clones(&master, wanted - clones.len())?);
            }
            (master, clones, state, Some(worker_pid))
        }
        None => {
            fuse::mount::prepare_mountpoint(&config.mountpoint)?;
            // Both mountpoints are checked before either is mounted: a busy one fails the start
            // without leaving the other mounted.
            fuse::mount::prepare_mountpoint(&config.subtree_mountpoint)?;
            let master = fuse::mount::mount(&config.mountpoint)?;
            tracing::info!(mountpoint = %config.mountpoint.display(), threads = config.threads,
                cpu_view = ?config.cpu_view, "mounted");
            let clones = make_clones(&master, config.threads + config.spare_threads)?;
            let region = shared::create_region(shared::Geometry::default())
                .context("creating the shared state region")?;
            let state = region
                .fd()
                .try_clone_to_owned()
                .context("duplicating the state fd")?;
            (master, clones, state, None)
        }
    };
    let (subtree_master, subtree_clones) = match adopted_subtree {
        Some(connection) => connection,
        None => mount_subtree(&config)?,
    };
    let region = Region::map(state.try_clone().context("duplicating the state fd")?)
        .context("mapping the shared state for fused's counters")?;
    let publisher = supervisor_publisher(&config);
    let mut supervisor = Supervisor {
        config,
        args,
        exe_path,
        own_image,
        master,
        clones,
        subtree_master,
        subtree_clones,
        state,
        resend_supported: None,
        last_restart: None,
        backoff: Duration::from_millis(10),
        region,
        publisher,
    };
    let mut worker = match worker_pid {
        Some(pid) => {
            // The adopted worker runs the old code: replace it like a reload.
            let mut old = Worker {
                pid,
                child: None,
                started: Instant::now(),
            };
            supervisor.replace(&mut old)?
        }
        None => supervisor.start_worker()?,
    };
    notify(&[sd_notify::NotifyState::Ready]);

    // From here the supervisor only waits: give back what mounting, spawning and logging left
    // resident (and again after each event, which runs that code once more).
    release_startup_pages();
    loop {
        let mut timeout = Duration::from_secs(1);
        if let Some(publisher) = &mut supervisor.publisher {
            timeout = timeout.min(publisher.tick(&supervisor.region));
        }
        let Some(signal) = signals.wait(timeout.max(Duration::from_millis(1)))? else {
            // Catch a worker exit whose SIGCHLD was merged with another signal.
            if let Some(status) = worker.try_reap() {
                worker = supervisor.recover(status)?;
                release_startup_pages();
            }
            continue;
        };
        match signal {
            libc::SIGCHLD => {
                if let Some(status) = worker.try_reap() {
                    worker = supervisor.recover(status)?;
                }
            }
            libc::SIGHUP => {
                tracing::info!("reload: replacing the worker with the binary on disk");
                notify(&[sd_notify::NotifyState::Reloading]);
                worker = supervisor.replace(&mut worker)?;
                notify(&[sd_notify::NotifyState::Ready]);
            }
            libc::SIGUSR2 => {
                tracing::info!("re-executing the supervisor from the binary on disk");
                if let Err(err) = supervisor.reexec(&worker) {
                    tracing::error!(err = %format!("{err:#}"), "re-exec failed: carrying on");
                }
            }
            _ => {
                tracing::info!(signal, "stopping: unmounting");
                notify(&[sd_notify::NotifyState::Stopping]);
                fuse::mount::unmount(&supervisor.config.mountpoint).with_context(|| {
                    format!("unmounting {}", supervisor.config.mountpoint.display())
                })?;
                let subtree = &supervisor.config.subtree_mountpoint;
                if let Err(err) = fuse::mount::unmount(subtree) {
                    tracing::warn!(%err, path = %subtree.display(), "cannot unmount the subtree");
                }
                worker.stop();
                return Ok(());
            }
        }
        release_startup_pages();
    }
}

/// The stats file's writer, when `--stats-file` names one; the first write is due at once.
fn supervisor_publisher(config: &Config) -> Option<Publisher> {
    let path = config.stats_file.clone()?;
    tracing::info!(path = %path.display(), interval = ?config.stats_interval,
        "publishing fused's numbers");
    Some(Publisher {
        path,
        interval: config.stats_interval,
        next: Instant::now(),
        failing: false,
    })
}

/// Releases the resident pages the supervisor does not need while it waits
/// ([`resident::release_startup_pages`]); a failure costs only memory, so it is logged.
fn release_startup_pages() {
    match resident::release_startup_pages() {
        Ok(released) => tracing::debug!(
            mappings = released.mappings,
            file_kb = released.file_kb,
            "released resident pages"
        ),
        Err(err) => tracing::warn!(%err, "cannot release resident pages"),
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(%err, "cannot notify systemd");
    }
}

/// One clone of the connection per serving thread (spares included).
fn make_clones(master: &OwnedFd, threads: usize) -> anyhow::Result<Vec<OwnedFd>> {
    (0..threads)
        .map(|_| fuse::session::clone_fd(master.as_fd()).context("FUSE_DEV_IOC_CLONE on /dev/fuse"))
        .collect()
}

/// Mounts the per-container subtree at its mountpoint and clones its connection (one serving
/// thread and its spares).
fn mount_subtree(config: &Config) -> anyhow::Result<(OwnedFd, Vec<OwnedFd>)> {
    let path = &config.subtree_mountpoint;
    fuse::mount::prepare_mountpoint(path)?;
    let master = fuse::mount::mount_named(path, c"proclens-containers")?;
    tracing::info!(mountpoint = %path.display(), "mounted the per-container subtree");
    let clones = make_clones(&master, 1 + SUBTREE_SPARE_THREADS)?;
    Ok((master, clones))
}

/// The subtree connection a previous image of this supervisor handed over, if any.
fn adopted_subtree() -> anyhow::Result<Option<(OwnedFd, Vec<OwnedFd>)>> {
    let Ok(text) = std::env::var(ADOPT_SUBTREE_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(ADOPT_SUBTREE_ENV);
    let fds = text
        .split(',')
        .map(|t| {
            let fd: RawFd = t
                .parse()
                .with_context(|| format!("bad {ADOPT_SUBTREE_ENV} {text:?}"))?;
            adopt_fd(fd)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut fds = fds.into_iter();
    let master = fds
        .next()
        .with_context(|| format!("bad {ADOPT_SUBTREE_ENV} {text:?}"))?;
    Ok(Some((master, fds.collect())))
}

/// Takes ownership of `fd`, handed over across exec by a previous image of this process.
fn adopt_fd(fd: RawFd) -> anyhow::Result<OwnedFd> {
    // SAFETY: setting FD_CLOEXEC again (it was cleared for the exec) also checks it is open.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    anyhow::ensure!(rc >= 0, "fd {fd} not open");
    // SAFETY: the previous image of this process handed these fds over; nothing else owns them.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a re-executed supervisor inherits from its previous image.
struct Adopted {
    master: OwnedFd,
    worker_pid: u32,
    state: OwnedFd,
    clones: Vec<OwnedFd>,
}

/// The state a re-executed supervisor inherits, if any.
fn adopted_state() -> anyhow::Result<Option<Adopted>> {
    let Ok(text) = std::env::var(ADOPT_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(ADOPT_ENV);
    let numbers: Vec<i64> = text
        .split(',')
        .map(|t| {
            t.parse()
                .with_context(|| format!("bad {ADOPT_ENV} {text:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let [master, worker, state, clones @ ..] = numbers.as_slice() else {
        bail!("bad {ADOPT_ENV} {text:?}");
    };
    let own = |fd: i64| -> anyhow::Result<OwnedFd> { adopt_fd(RawFd::try_from(fd)?) };
    Ok(Some(Adopted {
        master: own(*master)?,
        worker_pid: u32::try_from(*worker)?,
        state: own(*state)?,
        clones: clones
            .iter()
            .map(|&fd| own(fd))
            .collect::<anyhow::Result<Vec<_>>>()?,
    }))
}

/// Clears FD_CLOEXEC so `fd` survives exec.
fn keep_across_exec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number; async-signal-safe, so usable after fork.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Further attempts to start the binary on disk while it is busy being written (ETXTBSY).
const TEXT_BUSY_RETRIES: usize = 10;
/// Pause between those attempts.
const TEXT_BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Whether `err` is exec's ETXTBSY.
fn is_text_busy(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::ETXTBSY)
    })
}

impl Supervisor {
    /// Starts a worker from the binary on disk, falling back to the supervisor's own image.
    fn start_worker(&mut self) -> anyhow::Result<Worker> {
        let mut spawned = self.spawn(self.exe_path.clone());
        // ETXTBSY: the new binary is still open for writing somewhere (an installer, or any
        // process that forked while it was being written). That passes within moments.
        for _ in 0..TEXT_BUSY_RETRIES {
            match &spawned {
                Err(err) if is_text_busy(err) => {
                    std::thread::sleep(TEXT_BUSY_PAUSE);
                    spawned = self.spawn(self.exe_path.clone());
                }
                _ => break,
            }
        }
        match spawned {
            Ok(worker) => Ok(worker),
            Err(err) => {
                tracing::error!(err = %format!("{err:#}"), path = %self.exe_path.display(),
                    "worker from the binary on disk failed; using the running image");
                // A worker killed for not becoming ready may have read requests already (it
                // serves before it says so): resend or end them, or they would wait for the
                // next crash.
                self.requeue_in_flight()?;
                let own = PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    self.own_image.as_raw_fd()
                ));
                let spawned = self.spawn(own);
                if spawned.is_err() {
                    self.requeue_in_flight()?;
                }
                spawned
            }
        }
    }

    /// Spawns a worker from `program` and waits until it serves.
    fn spawn(&self, program: PathBuf) -> anyhow::Result<Worker> {
        let (ready_read, ready_write) = pipe()?;
        let fds: Vec<RawFd> = self.clones.iter().map(|fd| fd.as_raw_fd()).collect();
        let subtree_fds: Vec<RawFd> = self
            .subtree_clones
            .iter()
            .map(|fd| fd.as_raw_fd())
            .collect();
        let (list, subtree_list) = (comma_list(&fds), comma_list(&subtree_fds));
        let ready_fd = ready_write.as_raw_fd();
        let state_fd = self.state.as_raw_fd();
        let mut command = Command::new(&program);
        command
            .args(&self.args)
            .env(worker::FDS_ENV, list)
            .env(worker::SUBTREE_FDS_ENV, subtree_list)
            .env(worker::READY_ENV, ready_fd.to_string())
            .env(worker::STATE_ENV, state_fd.to_string())
            .env_remove("NOTIFY_SOCKET")
            .env_remove(ADOPT_ENV)
            .env_remove(ADOPT_SUBTREE_ENV);
        // SAFETY: the closure only calls fcntl and prctl, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // A worker must not outlive its supervisor: with nobody to restart it, it would
                // keep the mount alive and block the next supervisor.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for &fd in fds.iter().chain(&subtree_fds) {
                    keep_across_exec(fd)?;
                }
                keep_across_exec(state_fd)?;
                keep_across_exec(ready_fd)
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        drop(ready_write);
        let pid = child.id();
        let mut worker = Worker {
            pid,
            child: Some(child),
            started: Instant::now(),
        };
        match wait_ready(ready_read, READY_TIMEOUT) {
            Ok(()) => {
                tracing::info!(pid, program = %program.display(), "worker ready");
                Ok(worker)
            }
            Err(err) => {
                worker.signal(libc::SIGKILL);
                while worker.try_reap().is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(err.context(format!("worker {pid} from {} not ready", program.display())))
            }
        }
    }

    /// After a worker exit: requeue what it held, then start the next one.
    fn recover(&mut self, status: std::process::ExitStatus) -> anyhow::Result<Worker> {
        if status.success() {
            // Workers exit 0 unasked only when the connection ended (unmounted from outside).
            bail!("the filesystem was unmounted from outside; exiting");
        }
        tracing::warn!(%status, "worker died: starting a new one");
        stats::Counters::new(&self.region).count_restart();
        self.requeue_in_flight()?;
        if let Some(last) = self.last_restart {
            if last.elapsed() < CRASH_LOOP_WINDOW {
                std::thread::sleep(self.backoff);
                self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
            } else {
                self.backoff = Duration::from_millis(10);
            }
        }
        self.last_restart = Some(Instant::now());
        self.start_worker()
    }

    /// Requests the dead worker read but did not answer: resent on 6.9+; otherwise its clones are
    /// closed (ending those requests with an error instead of a hang) and replaced.
    fn requeue_in_flight(&mut self) -> anyhow::Result<()> {
        if self.resend_supported != Some(false) {
            match fuse::session::notify_resend(self.master.as_fd())
                .and_then(|()| fuse::session::notify_resend(self.subtree_master.as_fd()))
            {
                Ok(()) => {
                    self.resend_supported = Some(true);
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(%err, "FUSE_NOTIFY_RESEND unsupported (kernel < 6.9): requests \
                        the dead worker held end with an error");
                    self.resend_supported = Some(false);
                }
            }
        }
        let fresh = make_clones(&self.master, self.clones.len())?;
        self.clones = fresh;
        let fresh = make_clones(&self.subtree_master, self.subtree_clones.len())?;
        self.subtree_clones = fresh;
        Ok(())
    }

    /// Graceful replacement: the old worker answers what it holds and exits, then a new one
    /// starts. Requests arriving in between wait in the kernel's queue.
    fn replace(&mut self, old: &mut Worker) -> anyhow::Result<Worker> {
        let clean = old.stop();
        if !clean {
            self.requeue_in_flight()?;
        }
        tracing::info!(pid = old.pid, served_for = ?old.started.elapsed(), clean, "old worker gone");
        self.start_worker()
    }

    /// Re-executes the supervisor from the binary on disk, handing over the connection.
    fn reexec(&self, worker: &Worker) -> anyhow::Result<()> {
        let mut numbers = vec![
            i64::from(self.master.as_raw_fd()),
            i64::from(worker.pid),
            i64::from(self.state.as_raw_fd()),
        ];
        numbers.extend(self.clones.iter().map(|fd| i64::from(fd.as_raw_fd())));
        let subtree = std::iter::once(&self.subtree_master).chain(&self.subtree_clones);
        let subtree_list = comma_list(subtree.clone().map(|fd| fd.as_raw_fd()));
        for fd in [&self.master, &self.state]
            .into_iter()
            .chain(&self.clones)
            .chain(subtree)
        {
            keep_across_exec(fd.as_raw_fd())?;
        }
        let state = comma_list(&numbers);
        let err = Command::new(&self.exe_path)
            .args(&self.args)
            .env(ADOPT_ENV, state)
            .env(ADOPT_SUBTREE_ENV, subtree_list)
            .exec();
        // exec returned: it failed. Restore close-on-exec so workers do not inherit the masters.
        for fd in [&self.master, &self.state, &self.subtree_master] {
            // SAFETY: setting FD_CLOEXEC on our own descriptor.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Err(anyhow::Error::new(err).context(format!("exec {}", self.exe_path.display())))
    }
}

/// `items` as the comma-separated list the environment variables handed to a worker or a new
/// image carry.
fn comma_list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for the worker's ready byte; EOF means it died first.
fn wait_ready(read_end: OwnedFd, timeout: Duration) -> anyhow::Result<()> {
    let mut poll = libc::pollfd {
        fd: read_end.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut poll, 1, millis) };
    if rc == 0 {
        bail!("no ready signal within {timeout:?}");
    }
    let mut byte = [0u8; 1];
    let n = std::fs::File::from(read_end)
        .read(&mut byte)
        .context("reading the ready pipe")?;
    if n == 0 {
        bail!("exited before it was ready");
    }
    Ok(())
}
