//! Background loadavg sampling, for the containers whose loadavg or stat was read recently.
//!
//! A read registers (or touches) its container in a bounded [`Registry`] and shows the values
//! stored in the container's shared slot ([`crate::shared`]); only a container never counted
//! (or whose stored values are stale) is counted during the read. One sampler thread
//! ([`LoadTracker::run`]) counts every registered container's tasks once per
//! [`LOAD_INTERVAL_SECS`], each at its own phase of the interval so the work is spread evenly
//! instead of coming in a burst, advances its load averages (missed intervals are caught up with
//! the current count, as the kernel does after NO_HZ) and stores the counts for the next reads.
//! A container whose CPU time has not moved since its last count ([`count_still_holds`]) is not
//! counted again: none of its threads ran, so none changed state; its stored count is used.
//! A container stays registered for [`RETENTION_NS`] after its last read, so its 15-minute
//! average keeps meaning something; a container whose cgroup is gone is dropped at once.

use crate::shared::{monotonic_ns, SharedState};
use crate::state::load_samples;
use proclens_cgroup::{Collector, ContainerId, Error, Result, TaskCounts};
use proclens_view::loadavg::{LoadAvg, LOAD_INTERVAL_SECS};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// One load interval in ns.
pub const INTERVAL_NS: u64 = LOAD_INTERVAL_SECS * 1_000_000_000;
/// How long a container is sampled after its last loadavg or stat read: the span of the longest
/// average.
pub const RETENTION_NS: u64 = 15 * 60 * 1_000_000_000;
/// Shortest sleep of the sampler: containers falling due within it are sampled in one wake-up
/// (a hundred wake-ups per interval at most, each for a hundredth of the containers).
const MIN_WAIT_NS: u64 = 50_000_000;
/// Stored values this many intervals old are not shown: the sampler is not keeping up with the
/// container (a worker restart, a registration that expired), so the read counts afresh.
const STALE_INTERVALS: u64 = 2;

/// Phase (offset into the interval, ns) of the `sequence`-th registered container: the base-2
/// van der Corput sequence scaled to the interval (0, 1/2, 1/4, 3/4, 1/8, ...), so that any
/// number of containers registered one after the other are spread evenly, without moving
/// those already placed.
pub fn spread_phase(sequence: u64, interval_ns: u64) -> u64 {
    let fraction = u128::from(sequence.reverse_bits());
    u64::try_from((fraction * u128::from(interval_ns)) >> 64).unwrap_or(0)
}

/// The first time after `now_ns` that falls on `phase_ns` of an interval (times and phases on
/// the same clock, ns).
pub fn next_due_after(phase_ns: u64, now_ns: u64, interval_ns: u64) -> u64 {
    let interval_ns = interval_ns.max(1);
    let due = now_ns - now_ns % interval_ns + phase_ns % interval_ns;
    if due > now_ns {
        due
    } else {
        due.saturating_add(interval_ns)
    }
}

/// Whether a container last read at `last_read_ns` is no longer sampled at `now_ns`.
pub fn is_expired(last_read_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_read_ns) > RETENTION_NS
}

/// Whether stored load values last advanced at `updated_ns` (0: never) are too old to show at
/// `now_ns`.
pub fn is_stale(updated_ns: u64, now_ns: u64) -> bool {
    updated_ns == 0 || load_samples(updated_ns, now_ns).0 >= STALE_INTERVALS
}

/// Whether a container's stored task count still holds: the CPU time its threads used
/// ([`Collector::task_cpu_usage_ns`]) was read before that count (`counted_at`) and again
/// now, and is the same. A thread changes state only by running (sleeping, blocking, exiting,
/// forking), or by being woken, after which it runs at once unless the CPU is contended; so
/// without CPU time used the count is the same, but for a wake-up not yet run, which the next
/// sample sees.
pub fn count_still_holds(counted_at: Option<u64>, now: Option<u64>) -> bool {
    matches!((counted_at, now), (Some(before), Some(now)) if before == now)
}

/// The key whose last read is the oldest (ties: any of them).
fn least_recently_read<'a>(entries: impl Iterator<Item = (&'a [u64; 2], u64)>) -> Option<[u64; 2]> {
    entries.min_by_key(|(_, read)| *read).map(|(key, _)| *key)
}

