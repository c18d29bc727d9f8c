#!/bin/bash
# Provision everything the end-to-end harness needs; idempotent and fast when cached.
#
#   scripts/provision.sh            provision (host packages, Go modules, sid rootfs)
#   scripts/provision.sh --check    only say what is missing; exit 1 if anything is
#
# What it installs and where:
#   - host packages, from the host's own release only (apt-get -t <codename>, bookworm on
#     Debian 12): mmdebstrap, and tshark to read the emulated wire's pcap (its debconf
#     question, setuid dumpcap for non-root users, is answered no). Never sid/trixie
#     packages on the host (e2e-harness.md 0.1).
#   - Go module dependencies of the repo (go mod download, into the Go module cache).
#   - a Debian sid rootfs (QEMU >= 10.1 with vfio-user-pci, the sid kernel binary and its
#     modules, the matching headers, gcc/make, busybox-static) in
#     ${MYRIEMU_CACHE:-/var/cache/myriemu}/rootfs-<key>, with a symlink "rootfs" to it.
#     <key> is a hash of scripts/rootfs-packages.txt, scripts/rootfs-kernel-hook.sh and the
#     mmdebstrap options below: change any of them and the rootfs is rebuilt. The build goes
#     to a temporary directory that is renamed into place only after every check passed, so
#     a partial build is never used; .myriemu-stamp inside records the versions found.
#
# Nothing here needs a mirror name: mmdebstrap uses Debian's default mirror.
# Environment: MYRIEMU_CACHE (cache dir), MYRIEMU_REBUILD=1 (force a rootfs rebuild).
set -euo pipefail

