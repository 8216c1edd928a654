use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{CgroupKind, Collector, Discovery, HostPaths};
use proclens_cri::api::ContainerState;
use proclens_cri::{ContainerLabels, CriClient, CriError, Inventory, PodLabels};
use proclens_tests::rig::{self, ContainerSpec, ContainerdDaemon, PodSpec, BUSYBOX_IMAGE};

/// Long enough that only the first refresh and lookup misses refresh during a test.
const NEVER: Duration = Duration::from_secs(3600);

/// How long a refresh may take to show a change.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(20);

/// A label map.
fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// `sleep 3600` in `image`, with `labels`.
fn sleeper(name: &str, image: &str, labels: HashMap<String, String>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        labels,
        command: vec!["sleep".into(), "3600".into()],
    }
}

/// Waits until `inventory` has finished `n` refreshes.
fn refreshed(inventory: &Inventory, n: u64) -> Result<()> {
    rig::poll(
        REFRESH_TIMEOUT,
        &format!("refresh {n} of the inventory"),
        || Ok((inventory.refreshes() >= n).then_some(())),
    )
}

#[test]
fn inventory_follows_real_containerd_pods_and_containers() -> Result<()> {
    rig::preflight()?;
    let daemon = ContainerdDaemon::start()?;
    // What the kubelet puts on a sandbox.
    let pod = PodSpec::kubelet("shop", "web-0", &[("app", "web")]);
    let uid = pod.uid.clone();
    let sandbox = daemon.run_pod(&pod)?;
    let app = daemon.start_container(
        &sandbox,
        &sleeper(
            "app",
            BUSYBOX_IMAGE,
            labels(&[
                ("io.kubernetes.container.name", "app"),
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "shop"),
                ("io.kubernetes.pod.uid", &uid),
            ]),
        ),
    )?;
    // The container's cgroup is <parent>/<id>: the id is how the exporter looks it up.
    let app_cgroup = daemon
        .container_cgroup("memory", &pod, &app)
        .context("no memory hierarchy")?;
    let procs = std::fs::read_to_string(app_cgroup.join("cgroup.procs"))
        .with_context(|| format!("read {}/cgroup.procs", app_cgroup.display()))?;
    ensure!(
        !procs.trim().is_empty(),
        "no task in {}",
        app_cgroup.display()
    );

    // The client's own calls on the same container.
    let client = daemon.client();
    let version = daemon.block_on(client.version())?;
    assert_eq!(
        (
            version.runtime_name.as_str(),
            version.runtime_api_version.as_str()
        ),
        ("containerd", "v1")
    );
    let status = daemon.block_on(client.container_status(&app))?;
    assert_eq!(status.id, app);
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    assert_eq!(status.metadata.map(|m| m.name).as_deref(), Some("app"));
    let missing = daemon
        .block_on(client.container_status("0000000000000000"))
        .expect_err("no such container");
    match &missing {
        CriError::Call { call, status, .. } => {
            assert_eq!(
                (*call, status.code()),
                ("ContainerStatus", tonic::Code::NotFound)
            );
        }
        other => panic!("not a call error: {other}"),
    }

    // The inventory's own runtime, as in the exporter: it outlives the daemon.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let inventory = {
        let _runtime = runtime.enter();
        Inventory::start(daemon.socket(), NEVER)?
    };
    refreshed(&inventory, 1)?;
    ensure!(inventory.is_connected(), "{}", daemon.stderr());
    assert_eq!(
        inventory.lookup(&app).as_deref(),
        Some(&ContainerLabels {
            name: app.clone(),
            image: BUSYBOX_IMAGE.into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "app".into(),
            sandbox_id: sandbox.clone(),
        })
    );
    assert_eq!(
        inventory.lookup(&sandbox).as_deref(),
        Some(&ContainerLabels {
            name: sandbox.clone(),
            image: String::new(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: String::new(),
            sandbox_id: sandbox.clone(),
        })
    );
    assert_eq!(
        inventory.lookup_pod(&uid),
        Some(Arc::new(PodLabels {
            namespace: "shop".into(),
            pod: "web-0".into(),
            uid: uid.clone(),
            sandbox_id: sandbox.clone(),
        }))
    );
    assert_eq!(inventory.snapshot().len(), 2);

    // A container started after the refresh, without kubelet labels and by image id (as the
    // kubelet creates containers): the first lookup misses, and that miss alone brings one
    // refresh that finds it (names from the CRI metadata and the sandbox's labels, the image's
    // name from ListImages).
    let image_id = daemon.image_id(BUSYBOX_IMAGE)?;
    ensure!(image_id.starts_with("sha256:"), "image id {image_id}");
    let sidecar =
        daemon.start_container(&sandbox, &sleeper("sidecar", &image_id, HashMap::new()))?;
    let before = inventory.refreshes();
    assert!(inventory.lookup(&sidecar).is_none());
    let found = rig::poll(
        REFRESH_TIMEOUT,
        "the miss refresh to find the sidecar",
        || Ok(inventory.lookup(&sidecar)),
    )?;
    assert_eq!(
        *found,
        ContainerLabels {
            name: sidecar.clone(),
            image: BUSYBOX_IMAGE.into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "sidecar".into(),
            sandbox_id: sandbox.clone(),
        }
    );
    assert_eq!(
        inventory.refreshes(),
        before + 1,
        "one refresh per new id, not per lookup"
    );

    // The exporter's join: every cgroup the collector lists under the rig's cgroup, labelled
    // through the inventory by what its path says (pod uid or container id).
    let collector = Collector::discover(HostPaths::default(), FileCache::new(16))?;
    let discovery = Discovery {
        roots: vec![daemon.cgroup_root()],
        ..Discovery::default()
    };
    let mut joined = Vec::new();
    for found in collector.list(&discovery)? {
        let labels = match &found.kind {
            CgroupKind::KubePod { uid } => inventory
                .lookup_pod(uid)
                .map(|p| (p.pod.clone(), String::new())),
            CgroupKind::KubeContainer { id, .. } => inventory
                .lookup(id)
                .map(|c| (c.pod.clone(), c.container.clone())),
            _ => None,
        };
        joined.push((found.path, labels));
    }
    let pod_path = daemon.pod_cgroup(&pod);
    let web = |container: &str| Some(("web-0".to_string(), container.to_string()));
    let mut expected = vec![
        (pod_path.clone(), web("")),
        (format!("{pod_path}/{sandbox}"), web("")),
        (format!("{pod_path}/{app}"), web("app")),
        (format!("{pod_path}/{sidecar}"), web("sidecar")),
    ];
    expected.sort();
    joined.sort();
    assert_eq!(joined, expected);

    // A removed container is gone after the next refresh; the rest stays.
    daemon.remove_container(&app)?;
    runtime.block_on(inventory.refresh())?;
    assert!(inventory.lookup(&app).is_none());
    assert!(inventory.lookup(&sidecar).is_some());
    assert!(inventory.lookup_pod(&uid).is_some());
    assert_eq!(inventory.snapshot().len(), 2);

    // Dropping the daemon leaves no shim, cgroup or socket of its behind, and an inventory
    // whose runtime is gone is empty after its next refresh.
    let socket = daemon.socket().to_path_buf();
    let parent = app_cgroup.parent().context("cgroup parent")?.to_path_buf();
    drop(daemon);
    let err = runtime
        .block_on(inventory.refresh())
        .expect_err("containerd is gone");
    ensure!(err.is_unavailable(), "{err}");
    ensure!(!inventory.is_connected());
    ensure!(inventory.snapshot().is_empty());
    ensure!(inventory.lookup(&sidecar).is_none());
    ensure!(!parent.exists(), "{} left behind", parent.display());
    ensure!(!socket.exists(), "{} left behind", socket.display());
    let shims = rig::shims_serving(&socket);
    ensure!(shims.is_empty(), "shims left running: {shims:?}");
    Ok(())
}

