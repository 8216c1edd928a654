//! A container's network counters, read from its network namespace's /proc/net/dev.

/// One interface's counters since it was created (one row of /proc/net/dev).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetDevStat {
    /// Interface name inside the namespace (`eth0`).
    pub interface: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on send.
    pub tx_dropped: u64,
}

/// The counters of one network namespace, loopback left out (as cAdvisor does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSnapshot {
    /// The namespace's inode (`/proc/<pid>/ns/net`): containers of one pod share it.
    pub netns_inode: u64,
    /// Every interface but `lo`, in the kernel's order.
    pub interfaces: Vec<NetDevStat>,
}
