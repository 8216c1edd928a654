//! The systemd unit: valid for systemd, Type=notify, restart on failure, and starting the binary
//! this suite tests.

use anyhow::{Context, Result};
use proclens_tests::rig::FusedDaemon;
use std::path::Path;
use std::process::Command;

const UNIT: &str = "packaging/systemd/proclens-fused.service";

fn unit_text() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(UNIT);
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

#[test]
fn unit_declares_notify_and_restart() -> Result<()> {
    let text = unit_text()?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for wanted in [
        "Type=notify",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&wanted), "{UNIT} lacks {wanted}");
    }
    let exec = lines
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("no ExecStart")?;
    assert!(exec.contains("proclens-fused"), "{exec}");
    Ok(())
}

#[test]
fn systemd_analyze_verify_is_clean() -> Result<()> {
    // systemd checks that ExecStart's binary exists: point it at the one under test.
    let text = unit_text()?;
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|e| e.split_whitespace().next())
        .context("no ExecStart")?;
    let binary = FusedDaemon::binary()?;
    let dir = tempfile::Builder::new()
        .prefix("proclens-test-unit-")
        .tempdir()?;
    let unit = dir.path().join("proclens-fused.service");
    std::fs::write(&unit, text.replace(exec, &binary.display().to_string()))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .context("run systemd-analyze (package systemd)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("proclens-fused.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze complained: {complaints:?}"
    );
    Ok(())
}
