//! v1 memory controller: memory.stat (with the kernel's own hierarchical limits),
//! memory.limit_in_bytes, memory.usage_in_bytes, memory.memsw.* (with swap accounting), and for
//! the detail memory.max_usage_in_bytes, memory.failcnt and memory.oom_control.

use crate::error::Result;
use crate::model::{MemoryDetail, MemoryEvents, MemorySnapshot, MemoryStat, Parts};
use crate::parse::cgroupfs::{flat_keyed_pairs, flat_keyed_values, parse_u64};
use crate::parse::ParseResult;
use crate::raw::{min_limit, own_limit, parse_optional, Edge, RawFile};
use std::path::PathBuf;

/// The memory files of one cgroup, as read.
#[derive(Debug, Clone, Default)]
pub struct MemoryFiles {
    /// memory.stat ([`Parts::MEMORY`]).
    pub stat: Option<RawFile>,
    /// memory.limit_in_bytes of the cgroup, then of its ancestors; only the cgroup's own when
    /// memory.stat carries the kernel's hierarchical minimum.
    pub limit: Vec<Option<RawFile>>,
    /// memory.usage_in_bytes ([`Parts::MEMORY`]).
    pub usage: Option<RawFile>,
    /// memory.memsw.usage_in_bytes; absent without swap accounting.
    pub memsw_usage: Option<RawFile>,
    /// memory.memsw.limit_in_bytes, like `limit`; empty without swap accounting.
    pub memsw_limit: Vec<Option<RawFile>>,
    /// memory.max_usage_in_bytes ([`Parts::MEMORY_DETAIL`]).
    pub max_usage: Option<RawFile>,
    /// memory.failcnt ([`Parts::MEMORY_DETAIL`]).
    pub failcnt: Option<RawFile>,
    /// memory.oom_control ([`Parts::MEMORY_DETAIL`]).
    pub oom_control: Option<RawFile>,
}

impl MemoryFiles {
    /// Reads the files `parts` need; `chain` is the cgroup's directory, then its ancestors'.
    pub(crate) fn read(edge: Edge<'_>, chain: &[PathBuf], parts: Parts) -> Result<Self> {
        let Some(dir) = chain.first() else {
            return Ok(MemoryFiles::default());
        };
        let mut files = MemoryFiles::default();
        let mut own_only = true;
        if parts.contains(Parts::MEMORY) {
            let stat = edge.read(dir, "memory.stat")?;
            // The kernel's own minimum over the ancestors makes walking them unnecessary.
            own_only = stat.text.contains("hierarchical_memory_limit ");
            files.stat = Some(stat);
            files.usage = Some(edge.read(dir, "memory.usage_in_bytes")?);
        }
        // The limit files: the whole chain without the kernel's minimum, the cgroup's own for
        // the detail, none otherwise.
        let limit_chain = match (own_only, parts.contains(Parts::MEMORY_DETAIL)) {
            (false, _) => chain,
            (true, true) => &chain[..1],
            (true, false) => &[],
        };
        files.limit = edge.chain(limit_chain, "memory.limit_in_bytes")?;
        files.memsw_usage = edge.optional(dir, "memory.memsw.usage_in_bytes")?;
        if files.memsw_usage.is_some() {
            files.memsw_limit = edge.chain(limit_chain, "memory.memsw.limit_in_bytes")?;
        }
        if parts.contains(Parts::MEMORY_DETAIL) {
            files.max_usage = edge.optional(dir, "memory.max_usage_in_bytes")?;
            files.failcnt = edge.optional(dir, "memory.failcnt")?;
            files.oom_control = edge.optional(dir, "memory.oom_control")?;
        }
        Ok(files)
    }
}

/// v1 memory limits are numbers; the kernel's "unlimited" is a huge page-aligned value, kept as
/// is (views cap it at the host's memory).
fn limit(text: &str) -> ParseResult<Option<u64>> {
    parse_u64(text).map(Some)
}

