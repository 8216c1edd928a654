//! `proclens-floor`: the FUSE floor of the benchmark. A filesystem that does no work at all, served
//! with the same technique as `proclens-fused`'s own loop (`fused/src/fuse/`): `mount(2)` with
//! `fd=` on a `/dev/fuse` fd, one `FUSE_DEV_IOC_CLONE`d fd per serving thread, one reused request
//! buffer and reply buffer per thread, replies encoded by hand. Whatever proclens spends above
//! this filesystem's latency is its own cost; what both spend is the kernel's round trips.
//!
//! Usage: `proclens-floor MOUNTPOINT [--threads N] [--size BYTES] [--attr-timeout SECS]`
//!
//! The tree is the lxcfs layout's shape, `proc/{meminfo,stat,cpuinfo,uptime,loadavg}`, and every
//! file holds the same fixed text of `--size` bytes (default 1,400, about a container's
//! meminfo). The mount options are proclens's (`allow_other,default_permissions`, read-only) and
//! opens answer `FOPEN_DIRECT_IO | FOPEN_NOFLUSH`, as proclens does. Entries and attributes are
//! valid for `--attr-timeout` seconds (default 3600: the tree never changes), so an open+read+close
//! of a bind-mounted file costs the fewest requests FUSE allows with direct_io: OPEN, a data READ,
//! an EOF READ and RELEASE. With `--attr-timeout 0` (proclens's choice) `default_permissions`
//! makes the kernel refresh the attributes on every open: one GETATTR more. Handled opcodes:
//! INIT, LOOKUP, GETATTR, OPEN, READ, RELEASE, STATFS, FORGET, BATCH_FORGET, INTERRUPT, DESTROY;
//! FLUSH and everything else get ENOSYS.
//!
//! SIGTERM or SIGINT unmounts (MNT_DETACH) and exits 0. Start-up errors: one line on stderr,
//! exit 1.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Names of the files under `proc/`.
const FILES: [&str; 5] = ["meminfo", "stat", "cpuinfo", "uptime", "loadavg"];
/// Inode of the root directory (fixed by the kernel).
const ROOT: u64 = 1;
/// Inode of `proc/`.
const PROC: u64 = 2;
/// Inode of `proc/<FILES[0]>`; the others follow.
const FIRST_FILE: u64 = 3;

/// Largest READ or WRITE payload we accept (as proclens: 128 KiB).
const MAX_WRITE: u32 = 128 * 1024;
/// Request buffer: the largest request plus headers.
const BUFFER_LEN: usize = MAX_WRITE as usize + 4096;
/// `fuse_in_header` and `fuse_out_header` sizes.
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;
/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: u64 = 0x8004_e500;

/// Opcodes (include/uapi/linux/fuse.h).
mod op {
    pub(crate) const LOOKUP: u32 = 1;
    pub(crate) const FORGET: u32 = 2;
    pub(crate) const GETATTR: u32 = 3;
    pub(crate) const OPEN: u32 = 14;
    pub(crate) const READ: u32 = 15;
    pub(crate) const STATFS: u32 = 17;
    pub(crate) const RELEASE: u32 = 18;
    pub(crate) const INIT: u32 = 26;
    pub(crate) const INTERRUPT: u32 = 36;
    pub(crate) const DESTROY: u32 = 38;
    pub(crate) const BATCH_FORGET: u32 = 42;
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proclens-floor: {err}");
            ExitCode::from(1)
        }
    }
}

