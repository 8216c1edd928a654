//! Container churn: cgroups destroyed and recreated under the same paths with other limits while
//! readers in every slot read meminfo. No read may show a stale or foreign limit, and the
//! daemon's memory must stay flat.

use std::sync::{Barrier, Mutex};

use anyhow::{ensure, Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, TempCgroup};

use crate::util::{probe_in, set_memory_limit, MIB};

const SLOTS: usize = 50;
const GENERATIONS: usize = 5;
const READS_PER_GENERATION: usize = 10;

/// The daemon's resident set in kB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// Memory limit of `slot` in generation `generation`, distinct across slots and generations.
fn limit_mib(slot: usize, generation: usize) -> u64 {
    64 + slot as u64 + (SLOTS * generation) as u64
}

#[test]
fn recreated_cgroups_never_show_a_stale_limit() -> Result<()> {
    rig::preflight()?;
    let daemon = FusedDaemon::start(&[])?;
    let meminfo = daemon.path("proc/meminfo");
    let barrier = Barrier::new(SLOTS);
    let rss_after: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..SLOTS)
            .map(|slot| {
                let (barrier, rss_after, meminfo, daemon) =
                    (&barrier, &rss_after, &meminfo, &daemon);
                scope.spawn(move || -> Result<()> {
                    let slot_cg = TempCgroup::builder().create()?;
                    for generation in 0..GENERATIONS {
                        let mib = limit_mib(slot, generation);
                        // Same path every generation: `<slot>/ctr`.
                        let ctr = slot_cg.child("ctr")?;
                        set_memory_limit(&ctr, mib * MIB)?;
                        let mut probe = probe_in(&ctr)?;
                        for read in 0..READS_PER_GENERATION {
                            let text = probe.read_string(meminfo).with_context(|| {
                                format!("slot {slot} generation {generation} read {read}")
                            })?;
                            let total = parse::meminfo_kb(&text, "MemTotal")?;
                            ensure!(
                                total == mib * 1024,
                                "slot {slot} generation {generation}: MemTotal {total} kB, \
                                 limit {} kB",
                                mib * 1024
                            );
                        }
                        drop(probe);
                        drop(ctr);
                        if barrier.wait().is_leader() {
                            rss_after.lock().unwrap().push(rss_kb(daemon.pid())?);
                        }
                        barrier.wait();
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("slot thread panicked"))??;
        }
        Ok(())
    })?;
    let rss = rss_after.into_inner().unwrap();
    eprintln!("proclens-fused RSS after each generation (kB): {rss:?}");
    let warm = rss[1];
    let last = *rss.last().context("no RSS samples")?;
    assert!(
        last <= warm + 2048,
        "RSS grew from {warm} kB to {last} kB over {GENERATIONS} generations: {rss:?}"
    );
    Ok(())
}
