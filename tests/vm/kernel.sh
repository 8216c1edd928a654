#!/usr/bin/env bash
# The Debian cloud kernel for the cgroup v2 VM, shared by the VM rig (tests/src/rig/vm.rs) and
# capture-v2-fixtures.sh: fetches it once into a cache, then stages the kernel modules a VM needs.
#
# Steps:
#   1. resolve the versioned package (linux-image-6.1.*-cloud-amd64) behind
#      linux-image-cloud-amd64, running `apt-get update` first if apt knows nothing about it;
#   2. unless already cached, `apt-get download` it into $CACHE and `dpkg -x` it there (under a
#      lock, so concurrent test runs download it once);
#   3. copy each requested module and, first, every module it depends on, uncompressed, to
#      MODDIR/<name>.ko. There are no kmod tools and no modules.dep here: dependencies come from
#      the `depends=` string in each module's .modinfo section.
#
# Usage: tests/vm/kernel.sh MODDIR MODULE...
# Prints on stdout, one `key=value` a line (progress and notes go to stderr):
#   vmlinuz=<path of the kernel image in the cache>
#   release=<the kernel's uname -r>
#   modules=<the staged module names in load order, dependencies first>
# Env: PROCLENS_VM_CACHE  cache dir (default /var/cache/proclens-vm)
#      KERNEL_PKG         versioned package to use (default: the dependency of
#                         linux-image-cloud-amd64)
# Needs: apt-get, apt-cache, dpkg, flock, find; xz/zstd only if the package ships compressed
# modules (Debian 12's does not).
set -euo pipefail

CACHE=${PROCLENS_VM_CACHE:-/var/cache/proclens-vm}
[[ $# -ge 1 ]] || { echo "usage: $0 MODDIR MODULE..." >&2; exit 2; }
MODDEST=$1
shift

for t in apt-get apt-cache dpkg flock find; do
    command -v "$t" >/dev/null || { echo "kernel.sh: missing tool: $t" >&2; exit 1; }
done

# --- 1+2. kernel package, cached --------------------------------------------------------------
mkdir -p "$CACHE"
# One fetch at a time: a second test run waits here and then finds the kernel cached.
exec 9>"$CACHE/.lock"
flock 9

# The versioned package linux-image-cloud-amd64 depends on, from apt's local lists.
resolve_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
# The newest kernel already extracted in the cache, for a machine whose apt lists moved on to a
# version it can no longer download.
newest_cached() {
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*-cloud-amd64' |
        sort -V | tail -1
}
# Downloads and extracts package $1 into $CACHE/$1, unless that is already there.
fetch() {
    local pkg=$1 deb
    [[ -d $CACHE/$pkg/boot ]] && return 0
    deb=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -1)
    if [[ -z $deb ]]; then
        echo "kernel.sh: downloading $pkg into $CACHE" >&2
        # As root, apt drops to user _apt, which cannot write to a root-owned cache: download as
        # root outright instead of failing over with a warning. A stale package index names a
        # version the mirror no longer has: refresh it once.
        local get=(apt-get download -q -o APT::Sandbox::User=root "$pkg")
        (cd "$CACHE" && "${get[@]}" >&2) ||
            { apt-get update -qq >&2 && (cd "$CACHE" && "${get[@]}" >&2); } ||
            return 1
        deb=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -1)
    fi
    # Extract beside the final name and rename, so a killed run never leaves half a kernel.
    rm -rf "$CACHE/$pkg.tmp"
    dpkg -x "$deb" "$CACHE/$pkg.tmp"
    mv "$CACHE/$pkg.tmp" "$CACHE/$pkg"
}

if [[ -z ${KERNEL_PKG:-} ]]; then
    KERNEL_PKG=$(resolve_pkg)
    if [[ -z $KERNEL_PKG ]]; then
        echo "kernel.sh: apt knows no linux-image-cloud-amd64; running apt-get update" >&2
        apt-get update -qq >&2
        KERNEL_PKG=$(resolve_pkg)
    fi
fi
if [[ -z $KERNEL_PKG ]]; then
    KROOT=$(newest_cached)
    [[ -n $KROOT ]] || { echo "kernel.sh: cannot resolve the kernel package" >&2; exit 1; }
    echo "kernel.sh: apt cannot resolve the kernel; using cached ${KROOT##*/}" >&2
elif fetch "$KERNEL_PKG"; then
    KROOT=$CACHE/$KERNEL_PKG
else
    KROOT=$(newest_cached)
    [[ -n $KROOT ]] || { echo "kernel.sh: cannot download $KERNEL_PKG" >&2; exit 1; }
    echo "kernel.sh: cannot download $KERNEL_PKG; using cached ${KROOT##*/}" >&2
fi
flock -u 9

VMLINUZ=$(find "$KROOT/boot" -name 'vmlinuz-*' | sort -V | tail -1)
[[ -n $VMLINUZ ]] || { echo "kernel.sh: no vmlinuz in $KROOT/boot" >&2; exit 1; }
KREL=${VMLINUZ##*/vmlinuz-}
MODDIR=$KROOT/lib/modules/$KREL

# --- 3. modules ---------------------------------------------------------------------------------
# Index every module file by its name with `-` written as `_` (the kernel treats them alike).
declare -A MODPATH=()
while IFS= read -r path; do
    name=${path##*/}
    name=${name%%.ko*}
    MODPATH[${name//-/_}]=$path
done < <(find "$MODDIR/kernel" -name '*.ko*')

# Prints module file $1 uncompressed.
mod_cat() {
    case $1 in
        *.xz) xz -dc "$1" ;;
        *.zst) zstd -dc "$1" ;;
        *.gz) gzip -dc "$1" ;;
        *) cat "$1" ;;
    esac
}

mkdir -p "$MODDEST"
declare -A SEEN=()
LOAD_ORDER=()
# Stages module $1 after the modules it depends on.
add_mod() {
    local name=${1//-/_} path deps d
    [[ -n ${SEEN[$name]:-} ]] && return 0
    SEEN[$name]=1
    path=${MODPATH[$name]:-}
    if [[ -z $path ]]; then
        # Not a module file: it must be built into the kernel, or the VM cannot work.
        if grep -qE "/${name//_/[-_]}\.ko\$" "$MODDIR/modules.builtin"; then
            return 0
        fi
        echo "kernel.sh: module $name is neither in $MODDIR nor built in" >&2
        return 1
    fi
    deps=$(mod_cat "$path" | tr '\0' '\n' | grep -a '^depends=' | head -1 | cut -d= -f2)
    for d in ${deps//,/ }; do add_mod "$d"; done
    mod_cat "$path" > "$MODDEST/$name.ko"
    LOAD_ORDER+=("$name")
}
for m in "$@"; do add_mod "$m"; done

echo "vmlinuz=$VMLINUZ"
echo "release=$KREL"
echo "modules=${LOAD_ORDER[*]}"
