//! Block I/O per device.

/// I/O done by a cgroup (and its descendants) on one block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoDeviceStat {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations completed.
    pub read_ios: u64,
    /// Write operations completed.
    pub write_ios: u64,
    /// Bytes discarded.
    pub discard_bytes: u64,
    /// Discard operations completed.
    pub discard_ios: u64,
}

/// Which devices a container's I/O figures cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoCoverage {
    /// Every block device: one not listed had no I/O from the container (v2 io.stat).
    #[default]
    AllDevices,
    /// Only the devices listed; for any other device the kernel may keep no count, so its I/O
    /// is unknown, not 0. v1 `blkio.throttle.*` counts a device's I/O only while throttling is
    /// active on its queue: on 6.18 (measured) from the moment a throttle rule is first written
    /// for the device, in any cgroup, until the device goes.
    ListedDevices,
}

/// A container's block I/O.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IoSnapshot {
    /// Per device, sorted by device number.
    pub devices: Vec<IoDeviceStat>,
    /// What a device missing from `devices` means.
    pub coverage: IoCoverage,
}