say() { echo "myriemu-provision: $*"; }
die() {
	echo "myriemu-provision: error: $*" >&2
	exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${MYRIEMU_CACHE:-/var/cache/myriemu}
pkglist=$here/rootfs-packages.txt
hook=$here/rootfs-kernel-hook.sh
check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# Bump when the layout of the cached rootfs or its stamp changes.
format=1
packages=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$pkglist" | tr -d ' \t' | paste -sd, -)
mmdebstrap_opts=(
	--variant=minbase --mode=root
	# The archive may be a frozen snapshot whose Release files look expired (0.2).
	--aptopt='Acquire::Check-Valid-Until "false"'
	--aptopt='APT::Install-Recommends "false"'
	--dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-exclude=/usr/share/man/*'
	--dpkgopt='path-exclude=/usr/share/locale/*'
	--dpkgopt='path-exclude=/usr/share/info/*'
)
key=$({
	echo "format=$format"
	printf '%s\n' "${mmdebstrap_opts[@]}"
	echo "packages=$packages"
	cat "$hook"
} | sha256sum | cut -c1-16)
rootfs=$cache/rootfs-$key
stamp=$rootfs/.myriemu-stamp

host_codename() {
	# shellcheck disable=SC1091
	(. /etc/os-release && echo "${VERSION_CODENAME:-}")
}

rootfs_ok() {
	[ -f "$stamp" ] && grep -qx "key=$key" "$stamp"
}

# --check: say exactly what is missing, change nothing.
if [ "$check_only" = 1 ]; then
	missing=0
	[ "$(id -u)" = 0 ] || {
		say "missing: root (the harness uses mmdebstrap --mode=root, chroot and unshare)"
		missing=1
	}
	command -v go >/dev/null || {
		say "missing: go in PATH"
		missing=1
	}
	command -v mmdebstrap >/dev/null || {
		say "missing: host package mmdebstrap (scripts/provision.sh installs it)"
		missing=1
	}
	command -v tshark >/dev/null || {
		say "missing: host package tshark (scripts/provision.sh installs it)"
		missing=1
	}
	rootfs_ok || {
		say "missing: sid rootfs $rootfs (scripts/provision.sh builds it, about 2 min)"
		missing=1
	}
	[ "$missing" = 0 ] && say "nothing missing; rootfs $rootfs"
	exit "$missing"
fi

[ "$(id -u)" = 0 ] || die "must run as root: the harness uses mmdebstrap --mode=root, chroot and unshare (try: sudo make test)"
command -v go >/dev/null || die "go not found in PATH (Go $(sed -n 's/^go //p' "$repo/go.mod") or newer is needed)"

t0=$SECONDS

# 1. Host packages, from the host's own release only.
host_pkgs=()
if ! command -v mmdebstrap >/dev/null || ! command -v unshare >/dev/null; then
	host_pkgs+=(mmdebstrap util-linux)
fi
# tshark reads the emulated wire's pcap (make demo, TestMyri10gePcap).
command -v tshark >/dev/null || host_pkgs+=(tshark)
# zstd unpacks the guest kernel once, so `myriemu run` boots it directly (PVH).
command -v zstd >/dev/null || host_pkgs+=(zstd)
if [ ${#host_pkgs[@]} -gt 0 ]; then
	codename=$(host_codename)
	[ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release"
	say "installing host packages from $codename: ${host_pkgs[*]}"
	# wireshark-common asks whether non-root users may capture: no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections ||
		die "debconf-set-selections failed"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "$codename" --no-install-recommends \
		"${host_pkgs[@]}" >/dev/null || die "apt-get install -t $codename ${host_pkgs[*]} failed"
fi

# 2. Go module dependencies.
say "downloading Go modules (go mod download)"
(cd "$repo" && go mod download) || die "go mod download failed"

# 3. The sid rootfs. One provisioner at a time per cache (several checkouts may share it).
mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
	say "waiting for another provisioner holding $cache/.lock"
	flock 9
fi

mounted_under() { # exit 0 if anything is mounted at or below $1
	awk -v p="$1" '$2 == p || index($2, p "/") == 1 { found = 1 } END { exit !found }' /proc/mounts
}

remove_tree() {
	if mounted_under "$1"; then
		die "refusing to remove $1: something is mounted below it (see /proc/mounts)"
	fi
	rm -rf --one-file-system "$1"
}

if [ "${MYRIEMU_REBUILD:-0}" = 1 ] && [ -d "$rootfs" ]; then
	say "MYRIEMU_REBUILD=1: removing cached rootfs $rootfs"
	remove_tree "$rootfs"
fi

if rootfs_ok; then
	say "sid rootfs cached: $rootfs ($(grep -E '^(qemu|kernel_abi)=' "$stamp" | paste -sd' ' -))"
else
	# Leftovers of an interrupted build are never used; remove them.
	for d in "$cache"/tmp-rootfs-* "$rootfs"; do
		[ -e "$d" ] || continue
		say "removing partial rootfs $d"
		remove_tree "$d"
	done
	tmp=$cache/tmp-rootfs-$key.$$
	log=$cache/rootfs-build.log
	say "building sid rootfs (first run, ~2 min; log: $log)..."
	say "  packages: $packages (+ kernel binary and modules by $hook)"
	tb=$SECONDS
	# mmdebstrap mounts /dev and /proc inside the target; a private mount namespace makes
	# sure none of them outlives the build, even if it is killed.
	set +e
	unshare --mount --propagation private -- \
		mmdebstrap "${mmdebstrap_opts[@]}" --include="$packages" --customize-hook="$hook" \
		sid "$tmp" 2>&1 | tee "$log" | while IFS= read -r line; do
		case $line in
		I:* | E:* | W:* | rootfs-kernel-hook:*)
			printf 'myriemu-provision:   [%3ds] %s\n' $((SECONDS - tb)) "$line"
			;;
		esac
	done
	rc=${PIPESTATUS[0]}
	set -e
	if [ "$rc" != 0 ]; then
		[ -e "$tmp" ] && remove_tree "$tmp"
		die "mmdebstrap failed (exit $rc); last lines of $log:
$(tail -n 20 "$log")"
	fi

	say "checking the new rootfs"
	abi=$(ls "$tmp/usr/lib/modules" 2>/dev/null | head -n1)
	[ -n "$abi" ] && [ -f "$tmp/usr/lib/modules/$abi/vmlinuz" ] || die "no kernel in $tmp/usr/lib/modules"
	[ -d "$tmp/usr/lib/modules/$abi/build" ] || [ -d "$tmp/usr/src/linux-headers-$abi" ] ||
		die "no headers for kernel $abi"
	for f in usr/bin/qemu-system-x86_64 usr/bin/busybox usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; do
		[ -e "$tmp/$f" ] || die "missing $f in the new rootfs"
	done
	R=$tmp
	qemu_help=$(QEMU_MODULE_DIR=$R/usr/lib/x86_64-linux-gnu/qemu \
		"$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
		--library-path "$R/usr/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu/systemd" \
		"$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -device help 2>&1) ||
		die "sid QEMU does not run through sid's ld.so: $qemu_help"
	grep -q '"vfio-user-pci"' <<<"$qemu_help" || die "sid QEMU has no vfio-user-pci device"
	ver() { dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Version}' "$1"; }
	{
		echo "key=$key"
		echo "format=$format"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "qemu=$(ver qemu-system-x86)"
		echo "kernel_abi=$abi"
		echo "kernel=$(ver "linux-binary-$abi")"
		echo "busybox=$(ver busybox-static)"
		echo "gcc=$(ver gcc)"
		echo "libc=$(ver libc6)"
		echo "packages=$packages"
	} >"$tmp/.myriemu-stamp"
	mv -T "$tmp" "$rootfs"
	say "sid rootfs built in $((SECONDS - tb)) s, $(du -sh --one-file-system "$rootfs" | cut -f1): $rootfs"
	sed 's/^/myriemu-provision:   /' "$stamp" | grep -E 'qemu=|kernel_abi=|busybox=|gcc='
fi

# Point "rootfs" at the current key; drop rootfs trees of other keys.
ln -sfn "rootfs-$key" "$cache/rootfs.new"
mv -T "$cache/rootfs.new" "$cache/rootfs"
for d in "$cache"/rootfs-*; do
	[ -d "$d" ] && [ "$d" != "$rootfs" ] || continue
	say "removing stale rootfs $d"
	remove_tree "$d"
done

say "ready in $((SECONDS - t0)) s: rootfs $cache/rootfs -> rootfs-$key"
