//! Why a view could not be served: a cgroup or /proc read failed, or the caller's container
//! cannot be told. Every such read is answered with an errno, never with another view.

/// A failure to serve one read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Reading or parsing a cgroup, /proc or /sys file failed.
    #[error(transparent)]
    Cgroup(#[from] proclens_cgroup::Error),
    /// The kernel sent pid 0: the caller is outside our pid namespace, so whose view it is
    /// cannot be told.
    #[error("the caller is outside the daemon's pid namespace (request pid 0)")]
    CallerOutsideNamespace,
    /// No init process was found for the pid namespace of the caller (it exited).
    #[error("no init process found for the pid namespace of pid {pid}")]
    NoInit {
        /// The caller's host pid.
        pid: u32,
    },
    /// The caller's container has no pressure files (cgroup v1, or PSI turned off).
    #[error("no pressure information for this container (cgroup v1 or PSI off)")]
    NoPressure,
}

impl ViewError {
    /// Whether the process or its cgroup is gone (a lookup answers ENOENT, not EIO).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            ViewError::Cgroup(proclens_cgroup::Error::Vanished { .. }) | ViewError::NoInit { .. }
        )
    }
}

/// Result of serving one read.
pub type Result<T> = std::result::Result<T, ViewError>;
