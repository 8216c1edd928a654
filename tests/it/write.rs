//! The write path (`proclens_cgroup::write::apply`) on real cgroups: v1 on the host, v2 in the
//! VM stage. Every test reads the kernel's files back and asserts their exact text, and every
//! failure test asserts that each file the update touched holds what it held before.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proclens_cgroup::write::{
    apply, Applied, CpuBandwidth, Limit, LimitUpdate, RejectedBy, Rollback, WriteError,
};
use proclens_cgroup::{CgroupSet, Controller, HostPaths, Layout, Version};
use proclens_tests::rig::{self, TempCgroup};

use crate::util::{have_cpus, probe_in};

const MIB: u64 = 1 << 20;

/// The host's layout and the set naming `cg` in it.
fn locate(cg: &TempCgroup) -> Result<(Layout, CgroupSet)> {
    let layout = Layout::discover(&HostPaths::default())?;
    let set = layout.set_at(cg.name());
    Ok((layout, set))
}

/// `cg`'s directory for `controller`, with the hierarchy's version.
fn dir(layout: &Layout, set: &CgroupSet, controller: Controller) -> Result<(Version, PathBuf)> {
    layout
        .dir(set, controller)
        .with_context(|| format!("no hierarchy provides {controller:?}"))
}

/// A control file's text without the trailing newline.
fn read(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim_end().to_string())
}

/// The text of each file, in order.
fn snapshot(files: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    files.iter().map(|f| Ok((f.clone(), read(f)?))).collect()
}

/// The writes made, as (file name, value).
fn written(applied: &Applied) -> Vec<(String, String)> {
    applied
        .writes
        .iter()
        .map(|w| {
            let name = w.file.file_name().unwrap_or_default();
            (name.to_string_lossy().into_owned(), w.value.clone())
        })
        .collect()
}

fn pairs(expected: &[(&str, String)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(f, v)| (f.to_string(), v.clone()))
        .collect()
}

fn mib(n: u64) -> String {
    (n * MIB).to_string()
}

/// v2: enables cpuset, cpu and memory for `cg`'s children (v1 needs nothing).
fn enable_v2_children(layout: &Layout, set: &CgroupSet) -> Result<()> {
    let (version, dir) = dir(layout, set, Controller::Memory)?;
    if version == Version::V1 {
        return Ok(());
    }
    let offered = read(&dir.join("cgroup.controllers"))?;
    for c in ["cpuset", "cpu", "memory"] {
        if offered.split_whitespace().any(|o| o == c) {
            let file = dir.join("cgroup.subtree_control");
            std::fs::write(&file, format!("+{c}"))
                .with_context(|| format!("enable {c} in {}", file.display()))?;
        }
    }
    Ok(())
}

