#!/usr/bin/env bash
# Capture verbatim cgroup v2 + /proc files from a real Debian kernel booted in
# QEMU (TCG, no KVM needed) into cgroup/fixtures/v2/<kernel major.minor>/.
#
# Steps (all from scratch, kernel download cached):
#   1. tests/vm/kernel.sh (shared with the VM rig) fetches the versioned
#      linux-image-*-cloud-amd64 package into $CACHE once and stages the modules
#      we need (virtio_pci + virtio_blk for a scratch disk, zram for swap);
#   2. build a busybox initramfs in a temp dir with those modules and /init;
#   3. boot it under `timeout`; /init creates a cgroup with known limits, runs a
#      workload in it, and prints every file between marker lines;
#   4. split the console log into one fixture file per kernel file.
#
# Needs: write access to $CACHE (root for the default /var/cache path), apt,
# dpkg, qemu-system-x86, busybox-static, cpio, gzip, awk (xz/zstd only if the
# kernel package ships compressed modules). No KVM needed; a run takes ~25 s.
#
# Usage: tests/vm/capture-v2-fixtures.sh [outdir]
# Env:   PROCLENS_VM_CACHE  kernel cache dir   (default /var/cache/proclens-vm)
#        KERNEL_PKG         versioned package  (default: dependency of
#                                               linux-image-cloud-amd64)
#        KEEP_TMP=1         keep the build dir (initrd, console log)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${PROCLENS_VM_CACHE:-/var/cache/proclens-vm}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}

# Known limits (documented in cgroup/fixtures/README.md; tests assert on them).
MEM_MAX=268435456        # 256 MiB
MEM_HIGH=201326592       # 192 MiB
SWAP_MAX=134217728       # 128 MiB
CPU_MAX="50000 100000"   # 0.5 CPU
CPUSET_CPUS=0
ZRAM_SIZE=256M
TMPFS_FILL_MB=224        # > memory.high, < memory.max: forces swap-out to zram

for t in apt-get apt-cache dpkg qemu-system-x86_64 busybox cpio gzip awk; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
BUSYBOX=$(command -v busybox)
! command -v file >/dev/null || file -L "$BUSYBOX" | grep -q 'statically linked' ||
    echo "warning: $BUSYBOX may not be static (install busybox-static)" >&2

# --- 1. kernel + modules (shared with the VM rig: tests/vm/kernel.sh) ----------------------
WORK=$(mktemp -d /tmp/proclens-v2-capture.XXXXXX)
[[ ${KEEP_TMP:-0} = 1 ]] || trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp,mods}
cp "$BUSYBOX" "$ROOT/bin/busybox"
# virtio_pci/virtio_blk: scratch disk /dev/vda for io.stat.
# zram (+ zsmalloc) and lzo-rle (zram's default compressor): swap.
# kernel.sh prints vmlinuz=, release= and modules= (load order) lines.
MANIFEST=$(PROCLENS_VM_CACHE=$CACHE "$REPO/tests/vm/kernel.sh" "$ROOT/mods" \
    virtio_pci virtio_blk lzo-rle zram)