/// What v1 memory.stat says: the breakdown (its hierarchical `total_*` keys, which include
/// descendants) and the kernel's own minimum limits over the ancestors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFile {
    /// The breakdown.
    pub stat: MemoryStat,
    /// `hierarchical_memory_limit`, where the kernel prints it.
    pub hierarchical_memory_limit: Option<u64>,
    /// `hierarchical_memsw_limit`, with swap accounting.
    pub hierarchical_memsw_limit: Option<u64>,
}

/// Parses v1 memory.stat in one pass over its lines (no map, no allocation).
pub fn parse_stat(text: &str) -> ParseResult<StatFile> {
    let mut file = StatFile::default();
    let s = &mut file.stat;
    for pair in flat_keyed_pairs(text) {
        let (key, value) = pair?;
        let field = match key {
            "total_rss" => &mut s.anon_bytes,
            "total_cache" => &mut s.file_bytes,
            "total_active_anon" => &mut s.active_anon_bytes,
            "total_inactive_anon" => &mut s.inactive_anon_bytes,
            "total_active_file" => &mut s.active_file_bytes,
            "total_inactive_file" => &mut s.inactive_file_bytes,
            "total_unevictable" => &mut s.unevictable_bytes,
            "total_shmem" => &mut s.shmem_bytes,
            "total_mapped_file" => &mut s.mapped_file_bytes,
            "total_dirty" => &mut s.dirty_bytes,
            "total_writeback" => &mut s.writeback_bytes,
            "total_rss_huge" => &mut s.anon_thp_bytes,
            "hierarchical_memory_limit" => {
                file.hierarchical_memory_limit = Some(value);
                continue;
            }
            "hierarchical_memsw_limit" => {
                file.hierarchical_memsw_limit = Some(value);
                continue;
            }
            _ => continue,
        };
        *field = value;
    }
    Ok(file)
}

/// Limits and usage. The hard limit is memory.stat's `hierarchical_memory_limit` when present
/// (the kernel's minimum over the ancestors), else the minimum over the chain; the swap limit
/// is the memsw limit minus the memory limit, swap usage memsw usage minus usage.
pub fn memory(files: &MemoryFiles) -> Result<MemorySnapshot> {
    let stat = parse_optional(files.stat.as_ref(), parse_stat)?.unwrap_or_default();
    let limit_bytes = match stat.hierarchical_memory_limit {
        Some(limit) => Some(limit),
        None => min_limit(&files.limit, limit)?,
    };
    let usage_bytes = parse_optional(files.usage.as_ref(), parse_u64)?.unwrap_or(0);
    let (swap_limit_bytes, swap_usage_bytes) = match &files.memsw_usage {
        Some(memsw_usage) => {
            let memsw_usage = memsw_usage.parse(parse_u64)?;
            let memsw_limit = match stat.hierarchical_memsw_limit {
                Some(limit) => Some(limit),
                None => min_limit(&files.memsw_limit, limit)?,
            };
            let swap_limit = match (memsw_limit, limit_bytes) {
                (Some(memsw), Some(memory)) => Some(memsw.saturating_sub(memory)),
                _ => None,
            };
            (swap_limit, memsw_usage.saturating_sub(usage_bytes))
        }
        None => (None, 0),
    };
    Ok(MemorySnapshot {
        limit_bytes,
        usage_bytes,
        swap_limit_bytes,
        swap_usage_bytes,
        swap_accounted: files.memsw_usage.is_some(),
        stat: stat.stat,
    })
}

