//! [`ContainerdDaemon`]: a real containerd 1.6 with its CRI plugin, on a socket, root, state and
//! CNI network of its own, with the two local images a pod needs imported, and helpers that run
//! pod sandboxes and containers through `proclens-cri`'s client.
//!
//! Facts this rig depends on (DESIGN §7): the CRI plugin needs `restrict_oom_score_adj = true`
//! here (no CAP_SYS_RESOURCE), `SystemdCgroup = false` (no systemd), a local `sandbox_image`
//! imported under a fully qualified name, and CNI plugins from `/usr/lib/cni`. containerd 1.6
//! still puts shim sockets under `/run/containerd/s` and CNI results under `/var/lib/cni`; `Drop`
//! removes what this daemon left there, and everything else it made.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use proclens_cri::api::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, ImageStatusRequest,
    LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use proclens_cri::CriClient;
use tempfile::TempDir;

use super::fused::lazy_unmount;
use super::oci::{self, ImageFile};
use super::process::{self, Captured};
use super::{hierarchies, poll, TempCgroup};

/// The sandbox (pause) image every pod of the rig uses.
pub const PAUSE_IMAGE: &str = "docker.io/proclens/pause:1";

/// The image of the rig's containers: busybox-static (`sh`, `sleep`, …).
pub const BUSYBOX_IMAGE: &str = "docker.io/proclens/busybox:1";

/// The containerd namespace CRI uses.
const CRI_NAMESPACE: &str = "k8s.io";

/// The snapshotter of both the CRI plugin and `ctr images import` (an image is unpacked for one).
const SNAPSHOTTER: &str = "overlayfs";

/// containerd's directory for shim sockets, which 1.6 does not take from its config.
const RUN_CONTAINERD: &str = "/run/containerd";

/// Where the CNI library caches results (`results/<network>-<container>-<ifname>`).
const CNI_CACHE: &str = "/var/lib/cni";

/// The sysctl the bridge plugin may set.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// How long containerd may take from spawn to a socket that answers `Version`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long containerd may take to exit after SIGTERM before it gets SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `ctr` may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod to run: CRI sandbox metadata and labels.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Pod name (sandbox metadata `name`).
    pub name: String,
    /// Pod namespace (sandbox metadata `namespace`).
    pub namespace: String,
    /// Pod UID (sandbox metadata `uid`).
    pub uid: String,
    /// Sandbox labels.
    pub labels: HashMap<String, String>,
}

/// A container to create in a pod: its CRI metadata name, image, labels and command.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// Container name (container metadata `name`).
    pub name: String,
    /// The image spec: [`BUSYBOX_IMAGE`], or its id (`sha256:…`, from
    /// [`ContainerdDaemon::image_id`]) as the kubelet passes it.
    pub image: String,
    /// Container labels.
    pub labels: HashMap<String, String>,
    /// The command, e.g. `["sleep", "3600"]`.
    pub command: Vec<String>,
}

/// A running `containerd` with its own `--config`, root, state, socket and CNI network (a
/// bridge plus host-local conflist on a subnet and bridge name unique to the daemon), with
/// [`PAUSE_IMAGE`] and [`BUSYBOX_IMAGE`] imported in the `k8s.io` namespace.
///
/// Pods get a cgroup parent under a test-owned cgroup, laid out as the kubelet's cgroupfs driver
/// lays out a pod's ([`Self::pod_cgroup`]: `<rig cgroup>/kubepods/besteffort/pod<uid>`), so a
/// container's cgroup is `<pod cgroup>/<container id>` ([`Self::container_cgroup`]) and the
/// collector classifies both as Kubernetes would have them.
///
/// `Drop` stops and removes every pod sandbox and container through CRI (which tears down their
/// network namespaces and CNI state), stops containerd, kills any shim or container process of
/// its left, unmounts what is still mounted under its directory, removes the cgroups, bridge and
/// CNI cache entries it made and the `/run/containerd` entries that appeared with it, and restores
/// `ip_forward`. Its methods block; do not use it from inside an async runtime.
pub struct ContainerdDaemon {
    child: Child,
    stderr: Captured,
    dir: TempDir,
    socket: PathBuf,
    network: String,
    bridge: String,
    runtime: tokio::runtime::Runtime,
    client: CriClient,
    pods: Mutex<HashMap<String, PodSandboxConfig>>,
    ran: Mutex<Vec<RanPod>>,
    host: HostBefore,
    cgroup: TempCgroup,
}

