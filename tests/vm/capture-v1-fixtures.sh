#!/usr/bin/env bash
# Capture verbatim cgroup v1 + /proc files from the *running host* into
# cgroup/fixtures/v1/<kernel major.minor>/ for parser unit tests.
#
# Requires root and a host with cgroup v1 hierarchies mounted separately under
# /sys/fs/cgroup/{memory,cpu,cpuacct,cpuset,blkio,pids}. Creates a cgroup named
# fixture-capture in each, sets known limits, runs a small workload in it,
# copies the files, then removes the cgroups again.
#
# Usage: sudo tests/vm/capture-v1-fixtures.sh [outdir]
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
KVER=$(uname -r | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
OUT=${1:-$REPO/cgroup/fixtures/v1/$KVER}
CG=/sys/fs/cgroup
NAME=fixture-capture
CONTROLLERS=(memory cpu cpuacct cpuset blkio pids)

# Known limits (documented in cgroup/fixtures/README.md; tests assert on them).
MEM_LIMIT=268435456     # 256 MiB
MEMSW_LIMIT=536870912   # 512 MiB
CFS_QUOTA=50000
CFS_PERIOD=100000
CPUSET_CPUS=0
CPUSET_MEMS=0

mkdir -p "$OUT"
WORKPID=

cleanup() {
    # Kill the workload (its cgroup membership ends with it), then rmdir.
    if [[ -n "$WORKPID" ]] && kill -0 "$WORKPID" 2>/dev/null; then
        kill "$WORKPID" 2>/dev/null || true
        wait "$WORKPID" 2>/dev/null || true
    fi
    for c in "${CONTROLLERS[@]}"; do
        d=$CG/$c/$NAME
        [[ -d $d ]] || continue
        # Move any leftover tasks back to the hierarchy root before removing.
        while read -r p; do echo "$p" > "$CG/$c/cgroup.procs" 2>/dev/null || true; done < "$d/cgroup.procs"
        rmdir "$d" || echo "warning: could not remove $d" >&2
    done
    rm -f /var/tmp/proclens-fixture-io /var/tmp/proclens-fixture-cache
}
trap cleanup EXIT

for c in "${CONTROLLERS[@]}"; do mkdir -p "$CG/$c/$NAME"; done

# Limits. memsw must be >= memory limit, so set memory first.
echo $MEM_LIMIT   > $CG/memory/$NAME/memory.limit_in_bytes
echo $MEMSW_LIMIT > $CG/memory/$NAME/memory.memsw.limit_in_bytes
echo $CFS_PERIOD  > $CG/cpu/$NAME/cpu.cfs_period_us
echo $CFS_QUOTA   > $CG/cpu/$NAME/cpu.cfs_quota_us
echo $CPUSET_CPUS > $CG/cpuset/$NAME/cpuset.cpus
echo $CPUSET_MEMS > $CG/cpuset/$NAME/cpuset.mems

# blkio: since ~6.10 the v1 blkio.throttle.io_service{d,_bytes} counters are
# only updated once blk-throttle is activated on the queue, i.e. some throttle
# rule exists for the device. Set a huge (non-limiting) bps rule on the whole
# disk backing /var/tmp so the counters get populated.
DEV=$(findmnt -no MAJ:MIN -T /var/tmp | tr -d ' ')
if [[ -e /sys/dev/block/$DEV/partition ]]; then
    DEV=$(cat "$(readlink -f /sys/dev/block/$DEV/..)/dev")   # partition -> disk
fi
BLKIO_BPS=1099511627776   # 1 TiB/s: activates accounting, never throttles
echo "$DEV $BLKIO_BPS" > $CG/blkio/$NAME/blkio.throttle.read_bps_device  || echo "warning: blkio read rule failed" >&2
echo "$DEV $BLKIO_BPS" > $CG/blkio/$NAME/blkio.throttle.write_bps_device || echo "warning: blkio write rule failed" >&2

# Workload: a shell that joins every cgroup, produces page cache, direct disk
# IO (on the root block device, via /var/tmp) and some CPU time, then sleeps
# so that we can read its /proc files while it is still a member.
READY=$(mktemp)
bash -c '
    for c in '"${CONTROLLERS[*]}"'; do echo $$ > '"$CG"'/$c/'"$NAME"'/cgroup.procs; done
    dd if=/dev/zero of=/var/tmp/proclens-fixture-cache bs=1M count=50 status=none
    cat /var/tmp/proclens-fixture-cache > /dev/null
    dd if=/dev/zero of=/var/tmp/proclens-fixture-io bs=1M count=20 oflag=direct status=none
    dd if=/var/tmp/proclens-fixture-io of=/dev/null bs=1M iflag=direct status=none
    end=$((SECONDS + 2)); while (( SECONDS < end )); do :; done
    echo ready > '"$READY"'
    exec sleep 600
' &
WORKPID=$!
for _ in $(seq 120); do [[ -s $READY ]] && break; sleep 0.5; done
rm -f "$READY"
sleep 0.5   # let the exec to sleep happen

cp_file() { cat "$1" > "$OUT/$2"; }   # cat: sysfs/procfs sizes are 0/4096

for f in memory.limit_in_bytes memory.usage_in_bytes memory.memsw.limit_in_bytes \
         memory.memsw.usage_in_bytes memory.stat memory.oom_control \
         memory.max_usage_in_bytes memory.failcnt; do
    cp_file $CG/memory/$NAME/$f $f
done
for f in cpu.cfs_quota_us cpu.cfs_period_us cpu.shares cpu.stat; do
    cp_file $CG/cpu/$NAME/$f $f
done
for f in cpuacct.usage cpuacct.stat cpuacct.usage_all cpuacct.usage_percpu \
         cpuacct.usage_user cpuacct.usage_sys; do
    cp_file $CG/cpuacct/$NAME/$f $f
done
for f in cpuset.cpus cpuset.effective_cpus cpuset.mems; do
    cp_file $CG/cpuset/$NAME/$f $f
done
for f in blkio.throttle.io_service_bytes blkio.throttle.io_serviced; do
    cp_file $CG/blkio/$NAME/$f $f
done
for f in pids.current pids.max; do cp_file $CG/pids/$NAME/$f $f; done
cp_file $CG/memory/$NAME/tasks tasks
cp_file $CG/memory/$NAME/cgroup.procs cgroup.procs

# /proc files. The workload pid is the sleeping shell (exec'd into sleep).
cp_file /proc/self/mountinfo proc-self-mountinfo
cp_file /proc/$WORKPID/cgroup proc-pid-cgroup
cp_file /proc/$WORKPID/stat   proc-pid-stat
cp_file /proc/$WORKPID/status proc-pid-status
for f in meminfo stat cpuinfo uptime loadavg swaps diskstats; do
    cp_file /proc/$f proc-$f
done
uname -r > "$OUT/uname-r"
echo "captured into $OUT (workload pid $WORKPID)"
