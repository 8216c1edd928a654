//! [`V2Vm`]: runs test programs inside a cgroup v2 VM, for hosts that are cgroup v1.
//!
//! One run: `tests/vm/kernel.sh` fetches the Debian 12 cloud kernel into a cache
//! ([`CACHE_ENV`], default `/var/cache/proclens-vm`) once and stages its modules; the rig builds
//! an initramfs with busybox, those modules, every program and binary it was given (at the same
//! absolute paths as on the host, with every library `ldd` lists) and `tests/vm/init.sh` as
//! `/init`; boots it in `qemu-system-x86_64` under TCG with a zram swap and a virtio-blk scratch
//! disk; and collects each program's output and exit status from the serial console. qemu is
//! killed when the stage's deadline passes, and when the [`V2Vm::run`] call unwinds.
//!
//! Inside, every program runs as root in the root cgroup of a cgroup2 hierarchy at
//! `/sys/fs/cgroup` with `cpu memory cpuset io pids` enabled below the root, with
//! `PROCLENS_IN_VM=1`, `PROCLENS_FUSED_BIN`, `PROCLENS_PROBE_BIN` and `PROCLENS_LXCFS_BIN` set,
//! 256 MiB of zram swap, `/tmp` on the initramfs (so a checkout under /tmp stays visible) and
//! `TMPDIR=/proclens-vm-scratch` on an ext2 filesystem on the virtio-blk scratch disk
//! (`PROCLENS_VM_DISK`, `/dev/vda`), so that temp files do real block I/O.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::process;

/// Env var naming the kernel cache directory.
pub const CACHE_ENV: &str = "PROCLENS_VM_CACHE";

/// Where the kernel is cached unless [`CACHE_ENV`] says otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/proclens-vm";

/// Set to `1` inside the VM, for every program.
pub const IN_VM_ENV: &str = "PROCLENS_IN_VM";

/// The console record prefix `tests/vm/init.sh` writes.
const PREFIX: &str = "PROCLENS-VM|";

/// The /init script.
const INIT: &str = include_str!("../../vm/init.sh");

/// The script that fetches the kernel and stages its modules.
const KERNEL_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vm/kernel.sh");

/// Modules the VM loads (their dependencies come along): FUSE, the virtio-blk scratch disk,
/// zram swap with its default compressor, veth pairs (the exporter's network test).
const MODULES: [&str; 6] = [
    "fuse",
    "virtio_pci",
    "virtio_blk",
    "zram",
    "lzo-rle",
    "veth",
];

/// lxcfs and what it needs beyond its `ldd` libraries: `liblxcfs.so` is `dlopen`ed, and
/// libfuse falls back to `fusermount3` when a mount(2) fails.
const LXCFS_FILES: [&str; 3] = [
    "/usr/bin/lxcfs",
    "/usr/lib/x86_64-linux-gnu/lxcfs/liblxcfs.so",
    "/usr/bin/fusermount3",
];

/// Where lxcfs is inside the VM, for `PROCLENS_LXCFS_BIN`.
const LXCFS_BIN: &str = "/usr/bin/lxcfs";

/// The scratch disk's device inside the VM.
const VM_DISK: &str = "/dev/vda";

/// Where the scratch disk's ext2 filesystem is mounted inside the VM; `TMPDIR` points there.
const VM_SCRATCH: &str = "/proclens-vm-scratch";

/// Paths the VM mounts over (or fills itself): programs and files cannot be copied there.
const VM_MOUNTS: [&str; 4] = ["/proc", "/sys", "/dev", VM_SCRATCH];

/// Size of the sparse scratch disk image.
const DISK_BYTES: u64 = 256 << 20;

/// Size of the zram swap device.
const ZRAM_SIZE: &str = "256M";

/// The whole stage's time limit: kernel fetch, initramfs build, boot and every program.
const STAGE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A program's time limit inside the VM unless [`VmProgram::timeout`] says otherwise.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long qemu may take to exit after the `end` record.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// One program to run inside the VM.
#[derive(Clone, Debug)]
pub struct VmProgram {
    name: String,
    path: PathBuf,
    args: Vec<String>,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    timeout: Duration,
    files: Vec<PathBuf>,
}