/// A sandbox this rig ran, and its network namespace's bind mount (under the daemon's
/// directory): `Drop` removes their CNI cache entries if CRI could not.
struct RanPod {
    id: String,
    netns: PathBuf,
}

/// What the host had before the daemon started, so `Drop` leaves it as found.
struct HostBefore {
    run_existed: bool,
    run_entries: BTreeSet<PathBuf>,
    cni_cache_existed: bool,
    ip_forward: Option<String>,
}

impl PodSpec {
    /// Pod `namespace/name` with a fresh UID and the labels the kubelet puts on a sandbox
    /// (`io.kubernetes.pod.{name,namespace,uid}`) plus `extra`.
    pub fn kubelet(namespace: &str, name: &str, extra: &[(&str, &str)]) -> Self {
        let uid = unique_uid();
        let mut labels: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        for (key, value) in [
            ("io.kubernetes.pod.name", name),
            ("io.kubernetes.pod.namespace", namespace),
            ("io.kubernetes.pod.uid", uid.as_str()),
        ] {
            labels.insert(key.to_string(), value.to_string());
        }
        PodSpec {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid,
            labels,
        }
    }
}

/// A pod UID shaped like the kubelet's (a version 4 UUID, `8-4-4-4-12` hex digits), unique to
/// this test process and call: the pid, a counter and the clock.
pub fn unique_uid() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() & 0xffff_ffff_ffff);
    format!(
        "{:08x}-{:04x}-4{:03x}-8000-{nanos:012x}",
        std::process::id(),
        n & 0xffff,
        (n >> 16) & 0xfff
    )
}

