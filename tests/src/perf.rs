//! Measurement helpers of the benchmark (`perf/`, binary `proclens-bench`) and its reader
//! (`proclens-bench-reader`): latency summaries exchanged as one text line, and the CPU time and
//! memory of daemon processes read from `/proc`.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What a timed read loop measured: operations started in the measured window and their
/// open+read+close latency percentiles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Successful open+read+close operations.
    pub ops: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 90th percentile latency, ns.
    pub p90_ns: u64,
    /// 99th percentile latency, ns.
    pub p99_ns: u64,
    /// 99.9th percentile latency, ns.
    pub p999_ns: u64,
    /// Slowest operation, ns.
    pub max_ns: u64,
    /// Failed operations.
    pub errors: u64,
    /// Bytes the last successful read returned (a sanity check: 0 means an empty file).
    pub bytes: u64,
    /// Every operation the loop ran, warm-up included (what the daemon served).
    pub total_ops: u64,
}

impl LatencySummary {
    /// Summarises `samples_ns` (sorted in place) measured over `window`; `total_ops` counts
    /// the warm-up's operations too.
    pub fn from_samples(
        samples_ns: &mut [u64],
        window: Duration,
        errors: u64,
        bytes: usize,
        total_ops: u64,
    ) -> Self {
        samples_ns.sort_unstable();
        Self {
            ops: samples_ns.len() as u64,
            window,
            p50_ns: percentile(samples_ns, 0.50),
            p90_ns: percentile(samples_ns, 0.90),
            p99_ns: percentile(samples_ns, 0.99),
            p999_ns: percentile(samples_ns, 0.999),
            max_ns: samples_ns.last().copied().unwrap_or(0),
            errors,
            bytes: bytes as u64,
            total_ops,
        }
    }

    /// Operations per second over the window.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// The one-line form: `ops=N window_ms=N p50_ns=N p90_ns=N p99_ns=N p999_ns=N max_ns=N
    /// errors=N bytes=N total_ops=N`.
    pub fn to_line(&self) -> String {
        format!(
            "ops={} window_ms={} p50_ns={} p90_ns={} p99_ns={} p999_ns={} max_ns={} errors={} \
             bytes={} total_ops={}",
            self.ops,
            self.window.as_millis(),
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.errors,
            self.bytes,
            self.total_ops
        )
    }

    /// Parses [`Self::to_line`]'s form; every field must be present.
    pub fn parse(line: &str) -> Result<Self> {
        let mut s = Self::default();
        let mut seen = 0;
        for field in line.split_whitespace() {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("summary {line:?}"))?;
            let v: u64 = value
                .parse()
                .with_context(|| format!("summary {line:?}: {key}"))?;
            match key {
                "ops" => s.ops = v,
                "window_ms" => s.window = Duration::from_millis(v),
                "p50_ns" => s.p50_ns = v,
                "p90_ns" => s.p90_ns = v,
                "p99_ns" => s.p99_ns = v,
                "p999_ns" => s.p999_ns = v,
                "max_ns" => s.max_ns = v,
                "errors" => s.errors = v,
                "bytes" => s.bytes = v,
                "total_ops" => s.total_ops = v,
                _ => continue,
            }
            seen += 1;
        }
        if seen != 10 {
            bail!("summary {line:?} lacks fields");
        }
        Ok(s)
    }
}

/// Nearest-rank percentile `q` (0..=1) of ascending `sorted`; 0 if empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of `values` (sorted in place); NaN if empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// CPU time and memory of a set of processes at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime of every process (all threads, living and exited), in clock ticks.
    pub cpu_ticks: u64,
    /// Sum of VmRSS, kB (pages shared between the processes count once per process).
    pub rss_kb: u64,
    /// Sum of Pss from `smaps_rollup`, kB (shared pages split between their users).
    pub pss_kb: u64,
    /// Physical pages mapped by any of the processes, each counted once ([`Resident::of`]).
    pub unique: Resident,
}

impl ProcSample {
    /// Samples `pids` now.
    pub fn of(pids: &[u32]) -> Result<Self> {
        let mut s = Self::default();
        for &pid in pids {
            s.cpu_ticks += cpu_ticks(pid)?;
            s.rss_kb += status_kb(pid, "VmRSS:")?;
            s.pss_kb += pss_kb(pid)?;
        }
        s.unique = Resident::of(pids)?;
        Ok(s)
    }
}

