#!/bin/bash
# Entry point of the tandem OpenZFS QEMU lab.
#
#   hw-tests/lab/lab.sh build     build (or reuse) the guest kernel + ZFS modules + initramfs (root, cached)
#   hw-tests/lab/lab.sh env       print the artifacts for the harness (TANDEM_LAB_KERNEL=..., ...)
#   hw-tests/lab/lab.sh status    what is cached
#   hw-tests/lab/lab.sh clean     remove work files (keeps the cache); `clean --all` removes the lab dir
#
# Lab dir: ${TANDEM_LAB_DIR:-<repo>/target/lab}; see common.sh for the version pins.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

cmd_env() {
  if [ -n "${TANDEM_LAB_KERNEL_ABI:-}" ] && [ -n "${TANDEM_LAB_ZFS_VERSION:-}" ]; then
    KABI=$TANDEM_LAB_KERNEL_ABI ZFSVER=$TANDEM_LAB_ZFS_VERSION; set_key
    [ -e "$CACHE/rootfs.done" ] || die "lab $KEY not built: run $0 build"
    echo "TANDEM_LAB_DIR=$LAB_DIR"
    echo "TANDEM_LAB_KEY=$KEY"
    echo "TANDEM_LAB_KERNEL=$CACHE/vmlinuz"
    echo "TANDEM_LAB_INITRD=$CACHE/initrd.cpio"
    return 0
  fi
  [ -e "$LAB_DIR/current.env" ] || die "lab not built: run $0 build"
  echo "TANDEM_LAB_DIR=$LAB_DIR"
  grep -E '^TANDEM_LAB_(KEY|KERNEL|INITRD)=' "$LAB_DIR/current.env"
}

cmd_status() {
  echo "lab dir: $LAB_DIR"
  [ -e "$LAB_DIR/current.env" ] && sed 's/^/  current: /' "$LAB_DIR/current.env"
  local d
  for d in "$LAB_DIR"/cache/*/; do
    [ -d "$d" ] || continue
    printf '  cache %s: modules=%s rootfs=%s size=%s\n' "$(basename "$d")" \
      "$([ -e "$d/modules.done" ] && echo yes || echo no)" "$([ -e "$d/rootfs.done" ] && echo yes || echo no)" \
      "$(du -sh "$d" | cut -f1)"
  done
  for t in qemu-system-x86_64 ipmi_sim ipmitool; do
    printf '  %-20s %s\n' "$t" "$(command -v "$t" || echo 'not installed')"
  done
}

case "${1:-}" in
  build)
    t0=$(date +%s.%N)
    step build-modules "$LAB_SCRIPTS/build-modules.sh"
    step build-rootfs "$LAB_SCRIPTS/build-rootfs.sh"
    log "$(printf 'lab build total %.1f s' "$(elapsed "$t0")")"
    cmd_env
    ;;
  env) cmd_env ;;
  status) cmd_status ;;
  clean)
    if [ "${2:-}" = --all ]; then rm -rf "$LAB_DIR"; else rm -rf "$LAB_DIR/work"; fi
    ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
