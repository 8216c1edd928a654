//! The systemd units: valid for systemd, Type=notify, restart on failure, and starting the
//! binaries this suite tests.

use anyhow::{Context, Result};
use proclens_tests::rig::{find_binary, FusedDaemon};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each unit, the binary its ExecStart names, and where this suite finds that binary.
fn units() -> Result<Vec<(&'static str, &'static str, PathBuf)>> {
    Ok(vec![
        (
            "packaging/systemd/proclens-fused.service",
            "proclens-fused",
            FusedDaemon::binary()?,
        ),
        (
            "packaging/systemd/proclens-exporter.service",
            "proclens-exporter",
            find_binary("PROCLENS_EXPORTER_BIN", "proclens-exporter")?,
        ),
    ])
}

fn unit_text(unit: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(unit);
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

#[test]
fn units_declare_notify_and_restart() -> Result<()> {
    for (unit, binary_name, _) in units()? {
        let text = unit_text(unit)?;
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for wanted in [
            "Type=notify",
            "Restart=on-failure",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&wanted), "{unit} lacks {wanted}");
        }
        let exec = lines
            .iter()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .with_context(|| format!("{unit}: no ExecStart"))?;
        assert!(exec.contains(binary_name), "{unit}: {exec}");
    }
    Ok(())
}

#[test]
fn systemd_analyze_verify_is_clean() -> Result<()> {
    for (unit, _, binary) in units()? {
        // systemd checks that ExecStart's binary exists: point it at the one under test.
        let text = unit_text(unit)?;
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .and_then(|e| e.split_whitespace().next())
            .with_context(|| format!("{unit}: no ExecStart"))?;
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-unit-")
            .tempdir()?;
        let name = Path::new(unit).file_name().context("unit file name")?;
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace(exec, &binary.display().to_string()))?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .context("run systemd-analyze (package systemd)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{unit}: systemd-analyze verify failed: {stderr}"
        );
        let name = name.to_string_lossy();
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(name.as_ref()))
            .collect();
        assert!(
            complaints.is_empty(),
            "{unit}: systemd-analyze complained: {complaints:?}"
        );
    }
    Ok(())
}

#[test]
fn the_example_exporter_config_is_the_defaults_and_valid() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("packaging/config/exporter.toml");
    let config = proclens_exporter::config::Config::load(&path)?;
    let defaults = proclens_exporter::config::Config::default();
    assert_eq!(config.discovery, defaults.discovery);
    assert_eq!(config.metrics, defaults.metrics);
    assert_eq!(config.cri, defaults.cri);
    assert_eq!(config.fused, defaults.fused);
    assert_eq!(
        config.listen.as_deref(),
        Some(proclens_exporter::config::DEFAULT_LISTEN)
    );
    Ok(())
}
