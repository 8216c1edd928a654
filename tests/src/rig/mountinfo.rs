//! `/proc/self/mountinfo`, parsed just enough to find cgroup hierarchies and FUSE mounts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem (one per superblock).
    pub device: String,
    /// Root of the mount within its filesystem (`/` unless a subtree is mounted).
    pub root: String,
    /// Where it is mounted, octal escapes decoded.
    pub mountpoint: PathBuf,
    /// Per-mount options (`ro,nosuid,…`).
    pub mount_options: Vec<String>,
    /// Filesystem type (`cgroup`, `cgroup2`, `fuse.proclens`, …).
    pub fstype: String,
    /// Per-superblock options (`rw,memory`, `user_id=0,allow_other`, …).
    pub super_options: Vec<String>,
}

/// Every mount visible to this process, in mountinfo order.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    text.lines().map(parse_line).collect()
}

/// The topmost mount at `path` (the last one listed there), if any.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mountpoint == path))
}

/// Parses one mountinfo line: `id parent maj:min root mountpoint options [tags…] - type source
/// super_options`.
fn parse_line(line: &str) -> Result<MountEntry> {
    let bad = || format!("mountinfo line {line:?}");
    let (left, right) = line.split_once(" - ").with_context(bad)?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    let field = |fields: &[&str], i: usize| fields.get(i).map(|s| s.to_string()).with_context(bad);
    let options = |s: String| s.split(',').map(str::to_string).collect();
    Ok(MountEntry {
        device: field(&left, 2)?,
        root: unescape(&field(&left, 3)?),
        mountpoint: PathBuf::from(unescape(&field(&left, 4)?)),
        mount_options: options(field(&left, 5)?),
        fstype: field(&right, 0)?,
        super_options: options(field(&right, 2)?),
    })
}

/// Decodes mountinfo's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], digits) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_and_cgroup_lines() {
        let m = parse_line(
            "90 31 0:50 / /tmp/a\\040b/mnt ro,nosuid,nodev,relatime shared:7 - fuse.proclens \
             proclens rw,user_id=0,group_id=0,allow_other",
        )
        .unwrap();
        assert_eq!(m.mountpoint, Path::new("/tmp/a b/mnt"));
        assert_eq!(m.fstype, "fuse.proclens");
        assert!(m.mount_options.contains(&"ro".to_string()));
        assert!(m.super_options.contains(&"allow_other".to_string()));
        let c = parse_line("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu")
            .unwrap();
        assert_eq!((c.device.as_str(), c.fstype.as_str()), ("0:29", "cgroup"));
    }
}