impl VmProgram {
    /// Runs the host executable `path` (with its `ldd` libraries) in the VM, under `name`
    /// (letters, digits, `_`, `-` and `.`) in the console records and reports.
    pub fn new(name: &str, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            path: path.into(),
            args: Vec::new(),
            dir: None,
            env: Vec::new(),
            timeout: PROGRAM_TIMEOUT,
            files: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Runs the program in `dir` (default `/`); the directory is created in the VM.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Sets an environment variable for this program only.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The program is killed (SIGKILL, exit status 137) after `timeout` (default 10 min).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Copies host file or directory `path` (absolute) into the VM at the same path, for data
    /// the program reads (fixtures, say).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// The name in console records and reports.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A cgroup v2 VM that runs a list of [`VmProgram`]s in one boot; see the module docs.
#[derive(Clone, Debug)]
pub struct V2Vm {
    programs: Vec<VmProgram>,
    binaries: Vec<PathBuf>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl V2Vm {
    /// A VM with `proclens-fused`, `proclens-probe` and lxcfs inside, and no programs yet.
    pub fn new() -> Result<Self> {
        let fused = super::FusedDaemon::binary()?;
        let probe = super::Probe::binary()?;
        let mut vm = Self {
            programs: Vec::new(),
            binaries: vec![fused.clone(), probe.clone()],
            env: Vec::new(),
            timeout: STAGE_TIMEOUT,
        };
        vm.binaries.extend(LXCFS_FILES.iter().map(PathBuf::from));
        for (key, value) in [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("HOME", "/root"),
            ("TMPDIR", VM_SCRATCH),
            (IN_VM_ENV, "1"),
            ("PROCLENS_LXCFS_BIN", LXCFS_BIN),
            ("PROCLENS_VM_DISK", VM_DISK),
        ] {
            vm.env.push((key.to_string(), value.to_string()));
        }
        for (key, path) in [("PROCLENS_FUSED_BIN", fused), ("PROCLENS_PROBE_BIN", probe)] {
            let path = path
                .to_str()
                .context("binary path is not UTF-8")?
                .to_string();
            vm.env.push((key.to_string(), path));
        }
        Ok(vm)
    }

    /// Adds a program; programs run one after another, in the order added.
    pub fn program(mut self, program: VmProgram) -> Self {
        self.programs.push(program);
        self
    }

    /// Sets an environment variable for every program.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a host executable or shared library (with its `ldd` libraries) at the same path.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binaries.push(path.into());
        self
    }

    /// The whole run's time limit (default 15 min), kernel download included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fetches the kernel, builds the initramfs, boots the VM and runs every program. Fails if
    /// the VM could not be built or booted; programs that fail or a VM that does not finish
    /// show in the returned [`VmRun`] (see [`VmRun::check`]).
    pub fn run(&self) -> Result<VmRun> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        ensure!(!self.programs.is_empty(), "no programs to run in the VM");
        for (i, p) in self.programs.iter().enumerate() {
            let valid = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
            ensure!(
                !p.name.is_empty() && p.name.chars().all(valid),
                "program name {:?}: use letters, digits, _ - .",
                p.name
            );
            ensure!(
                !self.programs[..i].iter().any(|q| q.name == p.name),
                "two programs named {:?}",
                p.name
            );
        }
        let copied = self
            .programs
            .iter()
            .flat_map(|p| p.files.iter().chain([&p.path]));
        for path in self.binaries.iter().chain(copied) {
            let hidden = VM_MOUNTS.iter().find(|m| path.starts_with(m));
            if let Some(mount) = hidden {
                bail!(
                    "{} would be hidden by the VM's {mount} mount",
                    path.display()
                );
            }
        }
        let work = tempfile::Builder::new().prefix("proclens-vm-").tempdir()?;
        let staging = Staging::new(work.path().join("root"))?;

        let kernel = Kernel::prepare(&staging.root.join("etc/proclens-vm/modules"), deadline)?;
        note(&format!(
            "vm: kernel {} ready after {:.1} s",
            kernel.release,
            started.elapsed().as_secs_f64()
        ));
        let initrd = work.path().join("initrd.gz");
        self.build_initramfs(staging, &kernel, &initrd, deadline)?;
        let disk = work.path().join("disk.img");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(DISK_BYTES))
            .with_context(|| format!("create {}", disk.display()))?;
        note(&format!(
            "vm: initramfs built after {:.1} s; booting",
            started.elapsed().as_secs_f64()
        ));
        let boot_started = Instant::now();
        let console = boot(&kernel.vmlinuz, &initrd, &disk, deadline)?;
        let log = console_log_path();
        let saved = std::fs::create_dir_all(log.parent().unwrap_or(Path::new("/")))
            .and_then(|()| std::fs::write(&log, console.lines.join("\n") + "\n"));
        if let Err(err) = saved {
            note(&format!(
                "vm: cannot save the console to {}: {err}",
                log.display()
            ));
        }
        Ok(VmRun::parse(
            &self.programs,
            &console,
            log,
            boot_started.elapsed(),
            self.timeout,
        ))
    }

