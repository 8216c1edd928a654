//! The request loop: read one request from /dev/fuse, dispatch it to the [`Handler`], write the
//! reply. Each worker thread runs its own loop on its own cloned fd, with one request buffer and
//! one reply buffer reused for every request (no allocation per request on the hot path).

use super::abi::{self, opcode, Fields, InHeader, IN_HEADER_LEN, OUT_HEADER_LEN};
use super::{Errno, Handler, Request};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Largest write the kernel may send; reads are bounded by the reply buffer too.
pub const MAX_WRITE: u32 = 128 * 1024;
/// Request buffer: the largest request plus headers (at least FUSE_MIN_READ_BUFFER, 8 KiB).
const BUFFER_LEN: usize = MAX_WRITE as usize + 4096;

/// Why a loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The filesystem was unmounted (ENODEV) or the kernel sent DESTROY.
    Unmounted,
    /// The stop flag was raised (and the blocking read interrupted by a signal).
    Stopped,
    /// A spare loop waited its whole idle limit without a request.
    Idle,
}

/// What a serving loop shares with the worker that runs it.
pub struct LoopControl<'a> {
    /// Raised to stop the loop (a signal then interrupts its wait).
    pub stop: &'a AtomicBool,
    /// Counts requests begun and answered: incremented when one is read and again when it is
    /// answered, so it is odd while a request is in hand. The worker's watchdog compares it
    /// between checks to find a loop held by one slow request.
    pub progress: &'a AtomicU64,
    /// For a spare loop: end with [`Ended::Idle`] after waiting this long for a request. The
    /// loop then waits with poll(2) on a non-blocking fd; without it, with a blocking read.
    pub idle_limit: Option<Duration>,
}

/// Clones a /dev/fuse connection fd (FUSE_DEV_IOC_CLONE), so a thread gets its own queue end.
pub fn clone_fd(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = c"/dev/fuse";
    // SAFETY: a valid NUL-terminated path and flags; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut master_fd: u32 = u32::try_from(master.as_raw_fd()).unwrap_or(0);
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to clone) from the pointer, which is valid.
    let rc = unsafe {
        libc::ioctl(
            owned.as_raw_fd(),
            abi::FUSE_DEV_IOC_CLONE as _,
            &mut master_fd as *mut u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// Asks the kernel to requeue every request read but not yet answered on any fd of the
/// connection (FUSE_NOTIFY_RESEND, Linux 6.9+): after a worker died, its requests are served by
/// the next one instead of hanging. Fails with EINVAL on older kernels.
pub fn notify_resend(connection: BorrowedFd<'_>) -> io::Result<()> {
    let mut message = [0u8; abi::OUT_HEADER_LEN];
    abi::write_out_header(&mut message, 0, abi::NOTIFY_RESEND);
    write_reply(connection, &message)
}

/// Sets or clears O_NONBLOCK on `fd` (each clone is its own open file, so this is per loop).
fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we borrow; only the status flags change.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = if nonblocking {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if wanted != flags && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, wanted) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What waiting for a request ended with.
enum Wait {
    /// A request may be there: read.
    Ready,
    /// Nothing came within the idle limit.
    Idle,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Waits up to `limit` for a request on a non-blocking `fd`.
fn wait_for_request(fd: BorrowedFd<'_>, limit: Duration) -> io::Result<Wait> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd we own.
    match unsafe { libc::poll(&mut poll, 1, timeout) } {
        0 => Ok(Wait::Idle),
        n if n > 0 => Ok(Wait::Ready),
        _ => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                Ok(Wait::Interrupted)
            } else {
                Err(err)
            }
        }
    }
}

/// Runs the loop on `fd` until the filesystem is unmounted, until `control.stop` is raised (seen
/// between requests, or when a signal interrupts the wait; a request already read is always
/// answered first), or, for a spare loop, until it has been idle for its limit.
pub fn serve<H: Handler>(
    fd: BorrowedFd<'_>,
    handler: &H,
    control: &LoopControl<'_>,
) -> io::Result<Ended> {
    set_nonblocking(fd, control.idle_limit.is_some())?;
    let mut buf = vec![0u8; BUFFER_LEN];
    let mut out: Vec<u8> = Vec::with_capacity(BUFFER_LEN);
    let mut progress = control.progress.load(Ordering::Relaxed);
    loop {
        if progress % 2 == 1 {
            progress += 1;
            control.progress.store(progress, Ordering::Relaxed);
        }
        // Between requests nothing is held: stop here once asked. Waiting for an interrupted
        // read alone never stops a loop whose queue is never empty (a busy or slow machine: the
        // signal lands while a request is handled, and the next read returns at once).
        if control.stop.load(Ordering::Acquire) {
            return Ok(Ended::Stopped);
        }
        if let Some(limit) = control.idle_limit {
            match wait_for_request(fd, limit)? {
                Wait::Ready => {}
                Wait::Idle => return Ok(Ended::Idle),
                Wait::Interrupted if control.stop.load(Ordering::Acquire) => {
                    return Ok(Ended::Stopped)
                }
                Wait::Interrupted => continue,
            }
        }
        // SAFETY: reading into our own buffer of BUFFER_LEN bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // Only an interrupted read may stop the loop: a request once read is answered.
                Some(libc::EINTR) if control.stop.load(Ordering::Acquire) => {
                    return Ok(Ended::Stopped)
                }
                // Interrupted by a signal, the request was aborted before we read it, or (spare
                // loops) another loop took it first.
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                Some(libc::ENODEV) => return Ok(Ended::Unmounted),
                _ => return Err(err),
            }
        }
        progress += 1;
        control.progress.store(progress, Ordering::Relaxed);
        let len = usize::try_from(n).unwrap_or(0);
        let Some(header) = InHeader::parse(&buf[..len]) else {
            tracing::warn!(len, "short FUSE request ignored");
            continue;
        };
        let request_len = usize::try_from(header.len).unwrap_or(len);
        let body = &buf[IN_HEADER_LEN..request_len];
        out.clear();
        out.resize(OUT_HEADER_LEN, 0);
        match dispatch(handler, &header, body, &mut out) {
            Dispatch::Reply(Ok(())) => abi::write_out_header(&mut out, header.unique, 0),
            Dispatch::Reply(Err(errno)) => {
                out.truncate(OUT_HEADER_LEN);
                abi::write_out_header(&mut out, header.unique, -errno);
            }
            Dispatch::NoReply => continue,
            Dispatch::Destroy => {
                abi::write_out_header(&mut out, header.unique, 0);
                let _ = write_reply(fd, &out);
                return Ok(Ended::Unmounted);
            }
        }
        if let Err(err) = write_reply(fd, &out) {
            match err.raw_os_error() {
                // The request was interrupted and is gone: nothing to do.
                Some(libc::ENOENT) => {}
                Some(libc::ENODEV) => return Ok(Ended::Unmounted),
                _ => tracing::warn!(%err, opcode = header.opcode, "writing FUSE reply failed"),
            }
        }
    }
}

