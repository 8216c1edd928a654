//! `/proc/self/mountinfo`, parsed by `proclens_cgroup::parse::mountinfo`, with the options split
//! into lists for the tests' checks on FUSE mounts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use proclens_cgroup::parse::mountinfo::{parse_mountinfo, MountInfo};

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

impl From<MountInfo> for MountEntry {
    fn from(m: MountInfo) -> Self {
        let options = |s: &str| s.split(',').map(str::to_string).collect();
        MountEntry {
            mount_options: options(&m.mount_options),
            super_options: options(&m.super_options),
            device: m.device,
            root: m.root,
            mountpoint: PathBuf::from(m.mount_point),
            fstype: m.fs_type,
        }
    }
}

/// Every mount visible to this process, in mountinfo order.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let mounts = parse_mountinfo(&text).context("parse /proc/self/mountinfo")?;
    Ok(mounts.into_iter().map(MountEntry::from).collect())
}

/// The topmost mount at `path` (the last one listed there), if any.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mountpoint == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fuse_mount_options() {
        let text =
            "90 31 0:50 / /tmp/a\\040b/mnt ro,nosuid,nodev,relatime shared:7 - fuse.proclens \
                    proclens rw,user_id=0,group_id=0,allow_other\n";
        let m = MountEntry::from(parse_mountinfo(text).unwrap().remove(0));
        assert_eq!(m.mountpoint, Path::new("/tmp/a b/mnt"));
        assert_eq!(
            (m.device.as_str(), m.fstype.as_str()),
            ("0:50", "fuse.proclens")
        );
        assert_eq!(m.mount_options, ["ro", "nosuid", "nodev", "relatime"]);
        assert_eq!(
            m.super_options,
            ["rw", "user_id=0", "group_id=0", "allow_other"]
        );
    }
}
