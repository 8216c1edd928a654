#!/usr/bin/env bash
# Builds proclens and runs the agent in the foreground with its defaults: proclens-fused mounted at
# /var/lib/proclens (Ctrl-C or SIGTERM unmounts and exits). Root, Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p proclens-fused
exec ./target/release/proclens-fused "$@"
