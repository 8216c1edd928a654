//! How the test readers (`proclens-probe`, `proclens-bench-reader`) put themselves inside a
//! container: join cgroups, enter a pid namespace, fork. The parent only waits; the child runs
//! the reader and dies with the parent.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Which pid namespace the reader runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidNs {
    /// A fresh one, with the reader as its pid 1.
    New,
    /// The caller's own.
    Host,
    /// The one process `pid` is in (a member of a pod sharing one pid namespace).
    Of(u32),
}

/// Which side of the fork returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Entered {
    /// The parent, after the child exited: the exit status to return (128 + signal if killed).
    Parent(u8),
    /// The child, inside the cgroups and the pid namespace: run the reader.
    Child,
}

/// Writes this process's pid to every `cgroup.procs` file in `join`, enters `pid_ns`, and forks.
/// The child gets PR_SET_PDEATHSIG=SIGKILL and checks that its parent did not die before that.
/// Must be called while the process is single-threaded.
pub fn enter(join: &[String], pid_ns: PidNs) -> Result<Entered, String> {
    let pid = std::process::id().to_string();
    for file in join {
        std::fs::write(file, &pid).map_err(|e| format!("join {file}: {e}"))?;
    }
    match pid_ns {
        PidNs::New => {
            // SAFETY: plain syscall without pointers; affects only children forked after it.
            if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                let err = io::Error::last_os_error();
                return Err(format!("unshare(CLONE_NEWPID): {err}"));
            }
        }
        PidNs::Host => {}
        PidNs::Of(target) => {
            let path = format!("/proc/{target}/ns/pid");
            let ns = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            // SAFETY: `ns` is an open namespace fd; affects only children forked after it.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
                let err = io::Error::last_os_error();
                return Err(format!("setns({path}): {err}"));
            }
        }
    }
    let parent = std::process::id();
    // SAFETY: the caller is single-threaded here, so the child may keep using std.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if child > 0 {
        return Ok(Entered::Parent(wait_for(child)));
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        return Err(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            io::Error::last_os_error()
        ));
    }
    // The parent may be outside our namespace (getppid() is 0 then): a parent that died before
    // the prctl left us orphaned, which /proc shows.
    if !std::path::Path::new(&format!("/proc/{parent}")).exists() {
        return Err("parent died during start-up".into());
    }
    Ok(Entered::Child)
}

/// Waits for `child`; its exit status, or 128 + signal if it was killed.
pub fn wait_for(child: libc::pid_t) -> u8 {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return 1;
        }
    }
    if libc::WIFEXITED(status) {
        u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(1)
    } else {
        128u8.saturating_add(u8::try_from(libc::WTERMSIG(status)).unwrap_or(0))
    }
}
