//! OCI images built from files on this machine, without a registry: [`build_image`] writes an
//! OCI image layout (`oci-layout`, `index.json`, blobs: config, manifest, one uncompressed layer)
//! as a tar that `ctr images import` takes. [`pause_program`] compiles the pod sandbox's pause
//! program; [`busybox_files`] is a busybox-static root filesystem.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::process;

/// The statically linked busybox of Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";

/// busybox applets linked in [`busybox_files`]' `/bin`.
const APPLETS: [&str; 9] = [
    "sh", "sleep", "cat", "echo", "ls", "ps", "true", "false", "env",
];

/// The pause program: sleeps until SIGTERM or SIGINT, then exits 0. As the first process of a
/// pid namespace it gets no default signal actions, hence the handlers.
const PAUSE_C: &str = r#"#include <signal.h>
#include <unistd.h>

static void on_signal(int sig) { (void)sig; _exit(0); }

int main(void) {
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    for (;;)
        pause();
}
"#;

/// How long a tar or gcc run may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// One entry of an image's single layer.
#[derive(Clone, Debug)]
pub enum ImageFile {
    /// A regular file with this content and mode, at this path in the image.
    Bytes {
        /// Path in the image, e.g. `etc/motd` (leading `/` optional).
        path: String,
        /// Content.
        content: Vec<u8>,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
    },
    /// A copy of a host file, with its mode.
    Copy {
        /// Path in the image.
        path: String,
        /// The host file.
        host: PathBuf,
    },
    /// A symbolic link.
    Symlink {
        /// Path in the image.
        path: String,
        /// Link target, as stored.
        target: String,
    },
}

impl ImageFile {
    /// Path in the image, without a leading `/`.
    fn path(&self) -> &str {
        match self {
            ImageFile::Bytes { path, .. }
            | ImageFile::Copy { path, .. }
            | ImageFile::Symlink { path, .. } => path.trim_start_matches('/'),
        }
    }
}

/// The root filesystem of the busybox image: `/bin/busybox` (static, from the host) with
/// `/bin/sh`, `/bin/sleep` and a few more applets linked to it, plus an empty `/tmp`.
pub fn busybox_files() -> Result<Vec<ImageFile>> {
    if !Path::new(BUSYBOX).is_file() {
        bail!(
            "{BUSYBOX} is missing: the containerd rig needs busybox-static \
             (apt-get install busybox-static)"
        );
    }
    let mut files = vec![
        ImageFile::Copy {
            path: "bin/busybox".into(),
            host: BUSYBOX.into(),
        },
        ImageFile::Bytes {
            path: "tmp/.keep".into(),
            content: Vec::new(),
            mode: 0o644,
        },
    ];
    files.extend(APPLETS.iter().map(|applet| ImageFile::Symlink {
        path: format!("bin/{applet}"),
        target: "busybox".into(),
    }));
    Ok(files)
}

/// Compiles the pause program with `gcc -static` into `dir/pause` and returns its path.
pub fn pause_program(dir: &Path) -> Result<PathBuf> {
    let source = dir.join("pause.c");
    let binary = dir.join("pause");
    fs::write(&source, PAUSE_C).with_context(|| format!("write {}", source.display()))?;
    let out = process::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&binary)
            .arg(&source),
        TOOL_TIMEOUT,
    )
    .context("gcc is needed for the pause image (apt-get install gcc libc6-dev)")?;
    if !out.status.success() {
        bail!(
            "gcc -static pause.c failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(binary)
}

/// Builds image `name` (fully qualified, e.g. `docker.io/proclens/busybox:1`: CRI looks images
/// up by normalized name) for linux/amd64 from `files`, as one uncompressed layer, with
/// `entrypoint` as its entrypoint. Works in `dir` (created if needed) and returns the path of the
/// OCI layout tar. The same files give the same image id.
pub fn build_image(
    dir: &Path,
    name: &str,
    files: &[ImageFile],
    entrypoint: &[&str],
) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&rootfs).with_context(|| format!("mkdir {}", rootfs.display()))?;
    fs::create_dir_all(&blobs).with_context(|| format!("mkdir {}", blobs.display()))?;
    for file in files {
        write_entry(&rootfs, file)?;
    }
    let layer = dir.join("layer.tar");
    tar(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let layer = blob(
        &blobs,
        &fs::read(&layer).with_context(|| format!("read {}", layer.display()))?,
    )?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Entrypoint":{},"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        json_list(entrypoint),
        layer.digest
    );
    let config = blob(&blobs, config.as_bytes())?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        config.descriptor("application/vnd.oci.image.config.v1+json"),
        layer.descriptor("application/vnd.oci.image.layer.v1.tar"),
    );
    let manifest = blob(&blobs, manifest.as_bytes())?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let mut descriptor = manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
    descriptor.pop();
    write!(
        descriptor,
        r#","annotations":{{"io.containerd.image.name":{},"org.opencontainers.image.ref.name":{}}}}}"#,
        json(name),
        json(tag)
    )?;
    let index = format!(r#"{{"schemaVersion":2,"manifests":[{descriptor}]}}"#);
    fs::write(layout.join("index.json"), index).context("write index.json")?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .context("write oci-layout")?;
    let image = dir.join("image.tar");
    tar(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&image)
        .args(["oci-layout", "index.json", "blobs"]))?;
    Ok(image)
}

/// A blob written under its digest.
struct Blob {
    digest: String,
    size: usize,
}

impl Blob {
    /// The blob's OCI descriptor as JSON.
    fn descriptor(&self, media_type: &str) -> String {
        format!(
            r#"{{"mediaType":{},"digest":"{}","size":{}}}"#,
            json(media_type),
            self.digest,
            self.size
        )
    }
}

/// Writes `content` to `blobs/<sha256 hex>`.
fn blob(blobs: &Path, content: &[u8]) -> Result<Blob> {
    let hex: String = Sha256::digest(content)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
    let path = blobs.join(&hex);
    fs::write(&path, content).with_context(|| format!("write {}", path.display()))?;
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size: content.len(),
    })
}

/// Creates one layer entry under `rootfs`.
fn write_entry(rootfs: &Path, file: &ImageFile) -> Result<()> {
    let path = rootfs.join(file.path());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    match file {
        ImageFile::Bytes { content, mode, .. } => {
            fs::write(&path, content).with_context(|| format!("write {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        ImageFile::Copy { host, .. } => {
            fs::copy(host, &path)
                .with_context(|| format!("copy {} to {}", host.display(), path.display()))?;
        }
        ImageFile::Symlink { target, .. } => {
            std::os::unix::fs::symlink(target, &path)
                .with_context(|| format!("symlink {} -> {target}", path.display()))?;
        }
    }
    Ok(())
}

/// Runs a tar command; fails with its stderr.
fn tar(cmd: &mut Command) -> Result<()> {
    let out = process::run(cmd, TOOL_TIMEOUT)?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A JSON string literal (image names, tags and media types: no control characters).
fn json(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A JSON array of string literals.
fn json_list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| json(s)).collect::<Vec<_>>().join(",")
    )
}