#[test]
fn absent_socket_gives_an_empty_inventory_and_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("containerd.sock");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let err = runtime
        .block_on(CriClient::connect(&socket))
        .expect_err("nothing at the socket path");
    assert!(matches!(err, CriError::SocketMissing { .. }), "{err}");
    assert!(
        err.to_string().contains(&socket.display().to_string()),
        "{err}"
    );
    let inventory = {
        let _runtime = runtime.enter();
        Inventory::start(&socket, NEVER)?
    };
    refreshed(&inventory, 1)?;
    assert!(!inventory.is_connected());
    assert!(inventory.lookup("0123456789abcdef").is_none());
    assert!(inventory.lookup_pod("some-uid").is_none());
    assert!(inventory.snapshot().is_empty());
    Ok(())
}

/// Records what containerd answers for a kubelet-like pod (one container created by image name,
/// one by image id, as the kubelet does) as the JSON fixtures of proclens-cri's unit tests:
/// `ListContainers`, `ListPodSandbox` and `ListImages`. Run it to re-record (after a containerd
/// upgrade, say) and commit the result:
/// `cargo test -p proclens-tests --test integration -- --ignored cri::record_fixtures`.
#[test]
#[ignore = "writes cri/fixtures; run by hand to re-record"]
fn record_fixtures() -> Result<()> {
    rig::preflight()?;
    let daemon = ContainerdDaemon::start()?;
    let pod = PodSpec::kubelet("shop", "web-0", &[("app", "web")]);
    let sandbox = daemon.run_pod(&pod)?;
    let kubelet_labels = |container: &str| {
        labels(&[
            ("io.kubernetes.container.name", container),
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", &pod.uid),
        ])
    };
    let image_id = daemon.image_id(BUSYBOX_IMAGE)?;
    daemon.start_container(&sandbox, &sleeper("app", &image_id, kubelet_labels("app")))?;
    daemon.start_container(&sandbox, &sleeper("by-name", BUSYBOX_IMAGE, HashMap::new()))?;
    let client = daemon.client();
    let version = daemon.block_on(client.version())?;
    let (containers, sandboxes, images) = daemon.block_on(async {
        tokio::try_join!(
            client.list_containers(),
            client.list_sandboxes(),
            client.list_images()
        )
    })?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cri/fixtures")
        // Debian's version is 1.6.20~ds1: the upstream part names the directory.
        .join(format!(
            "containerd-{}",
            version
                .runtime_version
                .split('~')
                .next()
                .unwrap_or_default()
        ));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    for (file, json) in [
        (
            "list_containers.json",
            serde_json::to_string_pretty(&containers)?,
        ),
        (
            "list_sandboxes.json",
            serde_json::to_string_pretty(&sandboxes)?,
        ),
        ("list_images.json", serde_json::to_string_pretty(&images)?),
    ] {
        std::fs::write(dir.join(file), json + "\n")
            .with_context(|| format!("write {}/{file}", dir.display()))?;
    }
    eprintln!("recorded {}", dir.display());
    Ok(())
}