    /// Stages everything the VM needs under `staging` and packs it into `initrd`.
    fn build_initramfs(
        &self,
        mut staging: Staging,
        kernel: &Kernel,
        initrd: &Path,
        deadline: Instant,
    ) -> Result<()> {
        let busybox = which("busybox").context("busybox not found (install busybox-static)")?;
        ensure!(
            ldd(&busybox)?.is_empty(),
            "{} is dynamically linked: install busybox-static",
            busybox.display()
        );
        staging.install_as(Path::new("/bin/busybox"), &busybox)?;
        for dir in [
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/root",
            "/etc/proclens-vm/programs",
        ] {
            staging.make_dir(Path::new(dir))?;
        }
        for bin in self
            .binaries
            .iter()
            .chain(self.programs.iter().map(|p| &p.path))
        {
            staging.install_elf(bin)?;
        }
        for file in self.programs.iter().flat_map(|p| &p.files) {
            staging.install(file, false)?;
        }

        staging.write("/init", INIT, 0o755)?;
        let config = format!(
            "MODULES={}\nZRAM_SIZE={}\nDISK={}\nSCRATCH={}\n",
            sh_quote(&kernel.modules.join(" ")),
            sh_quote(ZRAM_SIZE),
            sh_quote(VM_DISK),
            sh_quote(VM_SCRATCH)
        );
        staging.write("/etc/proclens-vm/config", &config, 0o644)?;
        staging.write("/etc/proclens-vm/env", &exports(&self.env), 0o644)?;
        for (i, p) in self.programs.iter().enumerate() {
            let dir = p.dir.clone().unwrap_or_else(|| PathBuf::from("/"));
            staging.make_dir(&dir)?;
            let mut script = format!(
                "# Program {:?}, written by tests/src/rig/vm.rs.\ncd {}\n{}",
                p.name,
                sh_quote(&dir.display().to_string()),
                exports(&p.env)
            );
            let mut command = vec![
                "exec".to_string(),
                "timeout".to_string(),
                "-s".to_string(),
                "KILL".to_string(),
                p.timeout.as_secs().max(1).to_string(),
                sh_quote(&p.path.display().to_string()),
            ];
            command.extend(p.args.iter().map(|a| sh_quote(a)));
            writeln!(script, "{}", command.join(" "))?;
            let path = format!("/etc/proclens-vm/programs/{:02}-{}", i + 1, p.name);
            staging.write(&path, &script, 0o755)?;
        }

        let remaining = deadline.saturating_duration_since(Instant::now());
        let out = process::run(
            Command::new("bash")
                .arg("-c")
                .arg(
                    "set -euo pipefail; cd \"$1\"; \
                     find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > \"$2\"",
                )
                .arg("pack-initramfs")
                .arg(&staging.root)
                .arg(initrd),
            remaining,
        )?;
        ensure!(
            out.status.success(),
            "packing the initramfs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// The kernel image and the modules staged for it.
struct Kernel {
    vmlinuz: PathBuf,
    release: String,
    /// Module names in load order; the files are `<moddir>/<name>.ko`.
    modules: Vec<String>,
}

impl Kernel {
    /// Runs `tests/vm/kernel.sh` to fetch the kernel (cached) and stage [`MODULES`] in `moddir`.
    fn prepare(moddir: &Path, deadline: Instant) -> Result<Self> {
        let mut cmd = Command::new("bash");
        cmd.arg(KERNEL_SH).arg(moddir).args(MODULES);
        if std::env::var_os(CACHE_ENV).is_none() {
            cmd.env(CACHE_ENV, DEFAULT_CACHE);
        }
        let out = process::run(&mut cmd, deadline.saturating_duration_since(Instant::now()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "{KERNEL_SH} failed ({}):\n{stderr}",
            out.status
        );
        for line in stderr.lines() {
            note(&format!("vm: {line}"));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .with_context(|| format!("{KERNEL_SH} printed no {key}= line:\n{stdout}"))
        };
        Ok(Self {
            vmlinuz: PathBuf::from(value("vmlinuz")?),
            release: value("release")?.to_string(),
            modules: value("modules")?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        })
    }
}

/// The initramfs tree being built: host paths are copied to the same paths below `root`, with
/// the host's symlinks along the way (`/lib -> usr/lib`, …) recreated as symlinks.
struct Staging {
    root: PathBuf,
}

impl Staging {
    /// An empty tree at `root`.
    fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir(&root).with_context(|| format!("mkdir {}", root.display()))?;
        Ok(Self { root })
    }

    /// Where absolute path `path` lands in the tree.
    fn dest(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Creates directory `dir` in the tree. A component that is a symlink on the host becomes
    /// the same symlink, and the directory is made where it points. Returns `dir` with those
    /// symlinks resolved.
    fn make_dir(&mut self, dir: &Path) -> Result<PathBuf> {
        let mut dir = normalize(dir);
        // Each pass resolves one symlink; 40 is the kernel's own limit.
        for _ in 0..40 {
            match self.make_dir_until_symlink(&dir)? {
                Ok(resolved) => return Ok(resolved),
                Err(next) => dir = next,
            }
        }
        bail!("too many symlinks below {}", dir.display())
    }

    /// Creates the components of normalized `dir` in the tree up to the first one that is a
    /// symlink on the host, which it recreates: `Err(dir with that symlink replaced by its
    /// target)`. `Ok(dir)` if there was none.
    fn make_dir_until_symlink(&mut self, dir: &Path) -> Result<Result<PathBuf, PathBuf>> {
        let names: Vec<&std::ffi::OsStr> = dir.iter().skip(1).collect();
        let mut host = PathBuf::from("/");
        for (i, name) in names.iter().enumerate() {
            host.push(name);
            let dest = self.dest(&host);
            let is_link = std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_symlink());
            if is_link {
                let target = std::fs::read_link(&host)?;
                if std::fs::symlink_metadata(&dest).is_err() {
                    symlink(&target, &dest)
                        .with_context(|| format!("symlink {}", dest.display()))?;
                }
                let rest: PathBuf = names[i + 1..].iter().collect();
                let parent = host.parent().unwrap_or(Path::new("/"));
                return Ok(Err(normalize(&parent.join(target).join(rest))));
            }
            if !dest.is_dir() {
                std::fs::create_dir(&dest).with_context(|| format!("mkdir {}", dest.display()))?;
            }
        }
        Ok(Ok(host))
    }

    /// Copies host path `path` (file, directory tree or symlink chain) to the same path in the
    /// tree; with `strip`, regular files are copied without debug info (`strip --strip-debug`).
    fn install(&mut self, path: &Path, strip: bool) -> Result<()> {
        ensure!(path.is_absolute(), "{} is not absolute", path.display());
        let name = path.file_name().context("path without a file name")?;
        let host = self
            .make_dir(path.parent().unwrap_or(Path::new("/")))?
            .join(name);
        let dest = self.dest(&host);
        let meta = std::fs::symlink_metadata(&host)
            .with_context(|| format!("{} (needed in the VM)", host.display()))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host)?;
            if std::fs::symlink_metadata(&dest).is_err() {
                symlink(&target, &dest).with_context(|| format!("symlink {}", dest.display()))?;
            }
            let parent = host.parent().unwrap_or(Path::new("/"));
            return self.install(&normalize(&parent.join(target)), strip);
        }
        if meta.is_dir() {
            self.make_dir(&host)?;
            for entry in std::fs::read_dir(&host)? {
                self.install(&entry?.path(), strip)?;
            }
            return Ok(());
        }
        if dest.exists() {
            return Ok(());
        }
        if strip && is_elf(&host)? {
            let out = Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&dest)
                .arg(&host)
                .output()
                .context("run strip (binutils)")?;
            ensure!(
                out.status.success(),
                "strip {}: {}",
                host.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::set_permissions(&dest, meta.permissions())?;
        } else {
            std::fs::copy(&host, &dest)
                .with_context(|| format!("copy {} into the initramfs", host.display()))?;
        }
        Ok(())
    }

    /// Installs executable or shared library `path` without debug info, and every library
    /// `ldd` lists for it.
    fn install_elf(&mut self, path: &Path) -> Result<()> {
        self.install(path, true)?;
        for lib in ldd(path)? {
            self.install(&lib, true)?;
        }
        Ok(())
    }

    /// Copies host file `src` to `path` in the tree.
    fn install_as(&mut self, path: &Path, src: &Path) -> Result<()> {
        let name = path.file_name().context("path without a file name")?;
        let dir = self.make_dir(path.parent().unwrap_or(Path::new("/")))?;
        let dest = self.dest(&dir.join(name));
        std::fs::copy(src, &dest).with_context(|| format!("copy {}", src.display()))?;
        Ok(())
    }

    /// Writes `text` to `path` in the tree with permission bits `mode`.
    fn write(&mut self, path: &str, text: &str, mode: u32) -> Result<()> {
        let path = Path::new(path);
        let dir = self.make_dir(path.parent().unwrap_or(Path::new("/")))?;
        let dest = self.dest(&dir.join(path.file_name().context("no file name")?));
        std::fs::write(&dest, text).with_context(|| format!("write {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}

/// True if `path` starts with the ELF magic.
fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(std::io::Read::read_exact(&mut file, &mut magic).is_ok() && magic == *b"\x7fELF")
}

/// `path` with `.` and `..` components removed lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// The libraries `ldd` lists for `path` (the dynamic loader included); empty for a static
/// executable. Fails on a library `ldd` cannot find.
fn ldd(path: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(path).output().context("run ldd")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = format!("{stdout}{stderr}");
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    ensure!(
        out.status.success(),
        "ldd {} failed: {text}",
        path.display()
    );
    let mut libs = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        ensure!(
            !line.contains("not found"),
            "ldd {}: {line}",
            path.display()
        );
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|w| w.starts_with('/')),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            libs.push(PathBuf::from(lib));
        }
    }
    Ok(libs)
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `s` quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `export KEY='value'` lines.
fn exports(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
        .collect()
}

/// Writes `line` to the real stderr: `eprintln!` is captured by the test harness and shown only
/// on failure, while the VM stage's progress, skips and summary belong in every CI log.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where the last run's console log is kept: `target/<profile>/proclens-vm/console.log`.
fn console_log_path() -> PathBuf {
    super::target_dir().join("proclens-vm").join("console.log")
}

/// What the serial console showed, cleaned, and how the VM ended.
struct Console {
    lines: Vec<String>,
    /// qemu's exit status, `None` if it was killed at the deadline.
    exit: Option<std::process::ExitStatus>,
    /// qemu's own stderr.
    stderr: String,
}

/// A qemu process that is killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(Some(_))) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Boots the VM and collects its console until qemu exits or `deadline` passes (then kills it).
fn boot(vmlinuz: &Path, initrd: &Path, disk: &Path, deadline: Instant) -> Result<Console> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()))
    .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The VM dies with
    // the thread that waits for it, even if the test process is killed before `Qemu` drops.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut qemu = Qemu(
        cmd.spawn()
            .context("spawn qemu-system-x86_64 (install qemu-system-x86)")?,
    );
    let stdout = qemu.0.stdout.take().context("qemu stdout")?;
    let (stderr, _) = process::Captured::drain(qemu.0.stderr.take().context("qemu stderr")?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(clean_line(&buf)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut lines = Vec::new();
    let mut ended_at = None;
    loop {
        let limit = match ended_at {
            Some(t) => deadline.min(t + POWEROFF_GRACE),
            None => deadline,
        };
        match rx.recv_timeout(limit.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(record) = line.find(PREFIX).map(|i| &line[i + PREFIX.len()..]) {
                    live_progress(record);
                    if record == "end" {
                        ended_at = Some(Instant::now());
                    }
                }
                lines.push(line);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                drop(qemu);
                return Ok(Console {
                    lines,
                    exit: None,
                    stderr: stderr.text(),
                });
            }
        }
    }
    let exit = process::wait_timeout(&mut qemu.0, POWEROFF_GRACE)?;
    Ok(Console {
        lines,
        exit,
        stderr: stderr.text(),
    })
}