/// v1: memsw moves before a raised limit and after a lowered one, keeping the swap allowance;
/// v2: memory.max before a raised memory.high, memory.high before a lowered memory.max.
#[test]
fn memory_limits_raise_and_lower_in_order_and_read_back_exactly() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().memory_limit(64 * MIB).create()?;
    let (layout, set) = locate(&cg)?;
    let (version, dir) = dir(&layout, &set, Controller::Memory)?;
    let update = |max, high, swap| LimitUpdate {
        memory_max: max,
        memory_high: high,
        swap_max: swap,
        ..LimitUpdate::default()
    };
    let b = |n: u64| Some(Limit::Bytes(n * MIB));
    match version {
        Version::V1 => {
            let limit = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if !memsw.exists() {
                let applied = apply(&layout, &set, &update(b(128), None, None))?;
                assert_eq!(
                    written(&applied),
                    pairs(&[("memory.limit_in_bytes", mib(128))])
                );
                assert_eq!(read(&limit)?, mib(128));
                eprintln!("!!! write: no memsw accounting on this v1 host, memsw cases skipped");
                return Ok(());
            }
            let applied = apply(&layout, &set, &update(None, None, b(16)))?;
            assert_eq!(
                written(&applied),
                pairs(&[("memory.memsw.limit_in_bytes", mib(80))])
            );
            let applied = apply(&layout, &set, &update(b(128), None, None))?;
            assert_eq!(
                written(&applied),
                pairs(&[
                    ("memory.memsw.limit_in_bytes", mib(144)),
                    ("memory.limit_in_bytes", mib(128)),
                ])
            );
            assert_eq!((read(&limit)?, read(&memsw)?), (mib(128), mib(144)));
            let applied = apply(&layout, &set, &update(b(32), None, None))?;
            assert_eq!(
                written(&applied),
                pairs(&[
                    ("memory.limit_in_bytes", mib(32)),
                    ("memory.memsw.limit_in_bytes", mib(48)),
                ])
            );
            assert_eq!((read(&limit)?, read(&memsw)?), (mib(32), mib(48)));
            let err = apply(&layout, &set, &update(None, b(16), None)).unwrap_err();
            assert!(
                matches!(
                    err,
                    WriteError::Unsupported {
                        setting: "memory_high",
                        ..
                    }
                ),
                "{err:?}"
            );
            let applied = apply(&layout, &set, &update(Some(Limit::Max), None, None))?;
            assert_eq!(
                written(&applied),
                pairs(&[
                    ("memory.memsw.limit_in_bytes", "-1".into()),
                    ("memory.limit_in_bytes", "-1".into()),
                ])
            );
            // The kernel shows -1 as its page counter's maximum.
            let unlimited = "9223372036854771712".to_string();
            assert_eq!(
                (read(&limit)?, read(&memsw)?),
                (unlimited.clone(), unlimited)
            );
        }
        Version::V2 => {
            let (max, high) = (dir.join("memory.max"), dir.join("memory.high"));
            let applied = apply(&layout, &set, &update(b(128), b(96), None))?;
            assert_eq!(
                written(&applied),
                pairs(&[("memory.max", mib(128)), ("memory.high", mib(96))])
            );
            assert_eq!((read(&max)?, read(&high)?), (mib(128), mib(96)));
            let applied = apply(&layout, &set, &update(b(32), b(24), None))?;
            assert_eq!(
                written(&applied),
                pairs(&[("memory.high", mib(24)), ("memory.max", mib(32))])
            );
            assert_eq!((read(&max)?, read(&high)?), (mib(32), mib(24)));
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                let applied = apply(&layout, &set, &update(None, None, b(16)))?;
                assert_eq!(written(&applied), pairs(&[("memory.swap.max", mib(16))]));
                assert_eq!(read(&swap)?, mib(16));
            } else {
                eprintln!("!!! write: no memory.swap.max in this v2 kernel, swap case skipped");
            }
            let applied = apply(
                &layout,
                &set,
                &update(Some(Limit::Max), Some(Limit::Max), None),
            )?;
            assert_eq!(
                written(&applied),
                pairs(&[("memory.max", "max".into()), ("memory.high", "max".into())])
            );
            assert_eq!((read(&max)?, read(&high)?), ("max".into(), "max".into()));
        }
    }
    Ok(())
}

/// A process holds 64 MiB it cannot give back (no swap: the host has none, the v2 cgroup gets
/// memory.swap.max 0). Lowering the limit to 16 MiB fails with Busy (v1: EBUSY from the kernel;
/// v2: memory.current above the new memory.max after memory.high, so memory.max, which would
/// OOM-kill, is never written); the write made before it is undone, every file holds its
/// previous text, and the process lives on.
#[test]
fn lowering_memory_below_what_a_process_holds_is_busy_and_keeps_the_limits() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().memory_limit(256 * MIB).create()?;
    let (layout, set) = locate(&cg)?;
    let (version, dir) = dir(&layout, &set, Controller::Memory)?;
    let no_swap = LimitUpdate {
        swap_max: Some(Limit::Bytes(0)),
        ..LimitUpdate::default()
    };
    let (limit_file, files, update) = match version {
        Version::V1 => {
            let limit = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                // memsw = limit, so the update's larger swap allowance raises memsw first.
                apply(&layout, &set, &no_swap)?;
            }
            let update = LimitUpdate {
                memory_max: Some(Limit::Bytes(16 * MIB)),
                swap_max: memsw.exists().then_some(Limit::Bytes(512 * MIB)),
                ..LimitUpdate::default()
            };
            (limit.clone(), vec![limit, memsw], update)
        }
        Version::V2 => {
            match apply(&layout, &set, &no_swap) {
                Ok(_) | Err(WriteError::Unsupported { .. }) => {}
                Err(err) => return Err(err.into()),
            }
            let max = dir.join("memory.max");
            let update = LimitUpdate {
                memory_max: Some(Limit::Bytes(16 * MIB)),
                memory_high: Some(Limit::Bytes(12 * MIB)),
                ..LimitUpdate::default()
            };
            (max.clone(), vec![max, dir.join("memory.high")], update)
        }
    };
    let files: Vec<PathBuf> = files.into_iter().filter(|f| f.exists()).collect();
    let mut probe = probe_in(&cg)?;
    probe.alloc_mib(64)?;
    let before = snapshot(&files)?;
    let err = apply(&layout, &set, &update).unwrap_err();
    let WriteError::Busy {
        file,
        value,
        usage_bytes,
        restored,
    } = &err
    else {
        bail!("want Busy, got {err:?}");
    };
    assert_eq!((file, value.as_str()), (&limit_file, mib(16).as_str()));
    match version {
        Version::V1 => assert_eq!(*usage_bytes, None, "{err}"),
        Version::V2 => assert!(usage_bytes.is_some_and(|u| u >= 64 * MIB), "{err}"),
    }
    let expected_undone = usize::from(files.len() == 2);
    match restored {
        Rollback::Restored { writes } => assert_eq!(*writes, expected_undone, "{err}"),
        Rollback::NothingWritten => assert_eq!(expected_undone, 0, "{err}"),
        Rollback::Incomplete { .. } => bail!("rollback failed: {err}"),
    }
    assert_eq!(snapshot(&files)?, before);
    probe
        .pids()
        .context("the process holding the memory must still run")?;
    Ok(())
}