VMLINUZ=$(sed -n 's/^vmlinuz=//p' <<<"$MANIFEST")
KREL=$(sed -n 's/^release=//p' <<<"$MANIFEST")
read -r -a LOAD_ORDER <<<"$(sed -n 's/^modules=//p' <<<"$MANIFEST")"
KMAJMIN=$(echo "$KREL" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
OUT=${1:-$REPO/cgroup/fixtures/v2/$KMAJMIN}
echo "kernel: $KREL -> $OUT"
echo "modules: ${LOAD_ORDER[*]}"

# --- 2. initramfs ------------------------------------------------------------
# Files to print, as "fixture-name path" pairs. PID is replaced inside the VM
# by the workload's pid, CGDIR by the fixture cgroup directory.
cat > "$ROOT/files.txt" <<'EOF'
memory.max CGDIR/memory.max
memory.high CGDIR/memory.high
memory.current CGDIR/memory.current
memory.swap.max CGDIR/memory.swap.max
memory.swap.current CGDIR/memory.swap.current
memory.stat CGDIR/memory.stat
memory.events CGDIR/memory.events
memory.pressure CGDIR/memory.pressure
cpu.max CGDIR/cpu.max
cpu.stat CGDIR/cpu.stat
cpu.weight CGDIR/cpu.weight
cpu.pressure CGDIR/cpu.pressure
cpuset.cpus CGDIR/cpuset.cpus
cpuset.cpus.effective CGDIR/cpuset.cpus.effective
cpuset.mems.effective CGDIR/cpuset.mems.effective
io.stat CGDIR/io.stat
io.pressure CGDIR/io.pressure
pids.current CGDIR/pids.current
pids.max CGDIR/pids.max
cgroup.procs CGDIR/cgroup.procs
cgroup.threads CGDIR/cgroup.threads
cgroup.controllers CGDIR/cgroup.controllers
root-cpu.stat /sys/fs/cgroup/cpu.stat
root-io.stat /sys/fs/cgroup/io.stat
proc-self-mountinfo /proc/self/mountinfo
proc-pid-cgroup /proc/PID/cgroup
proc-pid-stat /proc/PID/stat
proc-pid-status /proc/PID/status
proc-meminfo /proc/meminfo
proc-stat /proc/stat
proc-cpuinfo /proc/cpuinfo
proc-uptime /proc/uptime
proc-loadavg /proc/loadavg
proc-swaps /proc/swaps
proc-diskstats /proc/diskstats
proc-pressure-cpu /proc/pressure/cpu
proc-pressure-memory /proc/pressure/memory
proc-pressure-io /proc/pressure/io
EOF

cat > "$ROOT/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=1G tmpfs /tmp
# same options systemd uses, so mountinfo looks like a real host
mount -t cgroup2 -o nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
echo 1 > /proc/sys/kernel/printk     # keep kernel messages off the console
log() { echo "CAPTURE: \$*"; }

for m in ${LOAD_ORDER[*]}; do insmod /mods/\$m.ko || log "insmod \$m failed"; done
sleep 1   # let virtio_blk probe /dev/vda

# zram swap (memory.swap.current / /proc/swaps become non-trivial)
if [ -e /sys/block/zram0 ]; then
    echo $ZRAM_SIZE > /sys/block/zram0/disksize &&
        mkswap /dev/zram0 >/dev/null && swapon /dev/zram0 || log "zram swap failed"
else
    log "no zram0"
fi

echo "+cpu +memory +cpuset +io +pids" > /sys/fs/cgroup/cgroup.subtree_control
CG=/sys/fs/cgroup/fixture
mkdir \$CG
echo $MEM_MAX > \$CG/memory.max
echo $MEM_HIGH > \$CG/memory.high
echo $SWAP_MAX > \$CG/memory.swap.max
echo "$CPU_MAX" > \$CG/cpu.max
echo $CPUSET_CPUS > \$CG/cpuset.cpus

# Workload: join the cgroup, fill tmpfs past memory.high (reclaim pushes
# pages to zram swap), direct IO on the scratch disk, ~2 s CPU spin under
# the 50% quota; then stay alive as 'sleep' so its /proc files can be read.
sh -c '
    echo \$\$ > '\$CG'/cgroup.procs
    dd if=/dev/zero of=/tmp/fill bs=1M count=$TMPFS_FILL_MB 2>/dev/null
    if [ -b /dev/vda ]; then
        dd if=/dev/zero of=/dev/vda bs=1M count=16 oflag=direct 2>/dev/null
        dd if=/dev/vda of=/dev/null bs=1M count=16 iflag=direct 2>/dev/null
    fi
    end=\$((\$(date +%s) + 2)); while [ \$(date +%s) -lt \$end ]; do :; done
    touch /tmp/ready
    exec sleep 100000
' &
P=\$!
i=0; while [ ! -e /tmp/ready ] && [ \$i -lt 600 ]; do sleep 0.2; i=\$((i+1)); done
sleep 1
[ -e /tmp/ready ] || log "workload did not finish"
log "workload pid \$P"

# Print each file between markers. printf adds one '\n' before END so the
# host can restore the exact content (with or without a trailing newline).
while read name path; do
    path=\$(echo "\$path" | sed -e "s|PID|\$P|" -e "s|CGDIR|\$CG|")
    if [ -e "\$path" ]; then
        echo "=====BEGIN \$name====="
        cat "\$path"
        printf '\n=====END %s=====\n' "\$name"
    else
        log "missing \$path"
    fi
done < /files.txt
log "done"
poweroff -f
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1 > "$WORK/initrd.gz")

# --- 3. boot -----------------------------------------------------------------
truncate -s 64M "$WORK/disk.img"
echo "booting (TCG, up to ${BOOT_TIMEOUT}s)..."
timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -machine q35,accel=tcg -cpu max \
    -smp 2 -m 2048 -nographic -no-reboot \
    -kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" \
    -drive file="$WORK/disk.img",format=raw,if=virtio \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    </dev/null > "$WORK/console.raw" 2>&1 || echo "qemu exited with $?" >&2
tr -d '\r' < "$WORK/console.raw" > "$WORK/console.log"
grep -a 'CAPTURE:' "$WORK/console.log" | sed 's/^.*CAPTURE:/  vm:/' || true
grep -aq 'CAPTURE: done' "$WORK/console.log" || {
    echo "capture did not complete; console log: $WORK/console.log" >&2
    KEEP_TMP=1; trap - EXIT; exit 1; }

# --- 4. split ----------------------------------------------------------------
# Between "=====BEGIN x=====" and "=====END x=====" lines; the last line
# before END is the printf-added one, so join with '\n' and drop the final
# newline. Markers are matched anywhere in a line (firmware escape codes).
mkdir -p "$OUT"
awk -v out="$OUT" '
    !inside && match($0, /=====BEGIN [^=]+=====/) {
        name = substr($0, RSTART + 11, RLENGTH - 16); inside = 1; n = 0; next }
    inside && $0 == "=====END " name "=====" {
        f = out "/" name; printf "" > f
        for (i = 1; i <= n; i++) printf "%s%s", buf[i], (i < n ? "\n" : "") > f
        close(f); inside = 0; count++; next }
    inside { buf[++n] = $0 }
    END { printf "wrote %d files\n", count }
' "$WORK/console.log"
echo "$KREL" > "$OUT/uname-r"
echo "fixtures in $OUT"