/// Prints the records worth seeing while the VM runs: setup messages and exit statuses.
fn live_progress(record: &str) {
    if let Some(msg) = record.strip_prefix("init|") {
        let loud = msg.starts_with("error") || msg.starts_with("leftover");
        note(&format!("vm: {}{msg}", if loud { "!!! " } else { "" }));
    } else if let Some(status) = record.strip_prefix("status|") {
        note(&format!("vm: exit status {}", status.replace('|', ": ")));
    }
}

/// One console line as text: `\r` and terminal escape sequences removed.
fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            // CSI (ESC [ parameters, then one final byte in @..~) is dropped whole; any other
            // escape is two characters (ESC c, ESC 7, ...).
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// What one program did inside the VM.
#[derive(Clone, Debug)]
pub struct ProgramResult {
    /// The program's name.
    pub name: String,
    /// Its exit status, `None` if the VM ended before it finished.
    pub status: Option<i32>,
    /// Every line it printed (stdout and stderr interleaved).
    pub output: Vec<String>,
}

impl ProgramResult {
    /// True if it ran to the end with status 0.
    pub fn passed(&self) -> bool {
        self.status == Some(0)
    }

    /// One line: libtest's counts if it is a Rust test binary, and the exit status.
    pub fn summary(&self) -> String {
        let status = match self.status {
            Some(0) => "exit 0".to_string(),
            Some(137) => "exit 137: killed, by its timeout?".to_string(),
            Some(code) => format!("exit {code}"),
            None => "did not finish".to_string(),
        };
        match self.libtest_counts() {
            Some(counts) => format!("{}: {counts} ({status})", self.name),
            None => format!("{}: {status}", self.name),
        }
    }