fn write_reply(fd: BorrowedFd<'_>, out: &[u8]) -> io::Result<()> {
    // SAFETY: writing our own initialised buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), out.as_ptr().cast(), out.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum Dispatch {
    Reply(Result<(), Errno>),
    NoReply,
    Destroy,
}

fn need(body: &[u8], len: usize) -> Result<Fields<'_>, Errno> {
    if body.len() < len {
        return Err(libc::EINVAL);
    }
    Ok(Fields(body))
}

/// A name argument: bytes up to the first NUL.
fn name_arg(body: &[u8]) -> &[u8] {
    body.split(|&b| b == 0).next().unwrap_or(&[])
}

fn dispatch<H: Handler>(handler: &H, h: &InHeader, body: &[u8], out: &mut Vec<u8>) -> Dispatch {
    let req = Request {
        unique: h.unique,
        pid: h.pid,
        uid: h.uid,
    };
    let result = match h.opcode {
        opcode::INIT => need(body, 16).map(|f| {
            let (minor, max_readahead, flags) = (f.u32(4), f.u32(8), f.u32(12));
            if f.u32(0) != abi::KERNEL_VERSION {
                tracing::error!(
                    major = f.u32(0),
                    "kernel speaks an unsupported FUSE major version"
                );
            }
            tracing::debug!(minor, flags, "FUSE INIT");
            abi::init_out(
                out,
                minor,
                flags,
                max_readahead,
                MAX_WRITE,
                handler.init_flags(),
            );
        }),
        opcode::DESTROY => return Dispatch::Destroy,
        opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT => return Dispatch::NoReply,
        opcode::LOOKUP => handler
            .lookup(&req, h.nodeid, name_arg(body))
            .map(|attr| abi::entry_out(out, &attr)),
        opcode::GETATTR => handler
            .getattr(&req, h.nodeid)
            .map(|attr| abi::attr_out(out, &attr)),
        opcode::READLINK => handler
            .readlink(&req, h.nodeid)
            .map(|target| out.extend(target)),
        opcode::OPEN => handler
            .open(&req, h.nodeid)
            .map(|(fh, flags)| abi::open_out(out, fh, flags)),
        opcode::READ => need(body, 24).and_then(|f| {
            let size = f.u32(16).min(MAX_WRITE);
            handler.read(&req, h.nodeid, f.u64(0), f.u64(8), size, out)
        }),
        opcode::RELEASE => need(body, 8).map(|f| handler.release(f.u64(0))),
        opcode::OPENDIR => handler
            .getattr(&req, h.nodeid)
            .and_then(|a| {
                if a.mode & libc::S_IFMT == libc::S_IFDIR {
                    Ok(())
                } else {
                    Err(libc::ENOTDIR)
                }
            })
            .map(|()| abi::open_out(out, 0, 0)),
        opcode::READDIR => need(body, 24).and_then(|f| {
            let size = f.u32(16).min(MAX_WRITE);
            handler.readdir(&req, h.nodeid, f.u64(8), size, out)
        }),
        opcode::RELEASEDIR => Ok(()),
        opcode::STATFS => {
            abi::statfs_out(out);
            Ok(())
        }
        // No FLUSH handling: with ENOSYS the kernel stops sending it, so close costs no round trip.
        opcode::FLUSH => Err(libc::ENOSYS),
        _ => Err(libc::ENOSYS),
    };
    Dispatch::Reply(result)
}
