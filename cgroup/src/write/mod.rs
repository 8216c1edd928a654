//! The write path the control plane calls: new memory, swap, CPU and cpuset limits for one
//! cgroup, written in an order the kernel accepts at every step (DESIGN §6), and undone when a
//! write cannot complete, so a failed update leaves the previous limits in place.
//!
//! Data flow: [`apply`] reads the current value of every file the update touches (the
//! [`plan::Current`] state, and the text to restore), [`plan::plan`] turns the state and the
//! [`LimitUpdate`] into ordered writes (pure, unit-tested), and the executor writes them in order.
//! On a failure it writes the previous values back in reverse order, which passes back through
//! the same states the forward writes went through, and reports in the error whether that worked.

pub mod plan;

use crate::layout::{CgroupSet, Controller, Layout, Version};
use crate::parse::{cgroupfs, cpulist};
use plan::{CpuNow, CpusetNow, CpusetParent, Current, MemoryNow, Write};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// A memory or swap limit. `Ord` puts [`Limit::Max`] above every byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// A number of bytes (the kernel rounds it down to a whole page).
    Bytes(u64),
    /// Unlimited (v1 "-1", v2 "max").
    Max,
}

/// A CFS bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBandwidth {
    /// CPU time allowed per period, in µs (at least 1000); `None` is unlimited.
    pub quota_us: Option<u64>,
    /// Period, in µs (1000..=1000000).
    pub period_us: u64,
}

/// New limits for one cgroup: a plain value describing intent. `None` leaves a setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitUpdate {
    /// Hard memory limit (v1 memory.limit_in_bytes, v2 memory.max). On v1 with swap accounting
    /// and no `swap_max`, the swap allowance (memsw − limit) is kept.
    pub memory_max: Option<Limit>,
    /// Throttling limit (v2 memory.high); unsupported on v1.
    pub memory_high: Option<Limit>,
    /// Swap the cgroup may use (v2 memory.swap.max; v1 memsw = memory limit + this).
    pub swap_max: Option<Limit>,
    /// CFS bandwidth (v1 cpu.cfs_quota_us and cpu.cfs_period_us, v2 cpu.max).
    pub cpu_max: Option<CpuBandwidth>,
    /// CPU weight in v1 units, 2..=262144 (v1 cpu.shares; v2 cpu.weight converted as runc does,
    /// see [`plan::shares_to_weight`]), as CRI's `cpu_shares`.
    pub cpu_shares: Option<u64>,
    /// CPUs the cgroup may run on (cpuset.cpus); must be within the parent's.
    pub cpuset_cpus: Option<Vec<u32>>,
    /// Memory nodes the cgroup may allocate from (cpuset.mems); must be within the parent's.
    pub cpuset_mems: Option<Vec<u32>>,
}

/// One write that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedWrite {
    /// The control file.
    pub file: PathBuf,
    /// Its text before the write (trimmed), as read.
    pub previous: String,
    /// The text written.
    pub value: String,
}

/// What [`apply`] did, in order: for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Every write, in the order made; empty when every value was already in place.
    pub writes: Vec<AppliedWrite>,
}

/// Who turned a value down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectedBy {
    /// The kernel, with this errno: EINVAL (v1 CFS quota/period above the parent's, memsw below
    /// the memory limit, a value out of range), EACCES (v1 cpuset outside the parent's), EBUSY
    /// (v1 cpuset without CPUs a child uses), ERANGE (a CPU that does not exist).
    Kernel {
        /// The errno of the failed write.
        errno: i32,
    },
    /// The planner, before anything was written: a cpuset outside what the parent allows.
    Parent {
        /// The parent's file that was read.
        parent_file: PathBuf,
        /// What it allows, as a cpulist.
        parent_value: String,
    },
}

