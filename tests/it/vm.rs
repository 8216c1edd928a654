//! The cgroup v2 stage: the host is cgroup v1, so this boots one cgroup v2 VM
//! (`proclens_tests::rig::vm`) and runs every program in [`v2_programs`] inside it, first of all
//! this integration suite itself. The test fails with the inner failures (test names and panic
//! messages) when a program fails or the VM does not finish.

use std::path::PathBuf;

use anyhow::{Context, Result};
use proclens_tests::rig;
use proclens_tests::rig::vm::{self, V2Vm, VmProgram};

/// Tests of this suite that do not run in the VM (libtest `--skip` filters), and why.
const NOT_IN_VM: [(&str, &str); 7] = [
    ("vm::", "the VM stage itself (no VM inside the VM)"),
    (
        "container::",
        "runc and the container tools are not in the VM",
    ),
    ("rig::bare_runc_container", "runc is not in the VM"),
    (
        "cri::inventory_follows_real_containerd",
        "containerd, runc and the CNI plugins are not in the VM",
    ),
    (
        "exporter::a_containerd_pod",
        "containerd, runc and the CNI plugins are not in the VM",
    ),
    (
        "rig::containerd_",
        "containerd, runc and the CNI plugins are not in the VM",
    ),
    (
        "packaging::",
        "systemd-analyze is not in the VM, and the unit file does not depend on the cgroup version",
    ),
];

/// Every program the cgroup v2 VM runs, in order. Later v2 tests add their programs here, so
/// all of them share one boot.
fn v2_programs() -> Result<Vec<VmProgram>> {
    let exe = std::env::current_exe().context("the integration test binary's path")?;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().context("tests/ has a parent")?;
    // PROCLENS_VM_FILTER narrows the run to the tests whose names contain it (while working
    // on one module; the suite's own run leaves it unset).
    let filter = std::env::var("PROCLENS_VM_FILTER").ok();
    let integration = VmProgram::new("integration", exe)
        .args(["--test-threads=2", "--show-output"])
        .args(filter.as_deref())
        .args(NOT_IN_VM.iter().flat_map(|(filter, _)| ["--skip", filter]))
        // As under cargo: the package directory is the working directory.
        .current_dir(&manifest)
        // errors.rs builds its fake cgroup tree from the v2 fixtures.
        .file(workspace.join("cgroup/fixtures/v2"))
        // dashboard.rs checks the Grafana dashboard against the exporter's scrapes.
        .file(workspace.join("packaging/grafana"));
    Ok(vec![integration])
}

#[test]
fn cgroup_v2_suite() -> Result<()> {
    if std::env::var_os(vm::IN_VM_ENV).is_some() {
        eprintln!("!!! SKIPPED vm::cgroup_v2_suite: already inside the VM");
        return Ok(());
    }
    proclens_tests::rig::preflight()?;
    for (filter, why) in NOT_IN_VM {
        vm::note(&format!(
            "!!! vm: integration skips {filter} in the VM: {why}"
        ));
    }
    let mut machine = V2Vm::new()?;
    // The exporter's tests: the exporter, their workload, a real Prometheus (and promtool), and
    // iproute2 for network namespaces. The env variables find them, as on the host.
    for (var, name) in [
        ("PROCLENS_EXPORTER_BIN", "proclens-exporter"),
        ("PROCLENS_WORKLOAD_BIN", "proclens-workload"),
    ] {
        let path = rig::find_binary(var, name)?;
        machine = machine
            .env(var, path.to_str().context("binary path is not UTF-8")?)
            .binary(path);
    }
    for host_tool in ["/usr/bin/prometheus", "/usr/bin/promtool", "/usr/sbin/ip"] {
        machine = machine.binary(host_tool);
    }
    for program in v2_programs()? {
        machine = machine.program(program);
    }
    let run = machine.run()?;
    run.report();
    run.check()
}