impl ContainerdDaemon {
    /// Starts containerd, waits until its CRI socket answers `Version`, and imports the pause
    /// and busybox images. Fails with containerd's stderr if it exits or does not answer.
    pub fn start() -> Result<Self> {
        for tool in ["/usr/bin/containerd", "/usr/bin/ctr"] {
            if !Path::new(tool).is_file() {
                bail!(
                    "{tool} is missing: the containerd rig needs containerd 1.6 \
                     (apt-get install containerd)"
                );
            }
        }
        let host = HostBefore {
            run_existed: Path::new(RUN_CONTAINERD).exists(),
            run_entries: tree(Path::new(RUN_CONTAINERD)),
            cni_cache_existed: Path::new(CNI_CACHE).exists(),
            ip_forward: fs::read_to_string(IP_FORWARD).ok(),
        };
        let name = super::unique_name();
        let hash = fnv1a(name.as_bytes());
        let cgroup = TempCgroup::builder().create()?;
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-containerd-")
            .tempdir()?;
        let socket = dir.path().join("containerd.sock");
        let bridge = format!("pl{:08x}", hash & 0xffff_ffff);
        let subnet = format!("10.{}.{}.0/24", 200 + (hash >> 32) % 50, (hash >> 40) % 256);
        write_config(dir.path(), &socket, &name, &bridge, &subnet)?;
        let mut child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn containerd")?;
        let (stderr, _) = Captured::drain(child.stderr.take().context("containerd stderr")?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("tokio runtime for the CRI client")?;
        let ready = poll(READY_TIMEOUT, "containerd's CRI socket to answer", || {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "containerd exited with {status} before answering:\n{}",
                    stderr.text()
                );
            }
            let answered = runtime.block_on(async {
                let client = CriClient::connect(&socket).await.ok()?;
                client.version().await.ok().map(|_| client)
            });
            Ok(answered)
        });
        // From here on, Drop cleans up whatever start leaves behind.
        let client = match ready {
            Ok(client) => client,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err.context(format!("containerd stderr:\n{}", stderr.text())));
            }
        };
        let daemon = ContainerdDaemon {
            child,
            stderr,
            dir,
            socket,
            network: name,
            bridge,
            runtime,
            client,
            pods: Mutex::new(HashMap::new()),
            ran: Mutex::new(Vec::new()),
            host,
            cgroup,
        };
        daemon.import_images()?;
        Ok(daemon)
    }

    /// The CRI (and containerd API) socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A CRI client connected to the daemon.
    pub fn client(&self) -> &CriClient {
        &self.client
    }

    /// Runs `future` on the daemon's tokio runtime (one worker thread, which also runs tasks
    /// spawned from `future`, such as an inventory's refresh task, between calls).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The runtime [`Self::block_on`] uses, for `enter()` around code that spawns tasks.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// containerd's stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The rig's cgroup, under which every pod's cgroup is made (`/proclens-test-<pid>-<n>`,
    /// cgroupfs style, from the hierarchy root).
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.cgroup.name())
    }

    /// The cgroup parent of `pod`'s sandbox and containers, named as the kubelet's cgroupfs
    /// driver names a BestEffort pod's, under [`Self::cgroup_root`]:
    /// `<root>/kubepods/besteffort/pod<uid>`. A container's cgroup is `<that>/<container id>`.
    pub fn pod_cgroup(&self, pod: &PodSpec) -> String {
        format!("{}/kubepods/besteffort/pod{}", self.cgroup_root(), pod.uid)
    }

    /// The cgroup directory of container (or sandbox) `id` of `pod` in the (v1) hierarchy of
    /// `controller`, or on v2 in the unified one, whether or not it exists yet.
    pub fn container_cgroup(&self, controller: &str, pod: &PodSpec, id: &str) -> Option<PathBuf> {
        let relative = self.pod_cgroup(pod);
        let below_root = relative
            .strip_prefix(&self.cgroup_root())?
            .trim_start_matches('/');
        self.cgroup
            .dir(controller)
            .map(|d| d.join(below_root).join(id))
    }

    /// Runs a pod sandbox for `pod` (`RunPodSandbox`: the pause image, the rig's CNI network,
    /// its own network namespace, the rig's cgroup parent) and returns its id.
    pub fn run_pod(&self, pod: &PodSpec) -> Result<String> {
        let logs = self.dir.path().join("logs").join(&pod.uid);
        fs::create_dir_all(&logs).with_context(|| format!("mkdir {}", logs.display()))?;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            hostname: pod.name.clone(),
            log_directory: logs.to_string_lossy().into_owned(),
            labels: pod.labels.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.pod_cgroup(pod),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .block_on(self.client.runtime().run_pod_sandbox(request))
            .map_err(|s| self.client.call_error("RunPodSandbox", s))
            .with_context(|| {
                format!(
                    "run pod {}/{}\ncontainerd: {}",
                    pod.namespace,
                    pod.name,
                    self.stderr()
                )
            })?
            .into_inner()
            .pod_sandbox_id;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), config);
        let netns = self.netns_of(pod, &id)?;
        self.ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RanPod {
                id: id.clone(),
                netns,
            });
        Ok(id)
    }

    /// The bind mount of sandbox `id`'s network namespace (under the CRI plugin's state
    /// directory, not `/var/run/netns`: `netns_mounts_under_state_dir`), found by the namespace
    /// inode of its pause process.
    fn netns_of(&self, pod: &PodSpec, id: &str) -> Result<PathBuf> {
        let netns_dir = self
            .dir
            .path()
            .join("state/io.containerd.grpc.v1.cri/netns");
        let procs = self
            .container_cgroup("memory", pod, id)
            .context("no memory hierarchy")?
            .join("cgroup.procs");
        let text =
            fs::read_to_string(&procs).with_context(|| format!("read {}", procs.display()))?;
        let pid = text
            .lines()
            .next()
            .with_context(|| format!("no pause process in {}", procs.display()))?;
        let ns = fs::metadata(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("network namespace of pause process {pid}"))?;
        let entries =
            fs::read_dir(&netns_dir).with_context(|| format!("read {}", netns_dir.display()))?;
        entries
            .flatten()
            .map(|e| e.path())
            .find(|p| fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (ns.dev(), ns.ino())))
            .with_context(|| {
                format!(
                    "no bind mount of sandbox {id}'s netns in {}",
                    netns_dir.display()
                )
            })
    }

    /// The network namespace bind mounts of the pods this rig ran (removed with their pod).
    pub fn netns_paths(&self) -> Vec<PathBuf> {
        let ran = self.ran.lock().unwrap_or_else(|e| e.into_inner());
        ran.iter().map(|p| p.netns.clone()).collect()
    }

    /// The ids of the sandboxes this rig ran.
    fn sandbox_ids(&self) -> Vec<String> {
        let ran = self.ran.lock().unwrap_or_else(|e| e.into_inner());
        ran.iter().map(|p| p.id.clone()).collect()
    }

    /// Kills containerd (SIGKILL) and waits for it, leaving its shims, containers, mounts and
    /// network to `Drop`: what a crashed runtime leaves.
    pub fn kill_containerd(&mut self) -> Result<()> {
        self.child.kill().context("kill containerd")?;
        self.child.wait().context("wait for containerd")?;
        Ok(())
    }

    /// The daemon's directory (config, root, state, socket, CNI conf, images).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The name of the CNI bridge of the daemon's pod network.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The id of image `name` (`ImageStatus`), e.g. `sha256:…` for [`BUSYBOX_IMAGE`].
    pub fn image_id(&self, name: &str) -> Result<String> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.to_string(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        self.block_on(self.client.image().image_status(request))
            .map_err(|s| self.client.call_error("ImageStatus", s))?
            .into_inner()
            .image
            .map(|i| i.id)
            .with_context(|| format!("no image {name}"))
    }

    /// Creates and starts container `spec` in sandbox `sandbox_id` (run by [`Self::run_pod`])
    /// and returns its id.
    pub fn start_container(&self, sandbox_id: &str, spec: &ContainerSpec) -> Result<String> {
        let sandbox_config = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sandbox_id)
            .cloned()
            .with_context(|| format!("sandbox {sandbox_id} was not run by this rig"))?;
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: spec.image.clone(),
                ..ImageSpec::default()
            }),
            command: spec.command.clone(),
            labels: spec.labels.clone(),
            log_path: format!("{}.log", spec.name),
            linux: Some(LinuxContainerConfig::default()),
            ..ContainerConfig::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let mut runtime = self.client.runtime();
        let id = self
            .block_on(runtime.create_container(request))
            .map_err(|s| self.client.call_error("CreateContainer", s))
            .with_context(|| {
                format!(
                    "create container {}\ncontainerd: {}",
                    spec.name,
                    self.stderr()
                )
            })?
            .into_inner()
            .container_id;
        self.block_on(runtime.start_container(StartContainerRequest {
            container_id: id.clone(),
        }))
        .map_err(|s| self.client.call_error("StartContainer", s))
        .with_context(|| {
            format!(
                "start container {} ({id})\ncontainerd: {}",
                spec.name,
                self.stderr()
            )
        })?;
        Ok(id)
    }

    /// Stops container `id` at once (SIGKILL) and removes it.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut runtime = self.client.runtime();
        self.block_on(runtime.stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: 0,
        }))
        .map_err(|s| self.client.call_error("StopContainer", s))?;
        self.block_on(runtime.remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        }))
        .map_err(|s| self.client.call_error("RemoveContainer", s))?;
        Ok(())
    }

    /// Stops sandbox `id` (and its containers) and removes it.
    pub fn remove_pod(&self, id: &str) -> Result<()> {
        let mut runtime = self.client.runtime();
        self.block_on(runtime.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }))
        .map_err(|s| self.client.call_error("StopPodSandbox", s))?;
        self.block_on(runtime.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }))
        .map_err(|s| self.client.call_error("RemovePodSandbox", s))?;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    /// Builds and imports [`PAUSE_IMAGE`] and [`BUSYBOX_IMAGE`].
    fn import_images(&self) -> Result<()> {
        let images = self.dir.path().join("images");
        fs::create_dir_all(&images).context("mkdir images")?;
        let source = images.join("pause-src");
        fs::create_dir_all(&source).context("mkdir pause-src")?;
        let pause = oci::pause_program(&source)?;
        let pause_tar = oci::build_image(
            &images.join("pause"),
            PAUSE_IMAGE,
            &[ImageFile::Copy {
                path: "pause".into(),
                host: pause,
            }],
            &["/pause"],
        )?;
        let busybox_tar = oci::build_image(
            &images.join("busybox"),
            BUSYBOX_IMAGE,
            &oci::busybox_files()?,
            &["/bin/sh"],
        )?;
        for tar in [pause_tar, busybox_tar] {
            self.ctr(&["images", "import", "--snapshotter", SNAPSHOTTER], &tar)?;
        }
        Ok(())
    }

    /// Runs `ctr -a <socket> -n k8s.io args… path`; fails with its output.
    fn ctr(&self, args: &[&str], path: &Path) -> Result<()> {
        let mut cmd = Command::new("/usr/bin/ctr");
        cmd.arg("-a")
            .arg(&self.socket)
            .args(["-n", CRI_NAMESPACE])
            .args(args)
            .arg(path);
        let out = process::run(&mut cmd, CTR_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "{cmd:?} exited with {}:\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops and removes every sandbox and container the runtime lists.
    fn remove_everything(&self) -> Result<()> {
        let (sandboxes, containers) = self.block_on(async {
            tokio::try_join!(self.client.list_sandboxes(), self.client.list_containers())
        })?;
        let mut result = Ok(());
        for s in sandboxes {
            if let Err(err) = self.remove_pod(&s.id) {
                result = Err(err.context(format!("remove sandbox {}", s.id)));
            }
        }
        for c in containers {
            let mut runtime = self.client.runtime();
            let removed = self.block_on(runtime.remove_container(RemoveContainerRequest {
                container_id: c.id.clone(),
            }));
            if let Err(status) = removed {
                if status.code() != tonic::Code::NotFound {
                    result = Err(self.client.call_error("RemoveContainer", status).into());
                }
            }
        }
        result
    }

    /// Kills the tasks of, and removes, every cgroup under the pods' parent in every hierarchy,
    /// and the parent itself where runc created it (the [`TempCgroup`] removes its own).
    fn remove_pod_cgroups(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Ok(all) = hierarchies() else {
            return vec!["cannot list cgroup hierarchies".into()];
        };
        let owned: BTreeSet<PathBuf> = self
            .cgroup
            .procs_files()
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        for h in all {
            let top = h.mount.join(self.cgroup.name());
            if !top.is_dir() {
                continue;
            }
            let mut dirs: Vec<PathBuf> = tree(&top).into_iter().filter(|p| p.is_dir()).collect();
            // Deepest first.
            dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            if !owned.contains(&top) {
                dirs.push(top.clone());
            }
            for dir in dirs {
                if let Err(err) = remove_cgroup(&dir) {
                    problems.push(format!("{err:#}"));
                }
            }
        }
        problems
    }
}

impl Drop for ContainerdDaemon {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        // A daemon that already died (a test may kill it) cannot clean up through CRI.
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Err(err) = self.remove_everything() {
                problems.push(format!("CRI cleanup: {err:#}"));
            }
        }
        process::terminate(&mut self.child, "containerd", EXIT_TIMEOUT);
        for pid in shims_serving(&self.socket) {
            let _ = process::signal(pid, libc::SIGKILL);
        }
        problems.extend(self.remove_pod_cgroups());
        // Mounts under the daemon's directory (rootfs overlays, sandbox shm), deepest first.
        if let Ok(mounts) = super::mountinfo::mounts() {
            let mut points: Vec<PathBuf> = mounts
                .into_iter()
                .map(|m| m.mountpoint)
                .filter(|p| p.starts_with(self.dir.path()))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            points.dedup();
            for point in points {
                if let Err(err) = lazy_unmount(&point) {
                    problems.push(format!("{err:#}"));
                }
            }
        }
        if let Err(err) = remove_link(&self.bridge) {
            problems.push(format!("{err:#}"));
        }
        remove_cni_cache(
            &self.network,
            &self.sandbox_ids(),
            self.host.cni_cache_existed,
        );
        remove_new_run_entries(&self.host.run_entries, self.host.run_existed);
        if let Some(before) = &self.host.ip_forward {
            if fs::read_to_string(IP_FORWARD).ok().as_ref() != Some(before) {
                let _ = fs::write(IP_FORWARD, before);
            }
        }
        if !problems.is_empty() {
            eprintln!(
                "!!! ContainerdDaemon {}: cleanup incomplete:\n{}\ncontainerd stderr:\n{}",
                self.network,
                problems.join("\n"),
                self.stderr.text()
            );
        }
    }
}