/// The cgroup's own limits, its peak and its event counts (failcnt counts limit hits; OOM
/// kills come from memory.oom_control, Linux 4.13+).
pub fn detail(files: &MemoryFiles) -> Result<MemoryDetail> {
    let own_limit_bytes = own_limit(&files.limit, limit)?;
    let own_swap_limit_bytes = match (own_limit(&files.memsw_limit, limit)?, own_limit_bytes) {
        (Some(memsw), Some(memory)) => Some(memsw.saturating_sub(memory)),
        _ => None,
    };
    let oom_kill = parse_optional(files.oom_control.as_ref(), |text| {
        flat_keyed_values(text, ["oom_kill"])
    })?
    .and_then(|[oom_kill]| oom_kill);
    Ok(MemoryDetail {
        own_limit_bytes,
        high_bytes: None,
        own_swap_limit_bytes,
        peak_bytes: parse_optional(files.max_usage.as_ref(), parse_u64)?,
        events: MemoryEvents {
            high: None,
            max: parse_optional(files.failcnt.as_ref(), parse_u64)?.unwrap_or(0),
            oom: None,
            oom_kill,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_fixture_mutants, fixture};
    use proptest::prelude::*;

    fn raw(name: &str) -> Option<RawFile> {
        Some(RawFile::new(name, fixture(&format!("v1/6.18/{name}"))))
    }

    fn fixture_files() -> MemoryFiles {
        MemoryFiles {
            stat: raw("memory.stat"),
            limit: vec![raw("memory.limit_in_bytes")],
            usage: raw("memory.usage_in_bytes"),
            memsw_usage: raw("memory.memsw.usage_in_bytes"),
            memsw_limit: vec![raw("memory.memsw.limit_in_bytes")],
            max_usage: raw("memory.max_usage_in_bytes"),
            failcnt: raw("memory.failcnt"),
            oom_control: raw("memory.oom_control"),
        }
    }

    #[test]
    fn limits_and_usage_from_a_real_kernel() {
        let memory = memory(&fixture_files()).unwrap();
        assert_eq!(memory.limit_bytes, Some(268435456));
        assert_eq!(memory.swap_limit_bytes, Some(536870912 - 268435456));
        assert!(memory.swap_accounted && memory.usage_bytes > 0);
        assert!(memory.stat.anon_bytes > 0);
    }

    #[test]
    fn without_hierarchical_keys_the_chain_gives_the_minimum() {
        let mut files = fixture_files();
        let flat: String = fixture("v1/6.18/memory.stat")
            .lines()
            .filter(|l| !l.starts_with("hierarchical_"))
            .map(|l| format!("{l}\n"))
            .collect();
        files.stat = Some(RawFile::new("memory.stat", flat));
        files
            .limit
            .push(Some(RawFile::new("p/limit", "134217728\n")));
        files.memsw_limit.push(None);
        let memory = memory(&files).unwrap();
        assert_eq!(memory.limit_bytes, Some(134217728));
        assert_eq!(memory.swap_limit_bytes, Some(536870912 - 134217728));
    }

    #[test]
    fn detail_from_a_real_kernel() {
        let detail = detail(&fixture_files()).unwrap();
        assert_eq!(detail.own_limit_bytes, Some(268435456));
        assert_eq!(detail.own_swap_limit_bytes, Some(268435456));
        assert_eq!(detail.high_bytes, None);
        let number = |name: &str| {
            fixture(&format!("v1/6.18/{name}"))
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(detail.peak_bytes, Some(number("memory.max_usage_in_bytes")));
        assert_eq!(detail.events.max, number("memory.failcnt"));
        assert_eq!(detail.events.oom_kill, Some(0));
        assert_eq!(detail.events.oom, None);
    }

    #[test]
    fn one_pass_stat_agrees_with_the_keyed_map_on_mutated_text() {
        check_fixture_mutants("v1 memory parse_stat", &["v1/6.18/memory.stat"], |text| {
            let (one_pass, keyed) = (
                parse_stat(text),
                crate::parse::cgroupfs::parse_flat_keyed(text),
            );
            prop_assert_eq!(
                one_pass.is_ok(),
                keyed.is_ok(),
                "both accept or both reject"
            );
            if let (Ok(parsed), Ok(keys)) = (&one_pass, &keyed) {
                let get = |k: &str| keys.get(k).copied().unwrap_or(0);
                prop_assert_eq!(parsed.stat.anon_bytes, get("total_rss"));
                prop_assert_eq!(parsed.stat.file_bytes, get("total_cache"));
                prop_assert_eq!(parsed.stat.inactive_file_bytes, get("total_inactive_file"));
                prop_assert_eq!(parsed.stat.shmem_bytes, get("total_shmem"));
                prop_assert_eq!(parsed.stat.anon_thp_bytes, get("total_rss_huge"));
                prop_assert_eq!(
                    parsed.hierarchical_memory_limit,
                    keys.get("hierarchical_memory_limit").copied()
                );
            }
            Ok(one_pass.map(|_| ()))
        });
    }
}
