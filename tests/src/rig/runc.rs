//! [`RuncContainer`]: a real OCI container run by `runc`, with the host's `/usr` and `/etc`
//! read-only as its root filesystem, real cgroup limits and optional bind mounts over `/proc`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::process;

/// How long one container run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Host directories the rootfs shares read-only. Those that are symlinks on the host (`/bin`
/// → `usr/bin` on merged-/usr systems) become the same symlinks in the rootfs.
const HOST_DIRS: [&str; 6] = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64"];

/// An OCI bundle plus a private runc state root in a temp dir. [`Self::run`] runs the container
/// to completion with the configured limits, [`Self::start`] and [`Self::exec`] keep it running
/// and run more in it; `Drop` force-deletes it (and so its cgroups) if it still exists.
pub struct RuncContainer {
    id: String,
    dir: TempDir,
    memory_bytes: Option<u64>,
    cpus: Option<String>,
    cfs: Option<(u64, u64)>,
    binds: Vec<(PathBuf, String)>,
}

impl RuncContainer {
    /// A container named `proclens-test-<pid>-<n>` (also its cgroup name) with no limits yet.
    /// Fails loudly if `runc` is not installed.
    pub fn new() -> Result<Self> {
        let out = process::run(
            Command::new("runc").arg("--version"),
            Duration::from_secs(10),
        )
        .context("runc is needed for the container tests (apt-get install runc)")?;
        if !out.status.success() {
            bail!(
                "runc --version failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-runc-")
            .tempdir()?;
        Ok(Self {
            id: super::unique_name(),
            dir,
            memory_bytes: None,
            cpus: None,
            cfs: None,
            binds: Vec::new(),
        })
    }

    /// Memory limit in bytes (`linux.resources.memory.limit`).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Allowed CPUs as a cpulist (`linux.resources.cpu.cpus`).
    pub fn cpus(mut self, cpulist: &str) -> Self {
        self.cpus = Some(cpulist.to_string());
        self
    }

    /// CFS quota and period in µs (`linux.resources.cpu.quota`/`period`).
    pub fn cfs_quota(mut self, quota_us: u64, period_us: u64) -> Self {
        self.cfs = Some((quota_us, period_us));
        self
    }

    /// Bind-mounts host file or directory `source` read-only at `destination` in the container,
    /// after `/proc` and `/sys` are mounted (so it can cover files there).
    pub fn bind(mut self, source: &Path, destination: &str) -> Self {
        self.binds
            .push((source.to_path_buf(), destination.to_string()));
        self
    }

    /// The container id, which is also its cgroup name under each hierarchy's root.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `/bin/sh -c script` in the container and returns its stdout. Fails with stdout and
    /// stderr if runc or the script exits non-zero.
    pub fn run(&self, script: &str) -> Result<String> {
        let bundle = self.prepare(script)?;
        self.runc(&[
            "run".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            self.id.as_ref(),
        ])
    }

    /// Starts `/bin/sh -c script` as the container's init in the background (`runc run -d`),
    /// with its stdio on `/dev/null`; use [`Self::exec`] to run more in it.
    pub fn start(&self, script: &str) -> Result<()> {
        let script = format!("exec </dev/null >/dev/null 2>&1; {script}");
        let bundle = self.prepare(&script)?;
        let args = [
            "run".as_ref(),
            "-d".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
        ];
        self.runc(&[&args[..], &[self.id.as_ref()]].concat())
            .map(drop)
    }

    /// Runs `/bin/sh -c script` in the started container (`runc exec`, the way `docker exec`
    /// does) and returns its stdout.
    pub fn exec(&self, script: &str) -> Result<String> {
        self.runc(&[
            "exec".as_ref(),
            self.id.as_ref(),
            "/bin/sh".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
        ])
    }

    /// Writes the bundle for `script` and returns its directory.
    fn prepare(&self, script: &str) -> Result<PathBuf> {
        let bundle = self.dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        if !rootfs.exists() {
            make_rootfs(&rootfs)?;
        }
        fs::write(bundle.join("config.json"), self.config(script)?)?;
        Ok(bundle)
    }

    /// Runs `runc --root <state> args…` and returns its stdout; fails with its output if it
    /// exits non-zero.
    fn runc(&self, args: &[&OsStr]) -> Result<String> {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(self.dir.path().join("state"))
            .args(args);
        let out = process::run(&mut cmd, RUN_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{cmd:?} exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// The OCI `config.json` for one run of `script`.
    fn config(&self, script: &str) -> Result<String> {
        let mut mounts = vec![
            mount("/proc", "proc", "proc", &[]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777"],
            ),
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
            mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"]),
        ];
        for dir in HOST_DIRS {
            let host = Path::new(dir);
            if host.exists() && !host.is_symlink() {
                mounts.push(mount(dir, "bind", dir, &["rbind", "ro"]));
            }
        }
        for (source, destination) in &self.binds {
            let source = source.to_str().context("bind source is not UTF-8")?;
            mounts.push(mount(destination, "bind", source, &["bind", "ro"]));
        }
        let mut resources = Vec::new();
        if let Some(bytes) = self.memory_bytes {
            resources.push(format!("\"memory\": {{\"limit\": {bytes}}}"));
        }
        let mut cpu = Vec::new();
        if let Some(cpus) = &self.cpus {
            cpu.push(format!("\"cpus\": {}", json(cpus)));
        }
        if let Some((quota, period)) = self.cfs {
            cpu.push(format!("\"quota\": {quota}, \"period\": {period}"));
        }
        if !cpu.is_empty() {
            resources.push(format!("\"cpu\": {{{}}}", cpu.join(", ")));
        }
        let caps = json_list(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let mut out = String::new();
        write!(
            out,
            r#"{{
  "ociVersion": "1.0.2",
  "process": {{
    "terminal": false,
    "user": {{"uid": 0, "gid": 0}},
    "args": {args},
    "env": {env},
    "cwd": "/",
    "capabilities": {{"bounding": {caps}, "effective": {caps}, "permitted": {caps}}},
    "noNewPrivileges": true
  }},
  "root": {{"path": "rootfs", "readonly": false}},
  "hostname": "proclens-test",
  "mounts": [
    {mounts}
  ],
  "linux": {{
    "cgroupsPath": {cgroups_path},
    "resources": {{{resources}}},
    "namespaces": [{{"type": "pid"}}, {{"type": "network"}}, {{"type": "ipc"}},
                   {{"type": "uts"}}, {{"type": "mount"}}]
  }}
}}
"#,
            args = json_list(&["/bin/sh", "-c", script]),
            env = json_list(&[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
                "HOME=/root",
                "LC_ALL=C",
            ]),
            mounts = mounts.join(",\n    "),
            cgroups_path = json(&format!("/{}", self.id)),
            resources = resources.join(", "),
        )?;
        Ok(out)
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let state = self.dir.path().join("state");
        if state.join(&self.id).exists() {
            let _ = process::run(
                Command::new("runc")
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force", &self.id]),
                Duration::from_secs(30),
            );
        }
    }
}

/// Creates the rootfs skeleton: host symlinks among [`HOST_DIRS`] are copied as symlinks; the
/// rest are mount points that runc creates.
fn make_rootfs(rootfs: &Path) -> Result<()> {
    fs::create_dir_all(rootfs)?;
    for dir in HOST_DIRS {
        let host = Path::new(dir);
        if host.is_symlink() {
            let target = fs::read_link(host)?;
            let name = dir.trim_start_matches('/');
            std::os::unix::fs::symlink(&target, rootfs.join(name))
                .with_context(|| format!("symlink {name} -> {}", target.display()))?;
        }
    }
    Ok(())
}

/// One OCI mount entry.
fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> String {
    format!(
        "{{\"destination\": {}, \"type\": {}, \"source\": {}, \"options\": {}}}",
        json(destination),
        json(kind),
        json(source),
        json_list(options)
    )
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON array of string literals.
fn json_list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| json(s)).collect::<Vec<_>>().join(", ")
    )
}