/// Parses the arguments, mounts, serves until SIGTERM/SIGINT, unmounts.
fn run() -> Result<(), String> {
    let mut mountpoint = None;
    let mut threads = 2usize;
    let mut size = 1400usize;
    let mut attr_timeout = 3600u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("{name} {v}: {e}"))
        };
        match arg.as_str() {
            "--threads" => threads = number("--threads")?.clamp(1, 64),
            "--size" => size = number("--size")?.min(MAX_WRITE as usize),
            "--attr-timeout" => attr_timeout = number("--attr-timeout")? as u64,
            _ if mountpoint.is_none() => mountpoint = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let mountpoint = mountpoint.ok_or(
        "usage: proclens-floor MOUNTPOINT [--threads N] [--size BYTES] [--attr-timeout SECS]",
    )?;
    let content = content(size);

    // Blocked here, so every serving thread inherits the mask and only sigwait sees them.
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    };
    // SAFETY: a valid set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!(
            "pthread_sigmask: {}",
            io::Error::from_raw_os_error(rc)
        ));
    }

    let master = mount(&mountpoint).map_err(|e| format!("mount {}: {e}", mountpoint.display()))?;
    let clones = (0..threads)
        .map(|_| clone_fd(&master))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("FUSE_DEV_IOC_CLONE: {e}"))?;
    let content: &'static [u8] = Box::leak(content.into_boxed_slice());
    for (i, fd) in clones.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("floor-{i}"))
            .spawn(move || {
                if let Err(err) = serve(&fd, content, attr_timeout) {
                    eprintln!("proclens-floor: serving thread {i}: {err}");
                }
            })
            .map_err(|e| format!("spawn a serving thread: {e}"))?;
    }

    let mut signal = 0;
    // SAFETY: a valid set and out-pointer.
    while unsafe { libc::sigwait(&signals, &mut signal) } != 0 {}
    let target = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(format!(
            "umount {}: {}",
            mountpoint.display(),
            io::Error::last_os_error()
        ));
    }
    // Exiting closes every fd of the connection, which ends it.
    drop(master);
    Ok(())
}

/// `size` bytes of meminfo-like lines, ending in a newline.
fn content(size: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(size + 32);
    let mut n = 0u64;
    while text.len() < size {
        text.extend_from_slice(format!("FloorLine{n:02}:    {:>12} kB\n", n * 7919).as_bytes());
        n += 1;
    }
    text.truncate(size);
    if let Some(last) = text.last_mut() {
        *last = b'\n';
    }
    text
}

/// Opens /dev/fuse and mounts a read-only, allow_other filesystem at `path` with the options
/// proclens uses. Returns the connection fd.
fn mount(path: &std::path::Path) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string and flags; the result is checked.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let options = CString::new(format!(
        "fd={},rootmode=40555,user_id=0,group_id=0,allow_other,default_permissions",
        fd.as_raw_fd()
    ))?;
    let target = CString::new(path.as_os_str().as_bytes())?;
    let flags =
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY | libc::MS_NOATIME;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"proclens-floor".as_ptr(),
            target.as_ptr(),
            c"fuse.proclens-floor".as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A clone of the connection (`FUSE_DEV_IOC_CLONE`): its own end of the request queue.
