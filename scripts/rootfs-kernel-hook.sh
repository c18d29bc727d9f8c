#!/bin/sh
# mmdebstrap --customize-hook for the e2e rootfs: install the kernel image and modules that
# match the installed linux-headers-<abi>, WITHOUT the linux-image-<abi> meta package (it
# pulls dracut/initramfs-tools, systemd-sysv and udev and builds an initrd nobody uses, about
# 35 s; see shared/reference/e2e-harness.md section 1.1). mmdebstrap passes the rootfs as $1.
# The content of this file is part of the rootfs cache key (scripts/provision.sh).
set -eu
R=$1
abi=
for d in "$R"/usr/src/linux-headers-*-amd64; do
	[ -d "$d" ] || continue
	abi=${d##*/linux-headers-}
done
if [ -z "$abi" ]; then
	echo "rootfs-kernel-hook: no linux-headers-<abi>-amd64 under $R/usr/src" >&2
	exit 1
fi
echo "rootfs-kernel-hook: installing linux-binary-$abi linux-modules-$abi"
chroot "$R" apt-get install -y --no-install-recommends "linux-binary-$abi" "linux-modules-$abi"
test -f "$R/usr/lib/modules/$abi/vmlinuz" || {
	echo "rootfs-kernel-hook: $R/usr/lib/modules/$abi/vmlinuz missing after install" >&2
	exit 1
}
# Drop the downloaded .debs: they are not needed once unpacked.
chroot "$R" apt-get clean
