#!/bin/bash
# Build the lab guest's root filesystem as ONE uncompressed initramfs (no root disk), cached.
#
#   hw-tests/lab/build-rootfs.sh        (after build-modules.sh)
#
# Debian bookworm minbase (mmdebstrap) + zfsutils-linux pinned to the module version, udev,
# qemu-guest-agent, openssh-server/-client, netcat/socat/ipmitool, busybox init (guest/inittab, guest/rc),
# the kernel-module closure the guest loads and zfs.ko/spl.ko.
# Output: $TANDEM_LAB_DIR/cache/<kernel-abi>-<zfs-version>/{initrd.cpio,rootfs.done}
# It is rebuilt when this script, guest/* or the modules change (a hash is recorded in rootfs.done).
set -euo pipefail
. "$(dirname "$0")/common.sh"

# modules the guest may load (their dependency closure is copied)
GUEST_MODULES="zfs spl virtio_pci virtio_blk virtio_net virtio_console virtio_rng 9p 9pnet_virtio loop
  softdog i6300esb ipmi_si ipmi_devintf ipmi_watchdog ipmi_poweroff ipmi_msghandler"
GUEST_PACKAGES="kmod,udev,systemd-standalone-sysusers,iproute2,iputils-ping,procps,psmisc,socat,netcat-openbsd,
ipmitool,qemu-guest-agent,busybox-static,openssh-server,openssh-client,util-linux,xxd,
libcmap4,libquorum5,libvotequorum8,libcpg4,libcfg7,libcorosync-common4,libqb100,corosync"

recipe_hash() {
  cat "$0" "$LAB_SCRIPTS/common.sh" "$LAB_SCRIPTS"/guest/* "$CACHE/modules.done" | sha256sum | cut -c1-16
}

main() {
  need_root
  if [ -n "${TANDEM_LAB_KERNEL_ABI:-}" ] && [ -n "${TANDEM_LAB_ZFS_VERSION:-}" ]; then
    KABI=$TANDEM_LAB_KERNEL_ABI ZFSVER=$TANDEM_LAB_ZFS_VERSION; set_key
  else
    ensure_backports_source; resolve_versions
  fi
  [ -e "$CACHE/modules.done" ] || die "no modules for $KEY: run build-modules.sh (or lab.sh build) first"
  HASH=$(recipe_hash)
  if [ -e "$CACHE/rootfs.done" ] && grep -qx "RECIPE=$HASH" "$CACHE/rootfs.done" && [ -e "$CACHE/initrd.cpio" ]; then
    log "rootfs already built: $CACHE/initrd.cpio"
    write_current
    return 0
  fi
  log "building the guest rootfs for $KEY"
  ensure_packages mmdebstrap cpio kmod
  R=$LAB_DIR/work/rootfs-$KEY
  step kernel-download ensure_kernel_tree
  step mmdebstrap run_mmdebstrap
  step trim trim_rootfs
  step module-closure add_modules
  step guest-init add_init
  step pack pack_initrd
  printf 'RECIPE=%s\nKABI=%s\nZFSVER=%s\nBUILT=%s\n' "$HASH" "$KABI" "$ZFSVER" "$(date -Is)" > "$CACHE/rootfs.done"
  write_current
  # shellcheck disable=SC2016 # dpkg-query formats, not shell expansions
  log "rootfs $(du -sh "$R" | cut -f1), initrd.cpio $(du -sh "$CACHE/initrd.cpio" | cut -f1); $(chroot "$R" dpkg-query -W -f='${Package} ${Version}' zfsutils-linux)"
  rm -rf "$R"
}

run_mmdebstrap() {
  local zfs_pins="" p
  for p in $(zfs_user_packages); do zfs_pins+="$p=$ZFSVER,"; done
  rm -rf "$R"
  mmdebstrap --mode=root --variant=minbase \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --include="$zfs_pins${GUEST_PACKAGES//$'\n'/}" \
    bookworm "$R" \
    "deb $MIRROR bookworm main contrib" \
    "deb $MIRROR bookworm-updates main contrib" \
    "deb $MIRROR bookworm-backports main contrib" \
    "deb http://deb.debian.org/debian-security bookworm-security main" > "$LAB_DIR/work/mmdebstrap.log" 2>&1 \
    || { tail -30 "$LAB_DIR/work/mmdebstrap.log" >&2; return 1; }
  local got
  # shellcheck disable=SC2016
  got=$(chroot "$R" dpkg-query -W -f='${Version}' zfsutils-linux)
  [ "$got" = "$ZFSVER" ] || die "zfsutils-linux in the rootfs is $got, modules are $ZFSVER"
}

# ~60 MB less to unpack at every boot; nothing here is used by the lab
trim_rootfs() {
  rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/usr/share/{doc,man,locale,info}/* \
         "$R"/usr/share/perl "$R"/usr/lib/x86_64-linux-gnu/perl "$R"/usr/lib/x86_64-linux-gnu/libperl.so* \
         "$R"/usr/lib/udev/hwdb.bin "$R"/etc/udev/hwdb.bin "$R"/usr/lib/python3* \
         "$R"/usr/share/zoneinfo "$R"/usr/share/bash-completion
}

add_modules() {
  local stage=$LAB_DIR/work/modstage-$KEY m p rel
  rm -rf "$stage"; mkdir -p "$stage/lib/modules"
  cp -a "$KROOT/lib/modules/$KABI" "$stage/lib/modules/"
  mkdir -p "$stage/lib/modules/$KABI/updates/dkms"
  cp "$CACHE"/modules/*.ko "$stage/lib/modules/$KABI/updates/dkms/"
  depmod -b "$stage" "$KABI"
  rm -rf "$R/lib/modules"; mkdir -p "$R/lib/modules/$KABI"
  for p in modules.order modules.builtin modules.builtin.modinfo; do
    cp "$stage/lib/modules/$KABI/$p" "$R/lib/modules/$KABI/"
  done
  for m in $GUEST_MODULES; do
    modprobe -d "$stage" -S "$KABI" --show-depends "$m" | awk '$1=="insmod"{print $2}'
  done | sort -u | while read -r p; do
    rel=${p#"$stage"}; mkdir -p "$R$(dirname "$rel")"; cp "$p" "$R$rel"
  done
  depmod -b "$R" "$KABI"
  rm -rf "$stage"
}

add_init() {
  mkdir -p "$R/etc/tandem-lab"
  install -m 0755 "$LAB_SCRIPTS/guest/rc" "$R/etc/tandem-lab/rc"
  install -m 0644 "$LAB_SCRIPTS/guest/inittab" "$R/etc/inittab"
  ln -sf /bin/busybox "$R/sbin/init"
  echo tandem-lab > "$R/etc/hostname"
  printf '%s\n' "$KABI $ZFSVER" > "$R/etc/tandem-lab/versions"
}

pack_initrd() {
  (cd "$R" && find . -xdev | LC_ALL=C sort | cpio -o -H newc --quiet) > "$CACHE/initrd.cpio.tmp"
  mv "$CACHE/initrd.cpio.tmp" "$CACHE/initrd.cpio"
}

t_start=$(date +%s.%N)
main "$@"
log "$(printf 'build-rootfs total %.1f s' "$(elapsed "$t_start")")"
