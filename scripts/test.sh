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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
