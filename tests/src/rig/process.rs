//! Child processes with deadlines: nothing a test runs may hang the suite.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: plain syscall without pointers.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("kill({pid}, {signal})"));
    }
    Ok(())
}

/// Polls `child` until it exits or `timeout` passes; `None` means it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("wait for child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Drains a pipe into a shared buffer on a thread, so the child never blocks on a full pipe and
/// the test can look at what arrived so far.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Starts draining `pipe` into a new buffer.
    pub fn drain(mut pipe: impl Read + Send + 'static) -> (Self, JoinHandle<()>) {
        let captured = Self::default();
        let sink = captured.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        (captured, thread)
    }

    /// Everything received so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Everything received so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured. After `timeout` the
/// child gets SIGTERM, then SIGKILL 5 s later, and the call fails with what it printed.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    let (stdout, out_thread) = Captured::drain(child.stdout.take().context("stdout")?);
    let (stderr, err_thread) = Captured::drain(child.stderr.take().context("stderr")?);
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = signal(child.id(), libc::SIGTERM);
            if wait_timeout(&mut child, Duration::from_secs(5))?.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            bail!(
                "{what} still running after {timeout:?}; stopped it.\nstdout:\n{}\nstderr:\n{}",
                stdout.text(),
                stderr.text()
            );
        }
    };
    // The pipes close when the child and anything it forked exit; don't wait for strays.
    for thread in [out_thread, err_thread] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(Output {
        status,
        stdout: stdout.bytes(),
        stderr: stderr.bytes(),
    })
}

/// Sends SIGTERM to `child` and waits up to `timeout`; a child that ignores it is killed, and
/// that is said on stderr naming `what`.
pub fn terminate(child: &mut Child, what: &str, timeout: Duration) {
    let _ = signal(child.id(), libc::SIGTERM);
    if !matches!(wait_timeout(child, timeout), Ok(Some(_))) {
        eprintln!("!!! {what} ignored SIGTERM for {timeout:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}
