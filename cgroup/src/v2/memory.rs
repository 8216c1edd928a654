//! v2 memory controller: memory.max, memory.current, memory.swap.{current,max}, memory.stat,
//! and for the detail memory.high, memory.peak and memory.events.

use crate::error::Result;
use crate::model::{MemoryDetail, MemoryEvents, MemorySnapshot, MemoryStat, Parts};
use crate::parse::cgroupfs::{flat_keyed_pairs, flat_keyed_values, parse_limit, parse_u64};
use crate::parse::ParseResult;
use crate::raw::{min_limit, own_limit, parse_optional, Edge, RawFile};
use std::path::PathBuf;

/// The memory files of one cgroup, as read.
#[derive(Debug, Clone, Default)]
pub struct MemoryFiles {
    /// memory.max of the cgroup, then of each ancestor (`None` where absent).
    pub max: Vec<Option<RawFile>>,
    /// memory.current ([`Parts::MEMORY`]).
    pub current: Option<RawFile>,
    /// memory.swap.current; absent when swap is not accounted.
    pub swap_current: Option<RawFile>,
    /// memory.swap.max of the cgroup and its ancestors (empty when swap is not accounted).
    pub swap_max: Vec<Option<RawFile>>,
    /// memory.stat ([`Parts::MEMORY`]).
    pub stat: Option<RawFile>,
    /// memory.high ([`Parts::MEMORY_DETAIL`]).
    pub high: Option<RawFile>,
    /// memory.peak (Linux 5.19+, [`Parts::MEMORY_DETAIL`]).
    pub peak: Option<RawFile>,
    /// memory.events ([`Parts::MEMORY_DETAIL`]).
    pub events: Option<RawFile>,
    /// Whether these are the cgroup's own files; `false` when they are the nearest ancestor's
    /// that has memory files (the parent does not enable memory for its children), which then
    /// says nothing of the cgroup's own limits.
    pub own: bool,
}

impl MemoryFiles {
    /// Reads the files `parts` need; `chain` is the cgroup's directory, then its ancestors'.
    /// `None` when the cgroup has no memory files: the root, or a cgroup whose parent does not
    /// enable the memory controller for its children (its usage is then counted only in the
    /// nearest ancestor that has them).
    pub(crate) fn read(edge: Edge<'_>, chain: &[PathBuf], parts: Parts) -> Result<Option<Self>> {
        let mut max = edge.chain(chain, "memory.max")?;
        // A cgroup whose parent does not enable memory for its children has no memory files:
        // the kernel charges it to the nearest ancestor that has them, whose files stand in.
        let Some(nearest) = max.iter().position(Option::is_some) else {
            return Ok(None);
        };
        let chain = &chain[nearest..];
        let dir = &chain[0];
        let mut files = MemoryFiles {
            max: max.split_off(nearest),
            swap_current: edge.optional(dir, "memory.swap.current")?,
            own: nearest == 0,
            ..MemoryFiles::default()
        };
        if files.swap_current.is_some() {
            files.swap_max = edge.chain(chain, "memory.swap.max")?;
        }
        if parts.contains(Parts::MEMORY) {
            files.current = Some(edge.read(dir, "memory.current")?);
            files.stat = Some(edge.read(dir, "memory.stat")?);
        }
        if parts.contains(Parts::MEMORY_DETAIL) {
            files.high = edge.optional(dir, "memory.high")?;
            files.peak = edge.optional(dir, "memory.peak")?;
            files.events = edge.optional(dir, "memory.events")?;
        }
        Ok(Some(files))
    }
}

/// Parses v2 memory.stat in one pass over its lines (no map, no allocation).
pub fn parse_stat(text: &str) -> ParseResult<MemoryStat> {
    let mut s = MemoryStat::default();
    for pair in flat_keyed_pairs(text) {
        let (key, value) = pair?;
        let field = match key {
            "anon" => &mut s.anon_bytes,
            "file" => &mut s.file_bytes,
            "active_anon" => &mut s.active_anon_bytes,
            "inactive_anon" => &mut s.inactive_anon_bytes,
            "active_file" => &mut s.active_file_bytes,
            "inactive_file" => &mut s.inactive_file_bytes,
            "unevictable" => &mut s.unevictable_bytes,
            "shmem" => &mut s.shmem_bytes,
            "file_mapped" => &mut s.mapped_file_bytes,
            "file_dirty" => &mut s.dirty_bytes,
            "file_writeback" => &mut s.writeback_bytes,
            "slab_reclaimable" => &mut s.slab_reclaimable_bytes,
            "slab_unreclaimable" => &mut s.slab_unreclaimable_bytes,
            "anon_thp" => &mut s.anon_thp_bytes,
            "shmem_thp" => &mut s.shmem_thp_bytes,
            "file_thp" => &mut s.file_thp_bytes,
            _ => continue,
        };
        *field = value;
    }
    Ok(s)
}