fn clone_fd(master: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string and flags; the result is checked.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut master_fd = u32::try_from(master.as_raw_fd()).unwrap_or(0);
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to clone) from a valid pointer.
    let rc = unsafe {
        libc::ioctl(
            owned.as_raw_fd(),
            FUSE_DEV_IOC_CLONE as _,
            &mut master_fd as *mut u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// Native-endian u32 at `at` of `b`, 0 if out of range.
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// Native-endian u64 at `at` of `b`, 0 if out of range.
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Appends native-endian integers.
fn put(out: &mut Vec<u8>, values64: &[u64], values32: &[u32]) {
    for v in values64 {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    for v in values32 {
        out.extend_from_slice(&v.to_ne_bytes());
    }
}

/// Appends a `fuse_attr` (88 bytes) for `ino`.
fn attr(out: &mut Vec<u8>, ino: u64, size: u64) {
    let (mode, nlink) = if ino < FIRST_FILE {
        (libc::S_IFDIR | 0o555, 2)
    } else {
        (libc::S_IFREG | 0o444, 1)
    };
    // ino size blocks atime mtime ctime; atimensec mtimensec ctimensec mode nlink uid gid rdev
    // blksize flags
    put(
        out,
        &[ino, size, size.div_ceil(512), 0, 0, 0],
        &[0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0],
    );
}

/// Serves requests on `fd` until the connection ends (ENODEV or DESTROY); entries and
/// attributes are valid for `timeout` seconds.
fn serve(fd: &OwnedFd, content: &[u8], timeout: u64) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER_LEN];
    let mut out: Vec<u8> = Vec::with_capacity(BUFFER_LEN);
    let size = content.len() as u64;
    loop {
        // SAFETY: reading into our own buffer of BUFFER_LEN bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                Some(libc::ENODEV) => return Ok(()),
                _ => return Err(err),
            }
        }
        let len = usize::try_from(n).unwrap_or(0);
        if len < IN_HEADER_LEN {
            continue;
        }
        let request = &buf[..len];
        let opcode = u32_at(request, 4);
        let unique = u64_at(request, 8);
        let nodeid = u64_at(request, 16);
        let body = &request[IN_HEADER_LEN..];
        out.clear();
        out.resize(OUT_HEADER_LEN, 0);
        let result: Result<(), i32> = match opcode {
            op::INIT => {
                // major minor max_readahead flags max_background congestion_threshold max_write
                // time_gran max_pages, then padding to 64 bytes: as proclens answers.
                let minor = u32_at(body, 4).min(31);
                let flags = u32_at(body, 12) & ((1 << 0) | (1 << 18) | (1 << 22));
                put(&mut out, &[], &[7, minor, u32_at(body, 8), flags]);
                out.extend_from_slice(&16u16.to_ne_bytes());
                out.extend_from_slice(&12u16.to_ne_bytes());
                put(&mut out, &[], &[MAX_WRITE, 1]);
                out.extend_from_slice(&((MAX_WRITE / 4096) as u16).to_ne_bytes());
                out.resize(OUT_HEADER_LEN + 64, 0);
                Ok(())
            }
            op::LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or(&[]);
                let child = match nodeid {
                    ROOT if name == b"proc" => Some(PROC),
                    PROC => FILES
                        .iter()
                        .position(|f| f.as_bytes() == name)
                        .map(|i| FIRST_FILE + i as u64),
                    _ => None,
                };
                child.ok_or(libc::ENOENT).map(|ino| {
                    // nodeid generation entry_valid attr_valid; entry_valid_nsec attr_valid_nsec
                    put(&mut out, &[ino, 0, timeout, timeout], &[0, 0]);
                    attr(&mut out, ino, if ino >= FIRST_FILE { size } else { 0 });
                })
            }
            op::GETATTR => {
                if nodeid >= FIRST_FILE + FILES.len() as u64 {
                    Err(libc::ENOENT)
                } else {
                    put(&mut out, &[timeout], &[0, 0]); // attr_valid attr_valid_nsec dummy
                    attr(
                        &mut out,
                        nodeid,
                        if nodeid >= FIRST_FILE { size } else { 0 },
                    );
                    Ok(())
                }
            }
            op::OPEN if nodeid >= FIRST_FILE => {
                // fh, open_flags = FOPEN_DIRECT_IO | FOPEN_NOFLUSH, padding
                put(&mut out, &[0], &[1 | (1 << 5), 0]);
                Ok(())
            }
            op::OPEN => Err(libc::EISDIR),
            op::READ => {
                let offset = usize::try_from(u64_at(body, 8)).unwrap_or(usize::MAX);
                let want = u32_at(body, 16).min(MAX_WRITE) as usize;
                let start = offset.min(content.len());
                let end = start.saturating_add(want).min(content.len());
                out.extend_from_slice(&content[start..end]);
                Ok(())
            }
            op::RELEASE => Ok(()),
            op::STATFS => {
                put(&mut out, &[0; 5], &[4096, 255, 4096, 0, 0, 0, 0, 0, 0, 0]);
                Ok(())
            }
            op::FORGET | op::BATCH_FORGET | op::INTERRUPT => continue,
            op::DESTROY => {
                write_reply(fd, &mut out, unique, 0);
                return Ok(());
            }
            _ => Err(libc::ENOSYS),
        };
        match result {
            Ok(()) => write_reply(fd, &mut out, unique, 0),
            Err(errno) => {
                out.truncate(OUT_HEADER_LEN);
                write_reply(fd, &mut out, unique, -errno);
            }
        }
    }
}

/// Fills in the `fuse_out_header` of `out` and writes it; a failed write (the request was
/// interrupted, or the connection is gone) is left for the next read to notice.
fn write_reply(fd: &OwnedFd, out: &mut [u8], unique: u64, error: i32) {
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[0..4].copy_from_slice(&len.to_ne_bytes());
    out[4..8].copy_from_slice(&error.to_ne_bytes());
    out[8..16].copy_from_slice(&unique.to_ne_bytes());
    // SAFETY: writing our own initialised buffer.
    let _ = unsafe { libc::write(fd.as_raw_fd(), out.as_ptr().cast(), out.len()) };
}