impl fmt::Display for RejectedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectedBy::Kernel { errno } => {
                write!(f, "by the kernel: {}", io::Error::from_raw_os_error(*errno))
            }
            RejectedBy::Parent {
                parent_file,
                parent_value,
            } => write!(
                f,
                "outside the parent's {} ({parent_value:?})",
                parent_file.display()
            ),
        }
    }
}

/// A previous value that could not be written back during a rollback.
#[derive(Debug)]
pub struct RestoreFailure {
    /// The control file.
    pub file: PathBuf,
    /// The previous text that could not be written back.
    pub value: String,
    /// Why.
    pub source: io::Error,
}

/// Whether a failed update left the previous limits in place.
#[derive(Debug)]
pub enum Rollback {
    /// The failure came before any write: nothing changed.
    NothingWritten,
    /// This many writes had taken effect; each file holds its previous value again.
    Restored {
        /// Writes undone.
        writes: usize,
    },
    /// Some previous values could not be written back: the cgroup holds a mix of old and new.
    Incomplete {
        /// Every restore that failed, in the order tried.
        failures: Vec<RestoreFailure>,
    },
}

impl Rollback {
    /// True when the cgroup's limits are what they were before the update.
    pub fn previous_limits_in_place(&self) -> bool {
        !matches!(self, Rollback::Incomplete { .. })
    }
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollback::NothingWritten => write!(f, "nothing was written"),
            Rollback::Restored { writes } => {
                write!(
                    f,
                    "the previous limits were restored ({writes} writes undone)"
                )
            }
            Rollback::Incomplete { failures } => {
                write!(f, "the previous limits could NOT all be restored:")?;
                for r in failures {
                    write!(f, " {} <- {:?}: {};", r.file.display(), r.value, r.source)?;
                }
                Ok(())
            }
        }
    }
}

static NOTHING_WRITTEN: Rollback = Rollback::NothingWritten;

