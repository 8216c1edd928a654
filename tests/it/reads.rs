//! Read semantics like the kernel's seq_file: odd offsets, past EOF, lseek, many opens at once,
//! and one open held while the cgroup's values change.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{FusedDaemon, Probe};

use crate::util::{container_cgroup, probe_in, set_memory_limit, MIB};

#[test]
fn odd_offsets_lseek_and_past_eof_serve_the_last_rendering() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut probe = probe_in(&cg)?;
    for rel in [
        "proc/meminfo",
        "proc/stat",
        "proc/cpuinfo",
        "proc/uptime",
        "proc/loadavg",
    ] {
        let h = probe.open(&daemon.path(rel))?;
        let rendered = probe.reread(h)?.into_bytes();
        let len = rendered.len() as u64;
        ensure!(len > 3, "{rel}: empty rendering");
        assert_eq!(probe.pread(h, 1, 2)?, rendered[1..3], "{rel}: odd offset");
        assert_eq!(
            probe.pread(h, len - 3, 100)?,
            rendered[rendered.len() - 3..],
            "{rel}: tail"
        );
        assert_eq!(probe.pread(h, len, 10)?, b"", "{rel}: at EOF");
        assert_eq!(probe.pread(h, len + 4096, 10)?, b"", "{rel}: past EOF");
        probe.seek(h, 1)?;
        assert_eq!(
            probe.read_in_chunks(h, 7)?,
            rendered[1..],
            "{rel}: lseek then reads"
        );
        probe.close(h)?;
    }
    Ok(())
}

#[test]
fn sixty_four_opens_of_one_file_from_concurrent_readers() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let path = daemon.path("proc/meminfo");
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (cg, path) = (&cg, &path);
                scope.spawn(move || -> Result<()> {
                    let mut probe = probe_in(cg)?;
                    let handles = (0..16)
                        .map(|_| probe.open(path))
                        .collect::<Result<Vec<_>>>()?;
                    for round in 0..3 {
                        for &h in &handles {
                            let text = probe.reread(h)?;
                            let total = parse::meminfo_kb(&text, "MemTotal")?;
                            ensure!(total == 256 * 1024, "round {round}: MemTotal {total}");
                        }
                    }
                    handles.into_iter().try_for_each(|h| probe.close(h))
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        }
        Ok(())
    })
}

#[test]
fn open_held_for_a_minute_sees_each_new_limit() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut probe: Probe = probe_in(&cg)?;
    let h = probe.open(&daemon.path("proc/meminfo"))?;
    let started = Instant::now();
    let limits_mib = [192u64, 128, 320, 256];
    let mut round = 0usize;
    while started.elapsed() < Duration::from_secs(60) {
        let mib = limits_mib[round % limits_mib.len()];
        set_memory_limit(&cg, mib * MIB)?;
        let text = probe.reread(h).with_context(|| format!("round {round}"))?;
        let total = parse::meminfo_kb(&text, "MemTotal")?;
        assert_eq!(
            total,
            mib * 1024,
            "round {round}: offset-0 read sees the new limit"
        );
        round += 1;
        // Pacing, not synchronisation: the point is to keep one open alive for a minute.
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(round >= 12, "only {round} rounds in a minute");
    probe.close(h)
}