/// v1: a child's CFS quota above its parent's is EINVAL; the memory limit written before it
/// in the same update is restored, so every file is as before. v2 takes the same update (a
/// child's cpu.max above its parent's is allowed; the parent's applies).
#[test]
fn child_quota_above_parent_is_rejected_on_v1_with_everything_restored() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().cfs_quota(50_000, 100_000).create()?;
    let (layout, parent_set) = locate(&cg)?;
    enable_v2_children(&layout, &parent_set)?;
    let child = cg.child("c")?;
    let set = layout.set_at(child.name());
    let (version, memory) = dir(&layout, &set, Controller::Memory)?;
    let (_, cpu) = dir(&layout, &set, Controller::Cpu)?;
    let update = LimitUpdate {
        memory_max: Some(Limit::Bytes(32 * MIB)),
        cpu_max: Some(CpuBandwidth {
            quota_us: Some(60_000),
            period_us: 100_000,
        }),
        ..LimitUpdate::default()
    };
    match version {
        Version::V1 => {
            let files = [
                memory.join("memory.limit_in_bytes"),
                memory.join("memory.memsw.limit_in_bytes"),
                cpu.join("cpu.cfs_quota_us"),
                cpu.join("cpu.cfs_period_us"),
            ];
            let files: Vec<PathBuf> = files.into_iter().filter(|f| f.exists()).collect();
            let before = snapshot(&files)?;
            let err = apply(&layout, &set, &update).unwrap_err();
            let WriteError::Rejected {
                file,
                value,
                by,
                restored,
            } = &err
            else {
                bail!("want Rejected, got {err:?}");
            };
            assert_eq!(file, &cpu.join("cpu.cfs_quota_us"));
            assert_eq!(value, "60000");
            assert_eq!(
                by,
                &RejectedBy::Kernel {
                    errno: libc::EINVAL
                }
            );
            assert!(
                matches!(restored, Rollback::Restored { writes: 1 }),
                "{err}"
            );
            assert_eq!(snapshot(&files)?, before);
        }
        Version::V2 => {
            let applied = apply(&layout, &set, &update)?;
            assert_eq!(
                written(&applied),
                pairs(&[("memory.max", mib(32)), ("cpu.max", "60000 100000".into())])
            );
            assert_eq!(read(&cpu.join("cpu.max"))?, "60000 100000");
        }
    }
    Ok(())
}

/// A removed cgroup gives Vanished while its current limits are read: nothing is written.
#[test]
fn a_removed_cgroup_is_vanished() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().create()?;
    let (layout, set) = locate(&cg)?;
    let (version, dir) = dir(&layout, &set, Controller::Memory)?;
    drop(cg);
    let update = LimitUpdate {
        memory_max: Some(Limit::Bytes(32 * MIB)),
        ..LimitUpdate::default()
    };
    let err = apply(&layout, &set, &update).unwrap_err();
    let first = match version {
        Version::V1 => "memory.limit_in_bytes",
        Version::V2 => "memory.max",
    };
    match &err {
        WriteError::Vanished {
            file,
            value: None,
            restored: Rollback::NothingWritten,
        } => assert_eq!(file, &dir.join(first)),
        other => bail!("want Vanished while reading, got {other:?}"),
    }
    Ok(())
}

