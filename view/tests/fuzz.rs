//! A time-bounded mutation fuzzer for every kernel-file parser of proclens-cgroup and the
//! renderers fed by them. Seeds are the real-kernel fixtures (v1 and v2); each round mutates one
//! (byte flips, deletions, duplications, splices, and tokens the kernel formats are sensitive
//! to), then feeds the result to EVERY parser, and renders whatever parses. A panic prints the
//! input and fails.
//!
//! Not part of CI (ignored); run for ten minutes with:
//!
//! ```text
//! PROCLENS_FUZZ_SECS=600 cargo test --profile fuzz -p proclens-view --test fuzz -- --ignored --nocapture
//! ```

use proclens_cgroup::parse::{cgroupfs, cpulist, host, mountinfo, proc_pid};
use proclens_cgroup::{CpuUsage, MemorySnapshot, TaskCounts};
use proclens_view::{cpuinfo, diskstats, meminfo, pressure, stat};
use std::path::Path;
use std::time::{Duration, Instant};

/// Tokens that sit on the edges of the formats: limits, separators, overflows, signs.
const TOKENS: &[&str] = &[
    "max",
    "-1",
    "0",
    ":",
    "::",
    "=",
    " ",
    "\t",
    "\n",
    "\n\n",
    "kB",
    "cpu",
    "cpu0",
    "processor",
    "some",
    "full",
    "avg10=",
    "total=",
    "-",
    ",",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "NaN",
    "inf",
    " - ",
    "(",
    ")",
    "\\040",
    "8:0",
    "Read",
    "Total",
    "NSpid:",
    "nan",
    "1e309",
];

/// xorshift64*: fast, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cgroup/fixtures");
    let mut seeds = Vec::new();
    for version in ["v1/6.18", "v2/6.1"] {
        for entry in std::fs::read_dir(root.join(version)).expect("fixtures") {
            seeds.push(std::fs::read(entry.expect("entry").path()).expect("fixture"));
        }
    }
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            1 if !data.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                data.drain(at.min(end)..end);
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            3 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(64)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[cut..]);
            }
            _ => data.truncate(at),
        }
    }
    data
}

/// Feeds `text` to every parser and renders what parses.
fn exercise(text: &str) {
    let _ = cpulist::parse_cpulist(text).map(|c| cpulist::format_cpulist(&c));
    let _ = mountinfo::parse_mountinfo(text);
    let _ = proc_pid::parse_pid_cgroup(text);
    let _ = proc_pid::parse_proc_stat(text);
    let _ = proc_pid::parse_proc_status(text);
    let _ = cgroupfs::parse_u64(text);
    let _ = cgroupfs::parse_limit(text);
    let _ = cgroupfs::parse_v1_quota(text);
    let _ = cgroupfs::parse_flat_keyed(text);
    let _ = cgroupfs::parse_cpu_max(text);
    let _ = cgroupfs::parse_usage_all(text);
    let _ = host::parse_uptime(text);
    if let Ok(psi) = cgroupfs::parse_psi(text) {
        let _ = pressure::render_pressure(&psi);
    }
    let names = host::parse_diskstats_names(text).unwrap_or_default();
    for io in [
        cgroupfs::parse_io_stat(text),
        cgroupfs::parse_blkio(text, text),
    ]
    .into_iter()
    .flatten()
    {
        let _ = diskstats::render_diskstats(&io, &names);
    }
    if let Ok(m) = host::parse_meminfo(text) {
        let memory = MemorySnapshot {
            limit_bytes: Some(256 << 20),
            usage_bytes: u64::MAX,
            swap_limit_bytes: Some(u64::MAX),
            swap_usage_bytes: u64::MAX,
            swap_accounted: true,
            ..Default::default()
        };
        let _ = meminfo::render_meminfo(&m, &memory);
        let _ = meminfo::render_meminfo(&m, &MemorySnapshot::default());
    }
    if let Ok(c) = host::parse_cpuinfo(text) {
        let _ = cpuinfo::render_cpuinfo(&c, &[0, 1, 7]);
    }
    if let Ok(s) = host::parse_stat(text) {
        let usage = CpuUsage {
            total_ns: u64::MAX,
            user_ns: u64::MAX,
            system_ns: u64::MAX,
            per_cpu: None,
        };
        let rows = stat::container_cpu_rows(&s, &[0, 1], &usage);
        let rows = stat::monotonic(&rows, rows.clone());
        let _ = stat::render_stat(&s, &rows, &TaskCounts::default());
    }
}

#[test]
#[ignore = "fuzzing runs for minutes; see the module doc for the command"]
fn fuzz_every_parser_and_renderer() {
    let secs: u64 = std::env::var("PROCLENS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("PROCLENS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let seeds = seeds();
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let data = mutate(&mut rng, &seeds);
            let text = String::from_utf8_lossy(&data);
            if std::panic::catch_unwind(|| exercise(&text)).is_err() {
                panic!("parser or renderer panicked on input {text:?}");
            }
            rounds += 1;
        }
    }
    eprintln!(
        "fuzz: {rounds} inputs in {secs} s from {} seeds (seed {seed}), no panic",
        seeds.len()
    );
}
