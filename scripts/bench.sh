#!/usr/bin/env bash
# The benchmark, as root on Debian 12: builds the whole workspace in release mode, then runs
# proclens-bench (tests/perf/) against the release proclens-fused, lxcfs 5.0.3, the FUSE floor and
# the kernel's /proc. Prints the results table and writes it to target/bench/results-<time>.md.
#
#   ./scripts/bench.sh            # full run: ~23 min (600 s soak included)
#   ./scripts/bench.sh --quick    # ~6 min: shorter points, windows and soak
#   ./scripts/bench.sh --help     # every option
#
# Other work on the machine skews absolute numbers: compare the ratios, which come from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked --workspace
export PROCLENS_FUSED_BIN="$PWD/target/release/proclens-fused"
export PROCLENS_FLOOR_BIN="$PWD/target/release/proclens-floor"
export PROCLENS_BENCH_READER_BIN="$PWD/target/release/proclens-bench-reader"
mkdir -p target/bench
exec ./target/release/proclens-bench --out "target/bench/results-$(date -u +%Y%m%dT%H%M%SZ).md" "$@"