/// CFS bandwidth round trips exactly, including a period change in the same direction as the
/// quota (v1 passes through -1); cpu shares land as v1 cpu.shares or converted v2 cpu.weight.
#[test]
fn cpu_bandwidth_and_shares_round_trip_exactly() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().create()?;
    let (layout, set) = locate(&cg)?;
    let (version, dir) = dir(&layout, &set, Controller::Cpu)?;
    let bandwidth = |quota_us, period_us| LimitUpdate {
        cpu_max: Some(CpuBandwidth {
            quota_us,
            period_us,
        }),
        ..LimitUpdate::default()
    };
    let s = |v: &str| v.to_string();
    let steps = [
        (
            bandwidth(Some(25_000), 50_000),
            vec![
                ("cpu.cfs_period_us", s("50000")),
                ("cpu.cfs_quota_us", s("25000")),
            ],
            "25000 50000",
        ),
        (
            bandwidth(Some(100_000), 200_000),
            vec![
                ("cpu.cfs_quota_us", s("-1")),
                ("cpu.cfs_period_us", s("200000")),
                ("cpu.cfs_quota_us", s("100000")),
            ],
            "100000 200000",
        ),
        (
            bandwidth(None, 100_000),
            vec![
                ("cpu.cfs_quota_us", s("-1")),
                ("cpu.cfs_period_us", s("100000")),
            ],
            "max 100000",
        ),
    ];
    for (update, v1_writes, v2_text) in steps {
        let applied = apply(&layout, &set, &update)?;
        let bw = update.cpu_max.context("bandwidth")?;
        match version {
            Version::V1 => {
                assert_eq!(written(&applied), pairs(&v1_writes));
                let quota = bw.quota_us.map_or("-1".to_string(), |q| q.to_string());
                assert_eq!(
                    (
                        read(&dir.join("cpu.cfs_quota_us"))?,
                        read(&dir.join("cpu.cfs_period_us"))?
                    ),
                    (quota, bw.period_us.to_string())
                );
            }
            Version::V2 => {
                assert_eq!(written(&applied), pairs(&[("cpu.max", v2_text.into())]));
                assert_eq!(read(&dir.join("cpu.max"))?, v2_text);
            }
        }
    }
    let shares = LimitUpdate {
        cpu_shares: Some(512),
        ..LimitUpdate::default()
    };
    apply(&layout, &set, &shares)?;
    match version {
        Version::V1 => assert_eq!(read(&dir.join("cpu.shares"))?, "512"),
        Version::V2 => assert_eq!(read(&dir.join("cpu.weight"))?, "20"),
    }
    Ok(())
}

/// A cpuset grows and shrinks; a child's cpuset outside its parent's is Rejected before any
/// write, so the memory limit in the same update is not applied either.
#[test]
fn cpuset_changes_and_a_child_outside_its_parent_is_rejected_whole() -> Result<()> {
    rig::preflight()?;
    if !have_cpus(
        2,
        "write::cpuset_changes_and_a_child_outside_its_parent_is_rejected_whole",
    )? {
        return Ok(());
    }
    let cg = TempCgroup::builder().cpus("0").create()?;
    let (layout, parent_set) = locate(&cg)?;
    let (version, dir) = dir(&layout, &parent_set, Controller::Cpuset)?;
    let cpus = |cpus: &[u32]| LimitUpdate {
        cpuset_cpus: Some(cpus.to_vec()),
        ..LimitUpdate::default()
    };
    let applied = apply(&layout, &parent_set, &cpus(&[0, 1]))?;
    assert_eq!(written(&applied), pairs(&[("cpuset.cpus", "0-1".into())]));
    assert_eq!(read(&dir.join("cpuset.cpus"))?, "0-1");
    let applied = apply(&layout, &parent_set, &cpus(&[1]))?;
    assert_eq!(written(&applied), pairs(&[("cpuset.cpus", "1".into())]));
    assert_eq!(read(&dir.join("cpuset.cpus"))?, "1");

    enable_v2_children(&layout, &parent_set)?;
    let child = cg.child("c")?;
    let set = layout.set_at(child.name());
    let (_, child_cpuset) = self::dir(&layout, &set, Controller::Cpuset)?;
    let (_, child_memory) = self::dir(&layout, &set, Controller::Memory)?;
    let limit = child_memory.join(match version {
        Version::V1 => "memory.limit_in_bytes",
        Version::V2 => "memory.max",
    });
    let files = [child_cpuset.join("cpuset.cpus"), limit];
    let before = snapshot(&files)?;
    let update = LimitUpdate {
        memory_max: Some(Limit::Bytes(32 * MIB)),
        ..cpus(&[0])
    };
    let err = apply(&layout, &set, &update).unwrap_err();
    let parent_file = dir.join(match version {
        Version::V1 => "cpuset.cpus",
        Version::V2 => "cpuset.cpus.effective",
    });
    match &err {
        WriteError::Rejected {
            file,
            value,
            by:
                RejectedBy::Parent {
                    parent_file: p,
                    parent_value,
                },
            restored: Rollback::NothingWritten,
        } => {
            assert_eq!(file, &child_cpuset.join("cpuset.cpus"));
            assert_eq!(value, "0");
            assert_eq!((p, parent_value.as_str()), (&parent_file, "1"));
        }
        other => bail!("want Rejected by the parent, got {other:?}"),
    }
    assert_eq!(snapshot(&files)?, before);
    Ok(())
}