/// A limit update that did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The new memory limit is below what the cgroup uses and cannot be reclaimed: v1 EBUSY
    /// from the kernel, or on v2 memory.current above the new memory.max after memory.high
    /// (v2 would OOM-kill rather than fail, so the write is not made).
    #[error("{}: cannot lower to {value}: usage {} cannot be reclaimed below it; {restored}", file.display(), usage_text(*usage_bytes))]
    Busy {
        /// The limit file.
        file: PathBuf,
        /// The limit it tried to write.
        value: String,
        /// v2: the memory.current read just before; v1: `None` (the kernel said EBUSY).
        usage_bytes: Option<u64>,
        /// Whether earlier writes of the update were undone.
        restored: Rollback,
    },
    /// The value was turned down (see [`RejectedBy`]).
    #[error("{}: {value:?} rejected {by}; {restored}", file.display())]
    Rejected {
        /// The control file.
        file: PathBuf,
        /// The text it tried to write.
        value: String,
        /// The kernel (with its errno) or the planner.
        by: RejectedBy,
        /// Whether earlier writes of the update were undone.
        restored: Rollback,
    },
    /// The cgroup is gone (ENOENT or ENODEV).
    #[error("{}: the cgroup is gone{}; {restored}", file.display(), value.as_ref().map(|v| format!(" (writing {v:?})")).unwrap_or_default())]
    Vanished {
        /// The file that could not be opened or written.
        file: PathBuf,
        /// The text it tried to write; `None` when found gone while reading the current limits.
        value: Option<String>,
        /// Whether earlier writes of the update were undone.
        restored: Rollback,
    },
    /// The host or cgroup has no file for this setting (memory.high on v1, a controller not
    /// mounted, swap not accounted). Nothing was written.
    #[error("{setting}: not supported here: {reason}")]
    Unsupported {
        /// The [`LimitUpdate`] field.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The requested value is one the kernel never accepts. Nothing was written.
    #[error("{setting} = {value}: {reason}")]
    Invalid {
        /// The [`LimitUpdate`] field.
        setting: &'static str,
        /// The value asked for.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A current value could not be read. Nothing was written.
    #[error("{}: cannot read the current value: {source}", file.display())]
    Read {
        /// The control file.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A current value is not in the kernel's format. Nothing was written.
    #[error("{}: cannot parse the current value {text:?}: {reason}", file.display())]
    Unparsable {
        /// The control file.
        file: PathBuf,
        /// Its text.
        text: String,
        /// What was wrong.
        reason: String,
    },
    /// Any other write failure.
    #[error("{}: writing {value:?}: {source}; {restored}", file.display())]
    Io {
        /// The control file.
        file: PathBuf,
        /// The text it tried to write.
        value: String,
        /// The underlying error.
        source: io::Error,
        /// Whether earlier writes of the update were undone.
        restored: Rollback,
    },
}

fn usage_text(usage_bytes: Option<u64>) -> String {
    usage_bytes.map_or_else(String::new, |b| format!("({b} bytes)"))
}

impl WriteError {
    /// Whether earlier writes were undone; [`Rollback::NothingWritten`] for the errors that
    /// come before any write.
    pub fn rollback(&self) -> &Rollback {
        match self {
            WriteError::Busy { restored, .. }
            | WriteError::Rejected { restored, .. }
            | WriteError::Vanished { restored, .. }
            | WriteError::Io { restored, .. } => restored,
            WriteError::Unsupported { .. }
            | WriteError::Invalid { .. }
            | WriteError::Read { .. }
            | WriteError::Unparsable { .. } => &NOTHING_WRITTEN,
        }
    }
}

/// Applies `update` to the cgroup `set` names in `layout` (for a cgroup named by path,
/// [`Layout::set_at`]). Reads the current value of every file it will write, plans the order
/// ([`plan::plan`]), writes, and on a failure restores what it already wrote, in reverse order.
pub fn apply(
    layout: &Layout,
    set: &CgroupSet,
    update: &LimitUpdate,
) -> Result<Applied, WriteError> {
    let mut read = Reads::default();
    let current = read_current(layout, set, update, &mut read)?;
    let writes = plan::plan(&current, update)?;
    for w in &writes {
        if !read.text.contains_key(&w.file) {
            read.required(&w.file)?;
        }
    }
    execute(&writes, read.text)
}

/// The trimmed text of every file read, by path.
#[derive(Default)]
struct Reads {
    text: BTreeMap<PathBuf, String>,
}

impl Reads {
    /// Reads a file that must exist.
    fn required(&mut self, file: &Path) -> Result<String, WriteError> {
        self.optional(file)?.ok_or_else(|| WriteError::Vanished {
            file: file.to_path_buf(),
            value: None,
            restored: Rollback::NothingWritten,
        })
    }

    /// Reads a file; `None` when it does not exist.
    fn optional(&mut self, file: &Path) -> Result<Option<String>, WriteError> {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let text = text.trim().to_string();
                self.text.insert(file.to_path_buf(), text.clone());
                Ok(Some(text))
            }
            Err(e) if is_gone(&e) => Ok(None),
            Err(source) => Err(WriteError::Read {
                file: file.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads and parses a file that must exist.
    fn parsed<T, E: fmt::Display>(
        &mut self,
        file: &Path,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<T, WriteError> {
        let text = self.required(file)?;
        parsed(file, &text, parse)
    }

    /// Reads and parses a file; `None` when it does not exist.
    fn parsed_optional<T, E: fmt::Display>(
        &mut self,
        file: &Path,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, WriteError> {
        match self.optional(file)? {
            Some(text) => parsed(file, &text, parse).map(Some),
            None => Ok(None),
        }
    }
}

fn parsed<T, E: fmt::Display>(
    file: &Path,
    text: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, WriteError> {
    parse(text).map_err(|e| WriteError::Unparsable {
        file: file.to_path_buf(),
        text: text.to_string(),
        reason: e.to_string(),
    })
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

/// v1 memory limits above this are "unlimited": the kernel shows -1 as its page counter's
/// maximum, LONG_MAX rounded down to a page (9223372036854771712 with 4 KiB pages).
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

fn v1_limit(text: &str) -> Result<Limit, String> {
    let bytes = cgroupfs::parse_u64(text).map_err(|e| e.to_string())?;
    Ok(if bytes >= V1_UNLIMITED_FLOOR {
        Limit::Max
    } else {
        Limit::Bytes(bytes)
    })
}

fn v2_limit(text: &str) -> Result<Limit, String> {
    Ok(cgroupfs::parse_limit(text)
        .map_err(|e| e.to_string())?
        .map_or(Limit::Max, Limit::Bytes))
}

/// Reads what the planner needs for every controller the update touches.
fn read_current(
    layout: &Layout,
    set: &CgroupSet,
    update: &LimitUpdate,
    read: &mut Reads,
) -> Result<Current, WriteError> {
    let mut current = Current::default();
    let touches_memory =
        update.memory_max.is_some() || update.memory_high.is_some() || update.swap_max.is_some();
    if let Some((version, dir)) = layout
        .dir(set, Controller::Memory)
        .filter(|_| touches_memory)
    {
        current.memory = Some(match version {
            Version::V1 => MemoryNow::V1 {
                limit: read.parsed(&dir.join("memory.limit_in_bytes"), v1_limit)?,
                memsw: read.parsed_optional(&dir.join("memory.memsw.limit_in_bytes"), v1_limit)?,
                dir,
            },
            Version::V2 => MemoryNow::V2 {
                max: read.parsed(&dir.join("memory.max"), v2_limit)?,
                high: read.parsed(&dir.join("memory.high"), v2_limit)?,
                swap_max: read.parsed_optional(&dir.join("memory.swap.max"), v2_limit)?,
                dir,
            },
        });
    }
    let touches_cpu = update.cpu_max.is_some() || update.cpu_shares.is_some();
    if let Some((version, dir)) = layout.dir(set, Controller::Cpu).filter(|_| touches_cpu) {
        let (bandwidth, weight) = match version {
            Version::V1 => (
                CpuBandwidth {
                    quota_us: read
                        .parsed(&dir.join("cpu.cfs_quota_us"), cgroupfs::parse_v1_quota)?,
                    period_us: read.parsed(&dir.join("cpu.cfs_period_us"), cgroupfs::parse_u64)?,
                },
                read.parsed(&dir.join("cpu.shares"), cgroupfs::parse_u64)?,
            ),
            Version::V2 => {
                let max = read.parsed(&dir.join("cpu.max"), cgroupfs::parse_cpu_max)?;
                (
                    CpuBandwidth {
                        quota_us: max.quota_us,
                        period_us: max.period_us,
                    },
                    read.parsed(&dir.join("cpu.weight"), cgroupfs::parse_u64)?,
                )
            }
        };
        current.cpu = Some(CpuNow {
            dir,
            version,
            bandwidth,
            weight,
        });
    }
    let touches_cpuset = update.cpuset_cpus.is_some() || update.cpuset_mems.is_some();
    if let Some((version, dir)) = layout
        .dir(set, Controller::Cpuset)
        .filter(|_| touches_cpuset)
    {
        let is_root = layout
            .hierarchy_for(Controller::Cpuset)
            .and_then(|i| set.path(i))
            .is_none_or(|p| p == "/");
        let parent = match dir.parent().filter(|_| !is_root) {
            None => None,
            Some(parent) => {
                let (cpus, mems) = match version {
                    Version::V1 => ("cpuset.cpus", "cpuset.mems"),
                    Version::V2 => ("cpuset.cpus.effective", "cpuset.mems.effective"),
                };
                let (cpus_file, mems_file) = (parent.join(cpus), parent.join(mems));
                Some(CpusetParent {
                    cpus: read.parsed(&cpus_file, cpulist::parse_cpulist)?,
                    mems: read.parsed(&mems_file, cpulist::parse_cpulist)?,
                    cpus_file,
                    mems_file,
                })
            }
        };
        current.cpuset = Some(CpusetNow {
            cpus: read.parsed(&dir.join("cpuset.cpus"), cpulist::parse_cpulist)?,
            mems: read.parsed(&dir.join("cpuset.mems"), cpulist::parse_cpulist)?,
            dir,
            version,
            parent,
        });
    }
    Ok(current)
}

/// Makes the writes in order; on a failure writes back the previous values in reverse order.
fn execute(writes: &[Write], mut latest: BTreeMap<PathBuf, String>) -> Result<Applied, WriteError> {
    let mut done: Vec<AppliedWrite> = Vec::new();
    for w in writes {
        if let Some(guard) = &w.usage_guard {
            let usage = std::fs::read_to_string(&guard.file)
                .map_err(|source| (guard.file.clone(), source))
                .and_then(|text| {
                    cgroupfs::parse_u64(&text).map_err(|e| {
                        (
                            guard.file.clone(),
                            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                        )
                    })
                });
            match usage {
                Ok(bytes) if bytes > guard.max_bytes => {
                    return Err(WriteError::Busy {
                        file: w.file.clone(),
                        value: w.value.clone(),
                        usage_bytes: Some(bytes),
                        restored: rollback(&done),
                    });
                }
                Ok(_) => {}
                Err((file, source)) => {
                    let restored = rollback(&done);
                    return Err(write_failure(&file, &w.value, source, restored));
                }
            }
        }
        let previous = latest.get(&w.file).cloned().unwrap_or_default();
        if let Err(source) = write_value(&w.file, &w.value) {
            let restored = rollback(&done);
            return Err(write_failure(&w.file, &w.value, source, restored));
        }
        latest.insert(w.file.clone(), w.value.clone());
        done.push(AppliedWrite {
            file: w.file.clone(),
            previous,
            value: w.value.clone(),
        });
    }
    Ok(Applied { writes: done })
}

/// Writes back the previous value of every write in `done`, last first, trying all of them.
fn rollback(done: &[AppliedWrite]) -> Rollback {
    if done.is_empty() {
        return Rollback::NothingWritten;
    }
    let failures: Vec<RestoreFailure> = done
        .iter()
        .rev()
        .filter_map(|w| {
            write_value(&w.file, &w.previous)
                .err()
                .map(|source| RestoreFailure {
                    file: w.file.clone(),
                    value: w.previous.clone(),
                    source,
                })
        })
        .collect();
    if failures.is_empty() {
        Rollback::Restored { writes: done.len() }
    } else {
        Rollback::Incomplete { failures }
    }
}

/// Classifies a failed write by errno.
fn write_failure(file: &Path, value: &str, source: io::Error, restored: Rollback) -> WriteError {
    let file = file.to_path_buf();
    let value = value.to_string();
    let is_memory = file
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("memory."));
    match source.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) => WriteError::Vanished {
            file,
            value: Some(value),
            restored,
        },
        Some(libc::EBUSY) if is_memory => WriteError::Busy {
            file,
            value,
            usage_bytes: None,
            restored,
        },
        Some(errno @ (libc::EINVAL | libc::EACCES | libc::EBUSY | libc::ERANGE | libc::ENOSPC)) => {
            WriteError::Rejected {
                file,
                value,
                by: RejectedBy::Kernel { errno },
                restored,
            }
        }
        _ => WriteError::Io {
            file,
            value,
            source,
            restored,
        },
    }
}

/// Writes `value` to a control file with one write(2) (an empty value as a lone newline, which
/// the kernel reads as empty).
fn write_value(file: &Path, value: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(file)?;
    let text = if value.is_empty() { "\n" } else { value };
    f.write_all(text.as_bytes())
}