/// A registered container.
#[derive(Debug)]
struct Registered {
    id: Arc<ContainerId>,
    phase_ns: u64,
    next_due_ns: u64,
    last_read_ns: u64,
    /// The container's CPU time read just before its last count by the sampler.
    counted_at_usage_ns: Option<u64>,
}

/// A container the sampler is to sample now.
#[derive(Debug)]
pub struct Due {
    /// Its state key.
    pub key: [u64; 2],
    /// Its cgroups.
    pub id: Arc<ContainerId>,
    /// Its CPU time read just before its last count by the sampler (`None`: not known).
    pub counted_at_usage_ns: Option<u64>,
}

/// The containers whose loadavg or stat was read recently, with when each is next sampled.
/// Times are CLOCK_MONOTONIC ns passed in by the caller, so the schedule is testable as is.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<[u64; 2], Registered>,
    capacity: usize,
    interval_ns: u64,
    /// Registrations so far: picks each new container's phase.
    sequence: u64,
    /// The earliest `next_due_ns` of all entries, kept up to date so that a sampler wake-up
    /// walks the entries once.
    earliest_due_ns: Option<u64>,
}

impl Registry {
    /// An empty registry of at most `capacity` containers (at least one), sampled every
    /// `interval_ns`.
    pub fn new(capacity: usize, interval_ns: u64) -> Self {
        Registry {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            interval_ns: interval_ns.max(1),
            sequence: 0,
            earliest_due_ns: None,
        }
    }

    /// Notes a read of container `key` (`id`) at `now_ns`. A new container gets the next phase
    /// and is due at its first occurrence; when the registry is full, the least recently read
    /// container makes room. Returns whether `key` was new.
    pub fn touch(&mut self, key: [u64; 2], id: &Arc<ContainerId>, now_ns: u64) -> bool {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.last_read_ns = entry.last_read_ns.max(now_ns);
            return false;
        }
        if self.entries.len() >= self.capacity {
            let oldest = least_recently_read(self.entries.iter().map(|(k, e)| (k, e.last_read_ns)));
            if let Some(oldest) = oldest {
                self.remove(oldest);
            }
        }
        let phase_ns = spread_phase(self.sequence, self.interval_ns);
        self.sequence = self.sequence.wrapping_add(1);
        let next_due_ns = next_due_after(phase_ns, now_ns, self.interval_ns);
        self.entries.insert(
            key,
            Registered {
                id: Arc::clone(id),
                phase_ns,
                next_due_ns,
                last_read_ns: now_ns,
                counted_at_usage_ns: None,
            },
        );
        self.earliest_due_ns = Some(
            self.earliest_due_ns
                .map_or(next_due_ns, |e| e.min(next_due_ns)),
        );
        true
    }

    /// Forgets container `key`.
    pub fn remove(&mut self, key: [u64; 2]) {
        let removed = self.entries.remove(&key);
        if removed.is_some_and(|r| Some(r.next_due_ns) == self.earliest_due_ns) {
            self.earliest_due_ns = self.entries.values().map(|e| e.next_due_ns).min();
        }
    }

    /// The containers due at `now_ns`, each moved on to its next phase after `now_ns` (one
    /// sample per interval however late the sampler is); containers not read for
    /// [`RETENTION_NS`] are forgotten instead (at the latest when they next fall due). One walk
    /// over the entries, and none when nothing is due.
    pub fn take_due(&mut self, now_ns: u64) -> Vec<Due> {
        let mut due = Vec::new();
        if self
            .earliest_due_ns
            .is_none_or(|earliest| earliest > now_ns)
        {
            return due;
        }
        let interval_ns = self.interval_ns;
        let mut earliest: Option<u64> = None;
        self.entries.retain(|key, entry| {
            if is_expired(entry.last_read_ns, now_ns) {
                return false;
            }
            if entry.next_due_ns <= now_ns {
                entry.next_due_ns = next_due_after(entry.phase_ns, now_ns, interval_ns);
                due.push(Due {
                    key: *key,
                    id: Arc::clone(&entry.id),
                    counted_at_usage_ns: entry.counted_at_usage_ns,
                });
            }
            earliest = Some(earliest.map_or(entry.next_due_ns, |e| e.min(entry.next_due_ns)));
            true
        });
        self.earliest_due_ns = earliest;
        due
    }

    /// Records container `key`'s CPU time read just before its stored count was taken.
    pub fn set_counted_at(&mut self, key: [u64; 2], usage_ns: Option<u64>) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.counted_at_usage_ns = usage_ns;
        }
    }

    /// When the next container falls due (`None`: no container is registered).
    pub fn next_due(&self) -> Option<u64> {
        self.earliest_due_ns
    }
}

