#!/bin/busybox sh
# /init of the cgroup v2 test VM, built into the initramfs by tests/src/rig/vm.rs: turns the VM
# into a small cgroup v2 host, runs every test program the rig listed, reports on the serial
# console and powers off. It never returns: on any setup error it reports and powers off too.
#
# Files the rig writes beside it:
#   /etc/proclens-vm/config       MODULES (load order), ZRAM_SIZE, DISK, SCRATCH (its mount)
#   /etc/proclens-vm/env          `export` lines for the programs (PATH, PROCLENS_*)
#   /etc/proclens-vm/modules/     <module>.ko for each name in MODULES
#   /etc/proclens-vm/programs/    NN-<name>: one sh script per program, run in NN order
#
# Console protocol, one record a line; the host matches the prefix anywhere in a line, since
# firmware escape sequences may come first:
#   PROCLENS-VM|init|<message>         setup progress, errors (`error: ...`) and what the
#                                      programs left behind (`leftover ...`)
#   PROCLENS-VM|out|<name>|<line>      a line program <name> printed (stdout and stderr)
#   PROCLENS-VM|status|<name>|<code>   its exit status
#   PROCLENS-VM|dmesg|<line>           the kernel log's tail, after a failure
#   PROCLENS-VM|end                    every program ran
set -eu -o pipefail

P='PROCLENS-VM|'
STEP='start'
say() { echo "${P}init|$*"; }

# Runs on every exit of this script: reports a failed setup step with the kernel log's tail,
# then powers off (the host then sees no `end` record and fails the test).
on_exit() {
    rc=$?
    if [ "$STEP" != done ]; then
        say "error: /init failed with status $rc during: $STEP"
        dmesg | tail -n 40 | sed "s/^/${P}dmesg|/" || true
    fi
    sync
    poweroff -f
}
trap on_exit EXIT

# Polls `test ARGS` every 50 ms for up to 10 s; fails naming WHAT.
wait_for() {
    what=$1
    shift
    i=0
    until test "$@"; do
        i=$((i + 1))
        [ "$i" -le 200 ] || { say "error: no $what after 10 s"; return 1; }
        usleep 50000
    done
}

STEP='busybox applets'
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

STEP='mounts'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp stays on the initramfs (already RAM): the suite's binaries are copied in at their host
# paths, and a checkout under /tmp must not be hidden by a mount.
chmod 1777 /tmp
# The options systemd uses, so mountinfo looks like a real v2 host's.
mount -t cgroup2 -o nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot \
    cgroup2 /sys/fs/cgroup
# Kernel messages would interleave with the records; keep only emergencies on the console.
echo 1 > /proc/sys/kernel/printk
. /etc/proclens-vm/config

STEP='modules'
for m in $MODULES; do
    insmod "/etc/proclens-vm/modules/$m.ko"
done
wait_for /dev/fuse -c /dev/fuse
wait_for "$DISK" -b "$DISK"
wait_for zram0 -e /sys/block/zram0/disksize

STEP='zram swap'
# Swap makes memory.swap.* and the swap lines of meminfo and /proc/swaps non-trivial.
echo "$ZRAM_SIZE" > /sys/block/zram0/disksize
mkswap /dev/zram0 > /dev/null
swapon /dev/zram0

STEP='scratch disk'
# An ext2 filesystem on the virtio-blk disk, mounted where TMPDIR points: files the programs
# create go through a real block device, so io.stat and /proc/diskstats count their I/O.
mke2fs -F -m 0 "$DISK" > /dev/null
mkdir -p "$SCRATCH"
mount -t ext2 "$DISK" "$SCRATCH"
chmod 1777 "$SCRATCH"

STEP='network'
# Loopback for the programs' own servers (the exporter, Prometheus), and where iproute2 keeps
# named network namespaces (veth pairs: the exporter's network test).
ip link set lo up
mkdir -p /run/netns

STEP='cgroup controllers'
echo '+cpu +memory +cpuset +io +pids' > /sys/fs/cgroup/cgroup.subtree_control
say "kernel $(uname -r), cpus $(cat /sys/devices/system/cpu/online)," \
    "controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

STEP='programs'
. /etc/proclens-vm/env
failed=0
for prog in /etc/proclens-vm/programs/*; do
    name=${prog##*/}
    name=${name#*-}
    say "running $name"
    # Each stage of a pipeline runs in a subshell: the status goes through a file. awk, not
    # sed: sed holds each line back until it has read the next one, so the last line before a
    # hang would never show.
    { rc=0; sh "$prog" < /dev/null 2>&1 || rc=$?; echo "$rc" > /tmp/.proclens-vm-status; } |
        awk -v p="${P}out|${name}|" '{ print p $0; fflush() }'
    rc=$(cat /tmp/.proclens-vm-status)
    echo "${P}status|${name}|${rc}"
    [ "$rc" = 0 ] || failed=1
done
# What the programs left behind: every test cleans up its cgroups and mounts, so any of these
# is a rig or test bug (the host shows them as warnings).
for d in /sys/fs/cgroup/*/; do
    if [ -d "$d" ]; then say "leftover cgroup ${d%/}"; fi
done
awk '$3 ~ /^fuse/ { print $2 }' /proc/self/mounts | while read -r mnt; do
    say "leftover mount $mnt"
done
if [ "$failed" != 0 ]; then
    dmesg | tail -n 60 | sed "s/^/${P}dmesg|/"
fi

STEP='done'
echo "${P}end"