/// Writes `config.toml` (containerd 1.6, config version 2) and the CNI conflist under `dir`.
fn write_config(
    dir: &Path,
    socket: &Path,
    network: &str,
    bridge: &str,
    subnet: &str,
) -> Result<()> {
    let d = dir.display();
    let cni = dir.join("cni");
    fs::create_dir_all(&cni).context("mkdir cni")?;
    let mut config = String::new();
    write!(
        config,
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{SNAPSHOTTER}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
"#,
        socket = socket.display(),
        cni = cni.display(),
    )?;
    fs::write(dir.join("config.toml"), config).context("write config.toml")?;
    // No gateway and no masquerading: the bridge plugin then leaves ip_forward and iptables
    // alone. host-local keeps its leases under the daemon's directory.
    let conflist = format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "{network}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{subnet}"}}]],
        "dataDir": "{d}/ipam"
      }}
    }}
  ]
}}
"#
    );
    fs::write(cni.join("10-proclens-test.conflist"), conflist).context("write conflist")?;
    Ok(())
}

/// Pids of the containerd shims serving the daemon at `socket` (`containerd-shim… -address
/// <socket>`): none should outlive their [`ContainerdDaemon`].
pub fn shims_serving(socket: &Path) -> Vec<u32> {
    let socket = socket.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = args
                .first()
                .is_some_and(|a| String::from_utf8_lossy(a).contains("containerd-shim"));
            is_shim
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == socket)
        })
        .collect()
}

