#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs system packages, checks
# formatting and lints, builds, then runs every unit and integration test (real FUSE mounts, real
# cgroups, real runc containers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== build"
cargo build --locked --workspace --all-targets
echo "== tests"
export PROCLENS_FUSED_BIN="$PWD/target/debug/proclens-fused"
cargo test --locked --workspace --no-fail-fast