/// Keeps the load averages and task counts of recently read containers: the read side
/// ([`LoadTracker::current`]) and the sampler thread ([`LoadTracker::run`]).
#[derive(Debug)]
pub struct LoadTracker {
    reader: Collector,
    shared: Arc<SharedState>,
    registry: Mutex<Registry>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl LoadTracker {
    /// A tracker over `shared`'s container slots, registering at most one container per slot.
    pub fn new(reader: Collector, shared: Arc<SharedState>) -> Self {
        let capacity = shared.container_slots();
        LoadTracker {
            reader,
            shared,
            registry: Mutex::new(Registry::new(capacity, INTERVAL_NS)),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The load averages and task counts to show container `id`, and a note that it was read
    /// (so the sampler keeps it current). Stored values are shown as they are; a container
    /// never counted, or whose values are stale, is counted now.
    /// `key` is `id`'s [`crate::state::container_key`], which callers keep with the identity.
    pub fn current(&self, id: &Arc<ContainerId>, key: [u64; 2]) -> Result<(LoadAvg, TaskCounts)> {
        let now = monotonic_ns();
        self.registry().touch(key, id, now);
        let stored = self
            .shared
            .with_container(key, |s| (s.load, s.tasks, s.load_updated_ns));
        match stored {
            (load, Some(tasks), updated_ns) if !is_stale(updated_ns, now) => Ok((load, tasks)),
            _ => self.sample(key, id),
        }
    }

    /// Counts container `id`'s tasks, advances its averages by the intervals elapsed since
    /// their last update, and stores both. A container counted for the first time starts its
    /// averages at 0, like the kernel's.
    fn sample(&self, key: [u64; 2], id: &ContainerId) -> Result<(LoadAvg, TaskCounts)> {
        let tasks = self.reader.task_counts(id)?;
        let now = monotonic_ns();
        Ok(self.shared.with_container(key, |s| {
            let (samples, advanced) = load_samples(s.load_updated_ns, now);
            s.load.advance(tasks.running + tasks.blocked, samples);
            s.load_updated_ns = advanced;
            s.tasks = Some(tasks);
            (s.load, tasks)
        }))
    }

    /// One sample by the sampler: counts the container (unless its stored count still holds),
    /// advances its averages and returns the CPU time read before the count it used.
    fn sample_due(&self, due: &Due) -> Result<Option<u64>> {
        let usage_ns = self.reader.task_cpu_usage_ns(&due.id)?;
        if count_still_holds(due.counted_at_usage_ns, usage_ns) {
            let now = monotonic_ns();
            let advanced = self.shared.with_container(due.key, |s| {
                let tasks = s.tasks?;
                let (samples, advanced) = load_samples(s.load_updated_ns, now);
                s.load.advance(tasks.running + tasks.blocked, samples);
                s.load_updated_ns = advanced;
                Some(())
            });
            if advanced.is_some() {
                return Ok(usage_ns);
            }
        }
        self.sample(due.key, &due.id)?;
        Ok(usage_ns)
    }

    /// The sampler: samples each registered container at its phase of every interval, until
    /// [`LoadTracker::stop`].
    pub fn run(&self) {
        tracing::debug!("loadavg sampler running");
        loop {
            let (due, tracked) = {
                let mut registry = self.registry();
                (registry.take_due(monotonic_ns()), registry.entries.len())
            };
            self.shared.stats().set_containers(tracked as u64);
            for due in due {
                if self.is_stopped() {
                    return;
                }
                match self.sample_due(&due) {
                    Ok(usage_ns) => self.registry().set_counted_at(due.key, usage_ns),
                    Err(Error::Vanished { path }) => {
                        tracing::debug!(path = %path.display(), "container gone: no longer sampled");
                        self.registry().remove(due.key);
                    }
                    Err(err) => tracing::warn!(%err, "loadavg sample failed"),
                }
            }
            let now = monotonic_ns();
            let wait_ns = self
                .registry()
                .next_due()
                .map_or(INTERVAL_NS, |due| due.saturating_sub(now))
                .max(MIN_WAIT_NS);
            if self.wait(Duration::from_nanos(wait_ns)) {
                return;
            }
        }
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps up to `timeout`, returning early (true) once stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }

    /// Stops the sampler: [`LoadTracker::run`] returns after the sample in hand, if any.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::container_key;
    use proclens_cgroup::files::FileCache;
    use proclens_cgroup::{CgroupSet, HostPaths, Layout};
    use std::time::Instant;

    const I: u64 = INTERVAL_NS;

    fn id(n: u64) -> Arc<ContainerId> {
        Arc::new(ContainerId {
            set: Arc::new(CgroupSet {
                paths: vec![Some(format!("/ctr{n}"))],
            }),
            inodes: vec![n],
        })
    }

    fn key(n: u64) -> [u64; 2] {
        container_key(&id(n))
    }

    #[test]
    fn phases_spread_evenly_whatever_the_count() {
        let phases: Vec<u64> = (0..4).map(|s| spread_phase(s, 1000)).collect();
        assert_eq!(phases, [0, 500, 250, 750]);
        for n in [3u64, 10, 100, 1000] {
            let mut phases: Vec<u64> = (0..n).map(|s| spread_phase(s, I)).collect();
            phases.sort_unstable();
            phases.push(I);
            let widest = phases.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            // Never more than twice the even gap: no burst, whatever the count.
            assert!(widest <= 2 * I / n, "{n} containers: gap {widest} of {I}");
        }
        assert!(spread_phase(u64::MAX, I) < I);
    }

    #[test]
    fn due_times_fall_on_the_phase_after_now() {
        assert_eq!(next_due_after(300, 1000, 1000), 1300);
        assert_eq!(next_due_after(300, 1299, 1000), 1300);
        assert_eq!(next_due_after(300, 1300, 1000), 2300, "strictly after now");
        assert_eq!(next_due_after(0, 1000, 1000), 2000);
        assert_eq!(next_due_after(1300, 1000, 1000), 1300, "phase taken modulo");
        assert_eq!(
            next_due_after(5, 7, 0),
            8,
            "a zero interval does not divide by zero"
        );
    }

    #[test]
    fn each_container_is_due_once_per_interval_at_its_phase() {
        let mut registry = Registry::new(8, I);
        let start = 100 * I;
        for n in 0..4 {
            assert!(registry.touch(key(n), &id(n), start));
        }
        assert!(!registry.touch(key(0), &id(0), start), "already known");
        let mut sampled: Vec<(u64, u64)> = Vec::new();
        // Tick every 10 ms for three intervals.
        let mut now = start;
        while now < start + 3 * I {
            now += 10_000_000;
            for due in registry.take_due(now) {
                let n = (0..4).find(|&n| key(n) == due.key).unwrap();
                sampled.push((n, now - start));
            }
        }
        for n in 0..4 {
            let times: Vec<u64> = sampled
                .iter()
                .filter(|(m, _)| *m == n)
                .map(|(_, t)| *t)
                .collect();
            assert_eq!(times.len(), 3, "container {n}: {times:?}");
            assert!(times.windows(2).all(|w| w[1] - w[0] == I), "{times:?}");
        }
        // Spread: the four are due a quarter of an interval apart, not together.
        let mut first: Vec<u64> = sampled.iter().take(4).map(|(_, t)| *t % I).collect();
        first.sort_unstable();
        assert!(
            first.windows(2).all(|w| w[1] - w[0] >= I / 4 - 10_000_000),
            "{first:?}"
        );
        assert!(registry.next_due().is_some_and(|d| d > now));
    }

    #[test]
    fn a_late_sampler_samples_once_and_keeps_the_phase() {
        let mut registry = Registry::new(8, I);
        registry.touch(key(1), &id(1), 10 * I);
        let due = registry.next_due().unwrap();
        let late = due + 3 * I + 7;
        assert_eq!(registry.take_due(late).len(), 1);
        assert!(registry.take_due(late).is_empty());
        assert_eq!(registry.next_due(), Some(due + 4 * I));
    }

    #[test]
    fn a_full_registry_evicts_the_least_recently_read() {
        let mut registry = Registry::new(3, I);
        for n in 0..3 {
            registry.touch(key(n), &id(n), 1_000 + n);
        }
        registry.touch(key(0), &id(0), 2_000);
        assert!(registry.touch(key(3), &id(3), 3_000));
        assert_eq!(registry.entries.len(), 3);
        // Container 1 was read longest ago (0 was read again since): it made room.
        let mut kept: Vec<[u64; 2]> = registry
            .take_due(2 * I)
            .into_iter()
            .map(|due| due.key)
            .collect();
        let mut want = vec![key(0), key(2), key(3)];
        kept.sort_unstable();
        want.sort_unstable();
        assert_eq!(kept, want);
    }

    #[test]
    fn containers_unread_for_fifteen_minutes_are_forgotten() {
        let mut registry = Registry::new(8, I);
        registry.touch(key(1), &id(1), I);
        registry.touch(key(2), &id(2), I);
        let later = I + RETENTION_NS - I;
        registry.touch(key(2), &id(2), later);
        registry.take_due(I + RETENTION_NS);
        assert_eq!(
            registry.entries.len(),
            2,
            "exactly fifteen minutes is still kept"
        );
        // Dropped when next due (within an interval of the fifteen minutes), not sampled.
        let due = registry.take_due(I + RETENTION_NS + I);
        assert_eq!(registry.entries.len(), 1);
        assert!(due.iter().all(|d| d.key == key(2)), "{due:?}");
        assert!(
            !registry.touch(key(2), &id(2), later + 1),
            "read later: kept"
        );
        registry.remove(key(2));
        assert!(registry.entries.is_empty());
        assert_eq!(registry.next_due(), None);
        assert!(is_expired(0, RETENTION_NS + 1) && !is_expired(5, 0));
    }

    #[test]
    fn stored_values_go_stale_after_two_missed_intervals() {
        assert!(!is_stale(10, 10 + 2 * I - 1));
        assert!(is_stale(10, 10 + 2 * I));
        assert!(is_stale(0, 5), "never updated");
    }

    #[test]
    fn a_count_holds_only_while_the_cpu_time_is_known_and_unchanged() {
        assert!(count_still_holds(Some(5), Some(5)));
        assert!(!count_still_holds(Some(5), Some(6)));
        assert!(
            !count_still_holds(None, Some(5)),
            "never counted by the sampler"
        );
        assert!(!count_still_holds(Some(5), None));
        assert!(
            !count_still_holds(None, None),
            "no accounting cgroup: always count"
        );
        let mut registry = Registry::new(8, I);
        registry.touch(key(1), &id(1), 0);
        registry.set_counted_at(key(1), Some(42));
        let due = registry.take_due(2 * I);
        assert_eq!(due[0].counted_at_usage_ns, Some(42));
    }

    fn tracker() -> LoadTracker {
        let region = crate::shared::create_region(crate::shared::Geometry {
            handles: 8,
            containers: 32,
            cells: 16,
        })
        .unwrap();
        let shared = Arc::new(SharedState::attach(region).unwrap());
        let reader = Collector::new(
            Layout::from_mounts(&[], ""),
            HostPaths::default(),
            FileCache::new(0),
        );
        LoadTracker::new(reader, shared)
    }

    /// A fake v2 host: container /ctr with one thread (tid 10) in `state`, `usage_usec` of
    /// CPU time.
    fn write_container(root: &std::path::Path, state: char, usage_usec: u64) {
        let ctr = root.join("cg/ctr");
        let task = root.join("proc/10/task/10");
        for dir in [&ctr, &task] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(ctr.join("cgroup.threads"), "10\n").unwrap();
        std::fs::write(ctr.join("cpu.stat"), format!("usage_usec {usage_usec}\n")).unwrap();
        let stat = format!("10 (app) {state} 1 {}\n", ["0"; 48].join(" "));
        std::fs::write(task.join("stat"), stat).unwrap();
    }

    #[test]
    fn the_sampler_recounts_only_a_container_whose_threads_ran() {
        let root = tempfile::tempdir().unwrap();
        write_container(root.path(), 'S', 100);
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            root.path().join("cg").display()
        );
        let mounts = proclens_cgroup::parse::mountinfo::parse_mountinfo(&mountinfo).unwrap();
        let paths = HostPaths {
            proc_root: root.path().join("proc"),
            sys_root: root.path().join("sys"),
        };
        let reader = Collector::new(
            Layout::from_mounts(&mounts, "pids"),
            paths,
            FileCache::new(0),
        );
        let set = Arc::new(CgroupSet {
            paths: vec![Some("/ctr".to_string())],
        });
        let id = Arc::new(reader.identity(&set).unwrap());
        let mut tracker = tracker();
        tracker.reader = reader;
        let (_, first) = tracker.current(&id, container_key(&id)).unwrap();
        assert_eq!((first.running, first.total), (0, 1));
        let due = |counted_at_usage_ns| Due {
            key: container_key(&id),
            id: Arc::clone(&id),
            counted_at_usage_ns,
        };
        let running = || tracker.current(&id, container_key(&id)).unwrap().1.running;
        // The sampler's first sample counts, whatever the CPU time.
        write_container(root.path(), 'R', 100);
        let usage = tracker.sample_due(&due(None)).unwrap();
        assert_eq!((usage, running()), (Some(100_000), 1));
        // No CPU time used since: the stored count stands (this fake thread changed state
        // without running, which a real one cannot).
        write_container(root.path(), 'S', 100);
        assert_eq!(tracker.sample_due(&due(usage)).unwrap(), usage);
        assert_eq!(running(), 1);
        // CPU time used: counted again.
        write_container(root.path(), 'S', 101);
        assert_eq!(tracker.sample_due(&due(usage)).unwrap(), Some(101_000));
        assert_eq!(running(), 0);
    }

    /// Polls `condition` every millisecond until it holds; panics naming `what` after 20 s.
    fn poll_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "no {what} within 20 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// True if thread `tid` of this process is blocked in the futex syscall (a condvar or
    /// mutex wait), from `/proc/self/task/<tid>/syscall`.
    fn blocked_in_futex(tid: libc::pid_t) -> bool {
        let path = format!("/proc/self/task/{tid}/syscall");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.split_whitespace().next() == Some(&libc::SYS_futex.to_string())
    }

    #[test]
    fn the_sampler_stops_promptly_when_asked() {
        let tracker = Arc::new(tracker());
        tracker.registry().touch(key(1), &id(1), monotonic_ns());
        let running = Arc::clone(&tracker);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let sampler = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            running.run()
        });
        let tid = tid_rx.recv().unwrap();
        // The container falls due at its phase (within one interval); once sampled there, the
        // next due time is a whole interval away, so only stop() can end the wait that follows.
        let sampled = || tracker.shared.with_container(key(1), |s| s.tasks.is_some());
        poll_until("first sample", sampled);
        poll_until("sampler waiting for its next due time", || {
            blocked_in_futex(tid)
        });
        let asked = Instant::now();
        tracker.stop();
        sampler.join().unwrap();
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{:?}",
            asked.elapsed()
        );
    }

    #[test]
    fn a_container_with_no_cgroup_of_its_own_counts_no_tasks() {
        // No hierarchy to list threads from: counted as empty, not an error, and stored.
        let tracker = tracker();
        let (load, tasks) = tracker.current(&id(1), key(1)).unwrap();
        assert_eq!((load, tasks), (LoadAvg::default(), TaskCounts::default()));
        assert_eq!(tracker.registry().entries.len(), 1);
        tracker
            .shared
            .with_container(key(1), |s| assert_eq!(s.tasks, Some(tasks)));
    }
}
