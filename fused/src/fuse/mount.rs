//! Mounting and unmounting: open /dev/fuse, mount(2) with our options (we run as root, so no
//! fusermount helper), clear a dead mount left by a crashed daemon, refuse to stack on a live one.

use proclens_cgroup::parse::mountinfo::parse_mountinfo;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Filesystem type as shown in mountinfo.
pub const FS_TYPE: &str = "fuse.proclens";

/// Why the mountpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// /dev/fuse could not be opened.
    #[error("cannot open /dev/fuse: {0} (is the fuse module loaded and /dev/fuse present?)")]
    NoDevice(io::Error),
    /// A live FUSE filesystem is already mounted there.
    #[error("{path} already has a live {fs_type} mount; stop that daemon first or pick another mountpoint")]
    Busy {
        /// The mountpoint.
        path: PathBuf,
        /// Its filesystem type.
        fs_type: String,
    },
    /// Any other failure, with what was being done.
    #[error("{what} {path}: {source}")]
    Io {
        /// The action.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Makes `path` absolute and resolves symlinks in its parent without touching `path` itself
/// (stat on a dead FUSE mount fails with ENOTCONN).
pub fn absolute_mountpoint(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(std::fs::canonicalize(parent)?.join(name)),
        _ => Ok(absolute),
    }
}

/// Filesystem types mounted exactly at `path`, innermost last.
fn mounts_at(path: &Path) -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts =
        parse_mountinfo(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(mounts
        .into_iter()
        .filter(|m| Path::new(&m.mount_point) == path)
        .map(|m| m.fs_type)
        .collect())
}

/// Prepares `path` for mounting: creates it if missing, lazily unmounts dead FUSE mounts
/// (ENOTCONN) stacked there, and fails if a live FUSE mount is on top.
pub fn prepare_mountpoint(path: &Path) -> Result<(), MountError> {
    let io_err = |what, source| MountError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    for _ in 0..16 {
        let stacked = mounts_at(path).map_err(|e| io_err("reading mountinfo for", e))?;
        let Some(top) = stacked.last() else { break };
        match std::fs::metadata(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                tracing::warn!(path = %path.display(), fs_type = %top, "clearing a dead FUSE mount");
                unmount(path).map_err(|e| io_err("unmounting dead mount at", e))?;
            }
            _ if top.starts_with("fuse") => {
                return Err(MountError::Busy {
                    path: path.to_path_buf(),
                    fs_type: top.clone(),
                })
            }
            _ => break,
        }
    }
    if !path.exists() {
        std::fs::create_dir_all(path).map_err(|e| io_err("creating", e))?;
    }
    Ok(())
}

/// Opens /dev/fuse and mounts a read-only, allow_other proclens filesystem at `path`. Returns the
/// connection fd.
pub fn mount(path: &Path) -> Result<OwnedFd, MountError> {
    mount_named(path, c"proclens")
}

/// [`mount`] with `source` as the mount's source name (shown in mountinfo).
pub fn mount_named(path: &Path, source: &std::ffi::CStr) -> Result<OwnedFd, MountError> {
    let io_err = |what, source| MountError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let dev = c"/dev/fuse";
    // SAFETY: a valid C string and flags; the result is checked.
    let fd = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(MountError::NoDevice(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let options = format!(
        "fd={},rootmode=40555,user_id=0,group_id=0,allow_other,default_permissions",
        fd.as_raw_fd()
    );
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err("mountpoint has a NUL byte:", io::Error::other(e)))?;
    let options = CString::new(options).map_err(|e| io_err("options", io::Error::other(e)))?;
    let fs_type = CString::new(FS_TYPE).map_err(|e| io_err("fs type", io::Error::other(e)))?;
    let flags =
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY | libc::MS_NOATIME;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io_err("mounting at", io::Error::last_os_error()));
    }
    Ok(fd)
}

/// Detaches the mount at `path` (MNT_DETACH: busy files keep working until closed, then the
/// connection ends and the serving loops see ENODEV).
pub fn unmount(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