/// The memory a set of processes occupies together: every physical page that at least one of
/// them maps, counted once, whichever process or mapping it appears in. For one process it is
/// its RSS; for a supervisor and a worker of the same binary it counts the binary's and libc's
/// pages once, where the VmRSS sum counts them twice.
///
/// Read from `/proc/<pid>/pagemap`: for each page of each mapping in `/proc/<pid>/maps`, bit 63
/// says present and bits 0–54 hold the page frame number (zero unless the reader has
/// CAP_SYS_ADMIN, so this needs root). Present pages are split by bit 61 (a page of a file or of
/// shared memory, not anonymous) and by the mapping (shared mappings, such as a memfd, are
/// shared memory). The kernel's own pages mapped into every process (`[vvar]`, `[vsyscall]`)
/// are left out. Swapped-out pages are not resident and not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// Distinct physical pages, kB.
    pub total_kb: u64,
    /// Of which private anonymous pages (heap, malloc arenas, stacks, copy-on-write copies), kB.
    pub anon_kb: u64,
    /// Of which pages of shared mappings (memfd, shm), kB.
    pub shmem_kb: u64,
    /// Of which page-cache pages of files (the binary, libc, ld.so), kB.
    pub file_kb: u64,
}

/// Bit of a pagemap entry: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// Bit of a pagemap entry: file page or shared anonymous page.
const PM_FILE_OR_SHARED: u64 = 1 << 61;
/// Bits of a pagemap entry holding the page frame number.
const PM_PFN_MASK: u64 = (1 << 55) - 1;

impl Resident {
    /// Distinct resident pages of `pids` now.
    pub fn of(pids: &[u32]) -> Result<Self> {
        use std::collections::HashMap;
        use std::os::unix::fs::FileExt;
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        // Page frame number -> kind (0 anon, 1 shmem, 2 file).
        let mut frames: HashMap<u64, u8> = HashMap::new();
        for &pid in pids {
            let maps_path = format!("/proc/{pid}/maps");
            let maps =
                std::fs::read_to_string(&maps_path).with_context(|| format!("read {maps_path}"))?;
            let pagemap_path = format!("/proc/{pid}/pagemap");
            let pagemap = std::fs::File::open(&pagemap_path)
                .with_context(|| format!("open {pagemap_path}"))?;
            let mut present = 0usize;
            let mut entries = Vec::new();
            for line in maps.lines() {
                let mapping = Mapping::parse(line)
                    .with_context(|| format!("{maps_path}: bad line {line:?}"))?;
                if !mapping.readable_or_writable() || mapping.is_kernel() {
                    continue;
                }
                let pages = usize::try_from((mapping.end - mapping.start) / page)?;
                entries.resize(pages * 8, 0u8);
                let n = pagemap
                    .read_at(&mut entries, mapping.start / page * 8)
                    .with_context(|| format!("read {pagemap_path} at {:#x}", mapping.start))?;
                for entry in entries[..n - n % 8].chunks_exact(8) {
                    let entry = u64::from_ne_bytes(entry.try_into()?);
                    if entry & PM_PRESENT == 0 {
                        continue;
                    }
                    present += 1;
                    let pfn = entry & PM_PFN_MASK;
                    if pfn == 0 {
                        bail!("{pagemap_path} hides page frame numbers: needs CAP_SYS_ADMIN");
                    }
                    let kind = match (entry & PM_FILE_OR_SHARED != 0, mapping.shared) {
                        (false, _) => 0,
                        (true, true) => 1,
                        (true, false) => 2,
                    };
                    frames.insert(pfn, kind);
                }
            }
            if present == 0 {
                bail!("{pagemap_path}: no resident page at all");
            }
        }
        let kb = |kind: Option<u8>| {
            frames
                .values()
                .filter(|&&k| kind.is_none_or(|want| k == want))
                .count() as u64
                * page
                / 1024
        };
        Ok(Self {
            total_kb: kb(None),
            anon_kb: kb(Some(0)),
            shmem_kb: kb(Some(1)),
            file_kb: kb(Some(2)),
        })
    }
}

/// One line of `/proc/<pid>/maps`.
struct Mapping<'a> {
    start: u64,
    end: u64,
    perms: &'a str,
    shared: bool,
    name: &'a str,
}