    /// libtest's `N passed, N failed, N ignored, N filtered out` from its last `test result:`
    /// line (summed if the program ran several test binaries).
    fn libtest_counts(&self) -> Option<String> {
        let mut sums = [0u64; 4];
        let keys = ["passed", "failed", "ignored", "filtered"];
        let mut found = false;
        for line in self.output.iter().filter(|l| l.starts_with("test result:")) {
            found = true;
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                let key = pair[1].trim_end_matches([';', ',']);
                if let (Some(i), Ok(n)) =
                    (keys.iter().position(|k| *k == key), pair[0].parse::<u64>())
                {
                    sums[i] += n;
                }
            }
        }
        found.then(|| {
            format!(
                "{} passed, {} failed, {} ignored, {} filtered out",
                sums[0], sums[1], sums[2], sums[3]
            )
        })
    }

    /// The part of the output that explains a failure: libtest's `failures:` sections (each
    /// failing test's output and panic message, then the list of names), else the last lines.
    /// Every line is indented by 4 spaces, so that none reads as the outer run's own
    /// `test result:` line.
    pub fn failure_details(&self) -> String {
        let start = self.output.iter().position(|l| l == "failures:");
        let end = self
            .output
            .iter()
            .rposition(|l| l.starts_with("test result:"));
        let lines: &[String] = match (start, end) {
            (Some(s), Some(e)) if s < e => &self.output[s..e],
            _ => &self.output[self.output.len().saturating_sub(60)..],
        };
        lines.iter().map(|l| format!("    {l}\n")).collect()
    }

    /// Lines the tests flag with `!!!` (skips, leaks, daemons that died): shown even on success.
    pub fn flagged_lines(&self) -> impl Iterator<Item = &str> {
        self.output
            .iter()
            .map(|l| l.trim_start())
            .filter(|l| l.starts_with("!!!"))
    }
}

