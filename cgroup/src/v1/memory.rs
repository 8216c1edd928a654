//! v1 memory controller: memory.stat (with the kernel's own hierarchical limits),
//! memory.limit_in_bytes, memory.usage_in_bytes, memory.memsw.* (with swap accounting), and for
//! the detail memory.max_usage_in_bytes, memory.failcnt and memory.oom_control.

use crate::error::Result;
use crate::model::{MemoryDetail, MemoryEvents, MemorySnapshot, MemoryStat, Parts};
use crate::parse::cgroupfs::{parse_flat_keyed, parse_u64};
use crate::parse::ParseResult;
use crate::raw::{min_limit, parse_optional, Edge, RawFile};
use std::collections::BTreeMap;
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

/// memory.stat keys, normalised: the hierarchical `total_*` keys, which include descendants.
pub fn stat(keys: &BTreeMap<&str, u64>) -> MemoryStat {
    let get = |k: &str| keys.get(k).copied().unwrap_or(0);
    MemoryStat {
        anon_bytes: get("total_rss"),
        file_bytes: get("total_cache"),
        active_anon_bytes: get("total_active_anon"),
        inactive_anon_bytes: get("total_inactive_anon"),
        active_file_bytes: get("total_active_file"),
        inactive_file_bytes: get("total_inactive_file"),
        unevictable_bytes: get("total_unevictable"),
        shmem_bytes: get("total_shmem"),
        mapped_file_bytes: get("total_mapped_file"),
        dirty_bytes: get("total_dirty"),
        writeback_bytes: get("total_writeback"),
        slab_reclaimable_bytes: 0,
        slab_unreclaimable_bytes: 0,
        anon_thp_bytes: get("total_rss_huge"),
        shmem_thp_bytes: 0,
        file_thp_bytes: 0,
    }
}

/// Limits and usage. The hard limit is memory.stat's `hierarchical_memory_limit` when present
/// (the kernel's minimum over the ancestors), else the minimum over the chain; the swap limit
/// is the memsw limit minus the memory limit, swap usage memsw usage minus usage.
pub fn memory(files: &MemoryFiles) -> Result<MemorySnapshot> {
    let keys = parse_optional(files.stat.as_ref(), parse_flat_keyed)?.unwrap_or_default();
    let limit_bytes = match keys.get("hierarchical_memory_limit") {
        Some(&limit) => Some(limit),
        None => min_limit(&files.limit, limit)?,
    };
    let usage_bytes = parse_optional(files.usage.as_ref(), parse_u64)?.unwrap_or(0);
    let (swap_limit_bytes, swap_usage_bytes) = match &files.memsw_usage {
        Some(memsw_usage) => {
            let memsw_usage = memsw_usage.parse(parse_u64)?;
            let memsw_limit = match keys.get("hierarchical_memsw_limit") {
                Some(&limit) => Some(limit),
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
        stat: stat(&keys),
    })
}

/// The cgroup's own limits, its peak and its event counts (failcnt counts limit hits; OOM
/// kills come from memory.oom_control, Linux 4.13+).
pub fn detail(files: &MemoryFiles) -> Result<MemoryDetail> {
    let own = |chain: &[Option<RawFile>]| -> Result<Option<u64>> {
        match chain.first() {
            Some(Some(file)) => file.parse(limit),
            _ => Ok(None),
        }
    };
    let own_limit_bytes = own(&files.limit)?;
    let own_swap_limit_bytes = match (own(&files.memsw_limit)?, own_limit_bytes) {
        (Some(memsw), Some(memory)) => Some(memsw.saturating_sub(memory)),
        _ => None,
    };
    let oom = parse_optional(files.oom_control.as_ref(), parse_flat_keyed)?.unwrap_or_default();
    Ok(MemoryDetail {
        own_limit_bytes,
        high_bytes: None,
        own_swap_limit_bytes,
        peak_bytes: parse_optional(files.max_usage.as_ref(), parse_u64)?,
        events: MemoryEvents {
            high: None,
            max: parse_optional(files.failcnt.as_ref(), parse_u64)?.unwrap_or(0),
            oom: None,
            oom_kill: oom.get("oom_kill").copied(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

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
}
