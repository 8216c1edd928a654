#!/usr/bin/env bash
# Builds proclens and runs the whole agent in the foreground with its defaults: proclens-fused
# mounted at /var/lib/proclens, and proclens-exporter serving every container's metrics on
# 0.0.0.0:9639 (/metrics, /healthz). Ctrl-C or SIGTERM stops both (fused unmounts). Root, Debian 12.
# Arguments go to proclens-fused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p proclens-fused -p proclens-exporter

./target/release/proclens-exporter &
exporter=$!
./target/release/proclens-fused "$@" &
fused=$!
stop() {
  kill -TERM "$fused" "$exporter" 2>/dev/null || true
}
trap stop INT TERM
# Whichever stops first (a signal, or one daemon failing) stops the other; the first exit status
# is the script's.
status=0
wait -n "$fused" "$exporter" || status=$?
stop
wait "$fused" 2>/dev/null || true
wait "$exporter" 2>/dev/null || true
exit "$status"