impl<'a> Mapping<'a> {
    /// Parses `start-end perms offset dev inode [name]`.
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let name = fields.nth(3).unwrap_or("").trim();
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            perms,
            shared: perms.as_bytes().get(3) == Some(&b's'),
            name,
        })
    }

    /// Whether the mapping can hold pages at all (`---p` guard areas cannot).
    fn readable_or_writable(&self) -> bool {
        self.perms.starts_with('r') || self.perms.as_bytes().get(1) == Some(&b'w')
    }

    /// The kernel's pages mapped into every process, not the process's own memory.
    fn is_kernel(&self) -> bool {
        matches!(self.name, "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}

/// CPU use between two samples as a percentage of one core.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample, elapsed: Duration) -> f64 {
    let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    100.0 * ticks / clock_ticks_per_sec() as f64 / secs
}

/// utime + stime of process `pid` (fields 14 and 15 of `/proc/<pid>/stat`), clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let (user, system) = user_system_ticks(pid)?;
    Ok(user + system)
}

/// utime and stime of process `pid` apart (fields 14 and 15 of `/proc/<pid>/stat`): time in
/// its own code and in the kernel's on its behalf, clock ticks.
pub fn user_system_ticks(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: {text:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: field {} in {text:?}", i + 3))
    };
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    Ok((field(11)?, field(12)?))
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, …).
pub fn status_kb(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    kb_line(&text, key).with_context(|| format!("{path}: no {key}"))
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, kB.
pub fn pss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    kb_line(&text, "Pss:").with_context(|| format!("{path}: no Pss"))
}

/// The number after `key` on the line starting with it.
fn kb_line(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that measure this test process's own memory, so one's allocations
    /// (or the other's 32 MiB block) do not land between another's readings.
    static OWN_MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn summary_line_round_trips() {
        let mut samples = vec![5, 1, 4, 2, 3, 100, 7, 6, 8, 9];
        let s =
            LatencySummary::from_samples(&mut samples, Duration::from_millis(2000), 1, 1400, 12);
        assert_eq!((s.ops, s.p50_ns, s.p90_ns, s.max_ns), (10, 5, 9, 100));
        assert_eq!(s.ops_per_sec(), 5.0);
        assert_eq!(LatencySummary::parse(&s.to_line()).unwrap(), s);
        assert!(LatencySummary::parse("ops=1").is_err());
    }

    #[test]
    fn percentiles_and_medians() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn own_process_has_cpu_and_memory() {
        let _alone = OWN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let s = ProcSample::of(&[std::process::id()]).unwrap();
        assert!(s.rss_kb > 0 && s.pss_kb > 0);
        let u = s.unique;
        assert!(u.file_kb > 0 && u.anon_kb > 0, "{u:?}");
        assert_eq!(u.total_kb, u.anon_kb + u.shmem_kb + u.file_kb);
        // Sampled a moment apart, while other tests run in this process.
        assert!(
            u.total_kb.abs_diff(s.rss_kb) < 512,
            "one process: unique {u:?} vs RSS {}",
            s.rss_kb
        );
    }

    #[test]
    fn a_page_shared_by_two_processes_counts_once() {
        // A forked child maps the parent's pages (copy-on-write): twice in the VmRSS sum, once
        // in the unique count. Tests running in parallel in this process write to their own
        // pages meanwhile, each write giving the parent a private copy, so the shared set is made
        // large and untouched: 32 MiB written before the fork and only read after it.
        let _alone = OWN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let shared_block = vec![1u8; 32 << 20];
        let mut pipe = [0; 2];
        // SAFETY: pipe fills the two-element array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only blocks in read(2) and exits: async-signal-safe calls only.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a local; then leaving without running destructors.
            unsafe {
                libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        assert!(child > 0);
        let pids = [std::process::id(), child as u32];
        let measured = (|| -> Result<(ProcSample, Resident, u64)> {
            let both = ProcSample::of(&pids)?;
            let parent = Resident::of(&pids[..1])?;
            Ok((both, parent, status_kb(pids[1], "VmRSS:")?))
        })();
        // SAFETY: waking and reaping our own child.
        unsafe {
            libc::write(pipe[1], [1u8].as_ptr().cast(), 1);
            libc::waitpid(child, std::ptr::null_mut(), 0);
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        assert_eq!(
            std::hint::black_box(&shared_block)[shared_block.len() - 1],
            1
        );
        let (both, parent, child_rss) = measured.unwrap();
        assert!(child_rss > 0);
        assert!(
            both.unique.total_kb + child_rss / 2 < both.rss_kb,
            "the child's pages are mostly the parent's: {:?} vs VmRSS sum {} (child {child_rss})",
            both.unique,
            both.rss_kb
        );
        // Other tests run in this process meanwhile: allow for what they allocate.
        assert!(both.unique.total_kb.abs_diff(parent.total_kb) < 1024);
    }
}