/// Limits and usage: limits are the minimum over the chain.
pub fn memory(files: &MemoryFiles) -> Result<MemorySnapshot> {
    let usage_bytes = parse_optional(files.current.as_ref(), parse_u64)?.unwrap_or(0);
    let swap_accounted = files.swap_current.is_some();
    let stat = parse_optional(files.stat.as_ref(), parse_stat)?.unwrap_or_default();
    Ok(MemorySnapshot {
        limit_bytes: min_limit(&files.max, parse_limit)?,
        usage_bytes,
        swap_limit_bytes: min_limit(&files.swap_max, parse_limit)?,
        swap_usage_bytes: parse_optional(files.swap_current.as_ref(), parse_u64)?.unwrap_or(0),
        swap_accounted,
        stat,
    })
}

/// The cgroup's own limits, its peak and its event counts.
pub fn detail(files: &MemoryFiles) -> Result<MemoryDetail> {
    let [high, max, oom, oom_kill] = parse_optional(files.events.as_ref(), |text| {
        flat_keyed_values(text, ["high", "max", "oom", "oom_kill"])
    })?
    .unwrap_or_default();
    Ok(MemoryDetail {
        own_limit_bytes: own_limit(&files.max, parse_limit)?,
        high_bytes: parse_optional(files.high.as_ref(), parse_limit)?.flatten(),
        own_swap_limit_bytes: own_limit(&files.swap_max, parse_limit)?,
        peak_bytes: parse_optional(files.peak.as_ref(), parse_u64)?,
        events: MemoryEvents {
            high,
            max: max.unwrap_or(0),
            oom,
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
        Some(RawFile::new(name, fixture(&format!("v2/6.1/{name}"))))
    }

    fn fixture_files() -> MemoryFiles {
        MemoryFiles {
            own: true,
            max: vec![raw("memory.max"), None],
            current: raw("memory.current"),
            swap_current: raw("memory.swap.current"),
            swap_max: vec![raw("memory.swap.max")],
            stat: raw("memory.stat"),
            high: raw("memory.high"),
            peak: None,
            events: raw("memory.events"),
        }
    }

    #[test]
    fn limits_usage_and_stat_from_a_real_kernel() {
        let memory = memory(&fixture_files()).unwrap();
        assert_eq!(memory.limit_bytes, Some(268435456));
        assert_eq!(memory.swap_limit_bytes, Some(134217728));
        assert!(memory.swap_accounted);
        assert_eq!(
            memory.usage_bytes,
            fixture("v2/6.1/memory.current")
                .trim()
                .parse::<u64>()
                .unwrap()
        );
        assert!(memory.stat.anon_bytes > 0);
        assert!(memory.working_set_bytes() <= memory.usage_bytes);
    }

    #[test]
    fn an_ancestors_tighter_limit_wins_and_max_is_unlimited() {
        let mut files = fixture_files();
        files.max = vec![
            Some(RawFile::new("a/memory.max", "max\n")),
            Some(RawFile::new("memory.max", "1048576\n")),
        ];
        assert_eq!(memory(&files).unwrap().limit_bytes, Some(1048576));
        files.max = vec![Some(RawFile::new("a/memory.max", "max\n")), None];
        assert_eq!(memory(&files).unwrap().limit_bytes, None);
        assert_eq!(detail(&files).unwrap().own_limit_bytes, None);
    }

    #[test]
    fn detail_from_a_real_kernel() {
        let detail = detail(&fixture_files()).unwrap();
        assert_eq!(detail.own_limit_bytes, Some(268435456));
        assert_eq!(detail.own_swap_limit_bytes, Some(134217728));
        assert_eq!(detail.peak_bytes, None, "6.1 has no memory.peak");
        let events = fixture("v2/6.1/memory.events");
        let count = |key: &str| {
            events
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .map(|v| v.parse::<u64>().unwrap())
        };
        assert_eq!(detail.events.oom_kill, count("oom_kill"));
        assert_eq!(Some(detail.events.max), count("max"));
        assert_eq!(detail.events.high, count("high"));
    }

    #[test]
    fn malformed_text_names_the_file() {
        let mut files = fixture_files();
        files.current = Some(RawFile::new("/cg/x/memory.current", "lots\n"));
        let err = memory(&files).unwrap_err();
        assert!(err.to_string().contains("/cg/x/memory.current"), "{err}");
    }

    #[test]
    fn one_pass_stat_agrees_with_the_keyed_map_on_mutated_text() {
        check_fixture_mutants("v2 memory parse_stat", &["v2/6.1/memory.stat"], |text| {
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
                prop_assert_eq!(parsed.anon_bytes, get("anon"));
                prop_assert_eq!(parsed.file_bytes, get("file"));
                prop_assert_eq!(parsed.inactive_file_bytes, get("inactive_file"));
                prop_assert_eq!(parsed.slab_reclaimable_bytes, get("slab_reclaimable"));
                prop_assert_eq!(parsed.file_thp_bytes, get("file_thp"));
            }
            Ok(one_pass.map(|_| ()))
        });
    }
}