/// The result of one VM run.
#[derive(Debug)]
pub struct VmRun {
    /// One entry per program, in run order.
    pub programs: Vec<ProgramResult>,
    /// True if /init reported every program done.
    pub finished: bool,
    /// `/init`'s setup messages (errors included).
    pub init_messages: Vec<String>,
    /// The kernel log's tail that /init printed after a failure.
    pub dmesg: Vec<String>,
    /// Where the whole console log was saved.
    pub console_log: PathBuf,
    /// From qemu's start to its exit.
    pub vm_time: Duration,
    /// The tail of the console and qemu's stderr, when the VM did not finish.
    unfinished_context: String,
}

impl VmRun {
    /// Sorts the console records into per-program results.
    fn parse(
        programs: &[VmProgram],
        console: &Console,
        console_log: PathBuf,
        vm_time: Duration,
        timeout: Duration,
    ) -> Self {
        let mut results: Vec<ProgramResult> = programs
            .iter()
            .map(|p| ProgramResult {
                name: p.name.clone(),
                status: None,
                output: Vec::new(),
            })
            .collect();
        let mut run = Self {
            programs: Vec::new(),
            finished: false,
            init_messages: Vec::new(),
            dmesg: Vec::new(),
            console_log,
            vm_time,
            unfinished_context: String::new(),
        };
        for line in &console.lines {
            let Some(record) = line.find(PREFIX).map(|i| &line[i + PREFIX.len()..]) else {
                continue;
            };
            let mut fields = record.splitn(3, '|');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("end"), None, None) => run.finished = true,
                (Some("init"), Some(msg), None) => run.init_messages.push(msg.to_string()),
                (Some("dmesg"), Some(first), rest) => {
                    let msg = rest.map_or(first.to_string(), |r| format!("{first}|{r}"));
                    run.dmesg.push(msg);
                }
                (Some(kind @ ("out" | "status")), Some(name), Some(rest)) => {
                    let Some(r) = results.iter_mut().find(|r| r.name == name) else {
                        continue;
                    };
                    if kind == "out" {
                        r.output.push(rest.to_string());
                    } else {
                        r.status = rest.trim().parse().ok();
                    }
                }
                _ => {}
            }
        }
        if !run.finished {
            let tail = &console.lines[console.lines.len().saturating_sub(40)..];
            let ended = match console.exit {
                Some(status) => format!("qemu exited ({status}) before /init finished"),
                None => format!("the VM did not finish within the stage's {timeout:?}; killed"),
            };
            run.unfinished_context = format!(
                "{ended}\nlast console lines:\n{}\nqemu stderr:\n{}",
                tail.join("\n"),
                match console.stderr.trim() {
                    "" => "(empty)",
                    text => text,
                }
            );
        }
        run.programs = results;
        run
    }

    /// Prints one summary line per program (and the lines its tests flagged with `!!!`) to the
    /// real stderr, so they show in CI logs even when the test passes.
    pub fn report(&self) {
        for p in &self.programs {
            for line in p.flagged_lines() {
                note(&format!("vm: {}: {line}", p.name));
            }
            note(&format!("vm: {}", p.summary()));
        }
        note(&format!(
            "vm: {} in {:.1} s; console log: {}",
            if self.finished {
                "finished"
            } else {
                "DID NOT FINISH"
            },
            self.vm_time.as_secs_f64(),
            self.console_log.display()
        ));
    }

    /// Fails with every failing program's summary and failure details, /init's errors and the
    /// kernel log's tail, unless every program passed and the VM finished.
    pub fn check(&self) -> Result<()> {
        let failed: Vec<&ProgramResult> = self.programs.iter().filter(|p| !p.passed()).collect();
        if self.finished && failed.is_empty() {
            return Ok(());
        }
        let mut msg = String::from("the cgroup v2 VM stage failed\n");
        for p in &failed {
            let _ = write!(msg, "\n=== {}\n{}", p.summary(), p.failure_details());
        }
        let errors: Vec<&String> = self
            .init_messages
            .iter()
            .filter(|m| m.starts_with("error"))
            .collect();
        if !errors.is_empty() {
            let _ = write!(msg, "\n=== /init errors\n");
            for e in errors {
                let _ = writeln!(msg, "{e}");
            }
        }
        if !self.finished {
            let _ = write!(msg, "\n=== {}\n", self.unfinished_context);
        }
        if !self.dmesg.is_empty() {
            let _ = write!(msg, "\n=== kernel log tail\n{}\n", self.dmesg.join("\n"));
        }
        let _ = write!(msg, "\nfull console log: {}", self.console_log.display());
        bail!(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_line_drops_cr_and_escapes() {
        let raw = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\x1b[1;1H PROCLENS-VM|end\r\n";
        assert_eq!(clean_line(raw), "SeaBIOS PROCLENS-VM|end");
    }

    #[test]
    fn sh_quote_survives_single_quotes() {
        assert_eq!(sh_quote("a'b c"), r"'a'\''b c'");
    }

    #[test]
    fn normalize_resolves_parent_components() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/ld.so")),
            Path::new("/usr/lib/x86_64-linux-gnu/ld.so")
        );
    }

    #[test]
    fn libtest_counts_and_failures_are_extracted() {
        let output = [
            "running 3 tests",
            "test a ... ok",
            "test b ... FAILED",
            "failures:",
            "---- b stdout ----",
            "thread 'b' panicked at it/b.rs:1:1:",
            "boom",
            "failures:",
            "    b",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; \
             finished in 1.00s",
        ];
        let r = ProgramResult {
            name: "integration".into(),
            status: Some(101),
            output: output.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            r.summary(),
            "integration: 2 passed, 1 failed, 0 ignored, 4 filtered out (exit 101)"
        );
        let details = r.failure_details();
        assert!(
            details.starts_with("    failures:\n") && details.contains("    boom\n"),
            "{details}"
        );
        assert!(!r.passed());
    }

    #[test]
    fn records_are_sorted_per_program() {
        let programs = [
            VmProgram::new("one", "/bin/true"),
            VmProgram::new("two", "/bin/false"),
        ];
        let console = Console {
            lines: [
                "\x1b[2JPROCLENS-VM|init|kernel 6.1",
                "PROCLENS-VM|out|one|hello | world",
                "PROCLENS-VM|status|one|0",
                "PROCLENS-VM|status|two|1",
                "PROCLENS-VM|dmesg|[1.0] oops",
                "PROCLENS-VM|end",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            exit: None,
            stderr: String::new(),
        };
        let run = VmRun::parse(
            &programs,
            &console,
            PathBuf::from("/x"),
            Duration::ZERO,
            Duration::ZERO,
        );
        assert!(run.finished);
        assert_eq!(run.programs[0].output, ["hello | world"]);
        assert!(run.programs[0].passed());
        assert_eq!(run.programs[1].status, Some(1));
        assert_eq!(run.dmesg, ["[1.0] oops"]);
        let err = run.check().unwrap_err().to_string();
        assert!(err.contains("=== two: exit 1"), "{err}");
    }
}
