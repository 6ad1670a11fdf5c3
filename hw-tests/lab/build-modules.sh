#!/bin/bash
# Build the OpenZFS kernel modules (zfs.ko, spl.ko) for Debian's current guest kernel, cached.
#
#   hw-tests/lab/build-modules.sh
#
# Output: $TANDEM_LAB_DIR/cache/<kernel-abi>-<zfs-version>/{vmlinuz,modules/zfs.ko,modules/spl.ko,modules.done}
# A second run with the same versions is a no-op. See common.sh for the environment knobs.
# Needs root on Debian bookworm (installs packages; adds the bookworm-backports source if absent).
set -euo pipefail
. "$(dirname "$0")/common.sh"

host_packages=(build-essential kmod cpio mmdebstrap openipmi ipmitool
               util-linux dpkg-dev ca-certificates)

main() {
  need_root
  step apt-source ensure_backports_source
  resolve_versions
  log "guest kernel $KABI, zfs $ZFSVER, cache $CACHE"
  step qemu ensure_qemu
  if [ -e "$CACHE/modules.done" ]; then
    step host-packages ensure_packages "${host_packages[@]}"
    log "modules already built: $CACHE/modules (delete modules.done to rebuild)"
    return 0
  fi
  step host-packages ensure_packages "${host_packages[@]}" "linux-headers-$KABI"
  step kernel-download ensure_kernel_tree
  step zfs-source fetch_zfs_source
  step zfs-configure zfs_configure
  step zfs-make zfs_make
  install_modules
}

fetch_zfs_source() {
  local dl=$LAB_DIR/work/debs deb
  mkdir -p "$dl"; chmod 777 "$dl"
  deb=$dl/zfs-dkms_${ZFSVER//:/%3a}_all.deb
  [ -e "$deb" ] || (cd "$dl" && "${APT_GET[@]}" download -q "zfs-dkms=$ZFSVER" >/dev/null)
  SRC=$LAB_DIR/work/zfs-src-${ZFSVER//:/_}-$KABI
  rm -rf "$SRC" "$SRC.deb"
  dpkg-deb -x "$deb" "$SRC.deb"
  mv "$SRC.deb"/usr/src/zfs-* "$SRC"
  rm -rf "$SRC.deb"
}

zfs_configure() {
  local kver_common=${KABI%-amd64}-common
  (cd "$SRC" && ./configure --disable-dependency-tracking --prefix=/usr --with-config=kernel \
      --with-linux="/usr/src/linux-headers-$kver_common" \
      --with-linux-obj="/usr/src/linux-headers-$KABI") > "$LAB_DIR/work/zfs-configure.log" 2>&1 \
    || { tail -30 "$LAB_DIR/work/zfs-configure.log" >&2; return 1; }
}

zfs_make() {
  make -C "$SRC/module" -j"$(nproc)" > "$LAB_DIR/work/zfs-make.log" 2>&1 \
    || { tail -30 "$LAB_DIR/work/zfs-make.log" >&2; return 1; }
}

install_modules() {
  mkdir -p "$CACHE"
  rm -rf "$CACHE/modules.tmp"; mkdir -p "$CACHE/modules.tmp"
  find "$SRC/module" -name '*.ko' -exec cp {} "$CACHE/modules.tmp/" \;
  if [ ! -e "$CACHE/modules.tmp/zfs.ko" ] || [ ! -e "$CACHE/modules.tmp/spl.ko" ]; then
    die "zfs.ko/spl.ko not built"
  fi
  strip --strip-debug "$CACHE"/modules.tmp/*.ko
  rm -rf "$CACHE/modules"; mv "$CACHE/modules.tmp" "$CACHE/modules"
  cp "$KROOT/boot/vmlinuz-$KABI" "$CACHE/vmlinuz"
  printf 'KABI=%s\nZFSVER=%s\nBUILT=%s\n' "$KABI" "$ZFSVER" "$(date -Is)" > "$CACHE/modules.done"
  rm -rf "$SRC"
  log "modules: $(du -sh "$CACHE/modules" | cut -f1) in $CACHE/modules ($(cd "$CACHE/modules" && echo *.ko))"
}

t_start=$(date +%s.%N)
main "$@"
log "$(printf 'build-modules total %.1f s' "$(elapsed "$t_start")")"