/// Every path below `root` (not `root` itself); empty if it does not exist.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

/// Kills every task of cgroup `dir` until it is empty, then removes it.
fn remove_cgroup(dir: &Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    poll(
        EXIT_TIMEOUT,
        &format!("cgroup {} to be removable", dir.display()),
        || {
            if !dir.exists() {
                return Ok(Some(()));
            }
            let text = fs::read_to_string(&procs).unwrap_or_default();
            let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            for pid in &pids {
                let _ = process::signal(*pid, libc::SIGKILL);
            }
            Ok((pids.is_empty() && fs::remove_dir(dir).is_ok()).then_some(()))
        },
    )
}

/// Deletes network link `name` if it exists.
fn remove_link(name: &str) -> Result<()> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    let out = process::run(
        Command::new("ip").args(["link", "delete", name]),
        CTR_TIMEOUT,
    )?;
    if !out.status.success() {
        bail!(
            "ip link delete {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Removes the CNI cache entries of `network` and of the loopback network of `sandboxes`
/// (`results/<network>-*`, `results/cni-loopback-<sandbox>-*`, `networks/<network>`), and the
/// cache directories if they did not exist before and are now empty.
fn remove_cni_cache(network: &str, sandboxes: &[String], existed: bool) {
    let cache = Path::new(CNI_CACHE);
    let results = cache.join("results");
    let mut prefixes = vec![format!("{network}-")];
    prefixes.extend(sandboxes.iter().map(|id| format!("cni-loopback-{id}-")));
    if let Ok(entries) = fs::read_dir(&results) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| prefixes.iter().any(|p| n.starts_with(p.as_str())))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    let _ = fs::remove_dir_all(cache.join("networks").join(network));
    if !existed {
        for dir in [results, cache.join("networks"), cache.to_path_buf()] {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Removes what appeared under `/run/containerd` since `before` was taken: sockets nobody
/// listens on any more (this daemon's shims), then directories left empty, deepest first, and
/// `/run/containerd` itself if it did not exist before and is empty. A live socket, or
/// anything that was there before, stays.
fn remove_new_run_entries(before: &BTreeSet<PathBuf>, existed: bool) {
    let root = Path::new(RUN_CONTAINERD);
    let now = tree(root);
    let mut dirs = Vec::new();
    for path in now.difference(before) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            dirs.push(path.clone());
        } else if meta.file_type().is_socket() && UnixStream::connect(path).is_err() {
            let _ = fs::remove_file(path);
        }
    }
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
    if !existed {
        let _ = fs::remove_dir(root);
    }
}

/// FNV-1a, for a bridge name and subnet that differ between daemons.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
