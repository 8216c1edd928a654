#!/usr/bin/env bash
# Installs every system package proclens's build, agent and test suite need (Debian 12, root).
# Idempotent: packages already present are left alone, so a warm machine pays only for the check.
set -euo pipefail

packages=(
  fuse3            # fusermount3 (manual unmounts), /etc/fuse.conf
  runc             # real OCI containers in the integration tests
  procps           # free, top, vmstat inside the test containers
  util-linux       # unshare, lscpu, nsenter
  iproute2         # ip netns and veth pairs for the exporter's network test
  python3          # os.cpu_count() check inside a container
  nodejs           # os.cpus()/os.totalmem() check inside a container
  busybox-static   # static shell for container rootfs and the v2 VM
  systemd          # systemd-analyze verify of the unit file
  lxcfs            # differential oracle
  stress-ng        # load generator
  qemu-system-x86  # cgroup v2 VM rig
  cpio             # initramfs for the VM rig
  binutils         # strip: debug info out of the VM rig's initramfs
  gcc              # static pause program for the containerd rig's sandbox image
  libc6-dev        # its headers and static libc
  containerd       # CRI labels for the exporter, the control plane's backend
  containernetworking-plugins  # CNI bridge for the containerd rig's pods
  iproute2         # ip link delete: the containerd rig removes its CNI bridge
  protobuf-compiler  # protoc: the CRI and remote_write protos compile at build time
  prometheus       # a real Prometheus scrapes the exporter and receives its remote_write
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The machine image may ship node outside dpkg (e.g. /usr/bin/node from another source): accept it.
if command -v node >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs/}")
fi
want=()
for p in "${missing[@]}"; do [ -n "$p" ] && want+=("$p"); done

if [ "${#want[@]}" -gt 0 ]; then
  echo "install-deps: installing ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${want[@]}"
else
  echo "install-deps: all system packages present"
fi
# lxcfs's package starts a service on systems with systemd; we run it ourselves in tests.
