# shellcheck shell=bash
# Shared helpers for the tandem QEMU lab scripts (sourced, not executed).
#
# Environment knobs (all optional):
#   TANDEM_LAB_DIR          lab root (default: <repo>/target/lab)
#   TANDEM_LAB_KERNEL_ABI   pin the guest kernel ABI, e.g. 6.1.0-56-amd64
#                           (default: whatever Debian's linux-image-amd64 depends on now)
#   TANDEM_LAB_ZFS_VERSION  pin the zfs-dkms / zfsutils-linux Debian version, e.g. 2.3.2-2~bpo12+2
#                           (default: newest zfs-dkms in TANDEM_LAB_ZFS_SUITE)
#   TANDEM_LAB_ZFS_SUITE    suite to take ZFS from (default: bookworm-backports)
#   TANDEM_LAB_MIRROR       Debian mirror (default: http://deb.debian.org/debian)
#   TANDEM_LAB_APT_UPDATE=1 run `apt-get update` before resolving versions

LAB_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_SCRIPTS/../.." && pwd)
LAB_DIR=${TANDEM_LAB_DIR:-$REPO_ROOT/target/lab}
MIRROR=${TANDEM_LAB_MIRROR:-http://deb.debian.org/debian}
ZFS_SUITE=${TANDEM_LAB_ZFS_SUITE:-bookworm-backports}
APT_GET=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive

log() { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# step NAME CMD...: run a step and print how long it took
step() {
  local name=$1 t0 t1 rc=0
  shift
  t0=$(date +%s.%N)
  "$@" || rc=$?
  t1=$(date +%s.%N)
  log "$(printf 'step %-22s %6.1f s%s' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$([ $rc -eq 0 ] || echo " (FAILED rc=$rc)")")"
  return $rc
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (installs packages, runs mmdebstrap --mode=root)"; }

# Add bookworm-backports (main contrib) if apt does not know zfs-dkms from it yet. The source is pinned to
# priority 1: nothing on the host is ever installed or upgraded from it unless asked for by version.
ensure_backports_source() {
  if apt-cache madison zfs-dkms 2>/dev/null | grep -q "$ZFS_SUITE/contrib"; then
    return 0
  fi
  [ "$ZFS_SUITE" = bookworm-backports ] || die "apt does not know zfs-dkms from $ZFS_SUITE (add that source yourself)"
  log "adding bookworm-backports (main contrib) apt source, pinned to priority 1"
  cat > /etc/apt/sources.list.d/tandem-lab-backports.sources <<SRC
# added by tandem hw-tests/lab for the OpenZFS lab (zfs-dkms, zfsutils-linux)
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/tandem-lab-backports.pref <<'PREF'
# added by tandem hw-tests/lab: never pick bookworm-backports automatically (only pkg=version)
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 1
PREF
  "${APT_GET[@]}" update -q >/dev/null
}

# Install packages that are not installed yet (a no-op, without touching apt, when all are present).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  "${APT_GET[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Sets KABI (e.g. 6.1.0-56-amd64), ZFSVER (Debian version of zfs-dkms), KEY, CACHE.
resolve_versions() {
  if [ "${TANDEM_LAB_APT_UPDATE:-0}" = 1 ]; then "${APT_GET[@]}" update -q >/dev/null; fi
  KABI=${TANDEM_LAB_KERNEL_ABI:-$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -1)}
  [ -n "$KABI" ] || die "cannot resolve the ABI of linux-image-amd64 (apt-get update?)"
  ZFSVER=${TANDEM_LAB_ZFS_VERSION:-$(apt-cache madison zfs-dkms 2>/dev/null \
        | awk -v s="$ZFS_SUITE/contrib" '$0 ~ s {print $3; exit}')}
  [ -n "$ZFSVER" ] || die "cannot resolve the zfs-dkms version in $ZFS_SUITE"
  set_key
}

set_key() {
  KEY="$KABI-${ZFSVER//:/_}"
  CACHE=$LAB_DIR/cache/$KEY
}

# The guest kernel: linux-image-$KABI downloaded and unpacked (not installed) under $LAB_DIR/work.
ensure_kernel_tree() {
  KROOT=$LAB_DIR/work/kernel-$KABI
  [ -e "$KROOT/boot/vmlinuz-$KABI" ] && [ -d "$KROOT/lib/modules/$KABI" ] && return 0
  local dl=$LAB_DIR/work/debs
  mkdir -p "$dl"; chmod 777 "$dl"   # apt's _apt user downloads into it
  (cd "$dl" && rm -f linux-image-"$KABI"_*.deb && "${APT_GET[@]}" download -q "linux-image-$KABI" >/dev/null)
  rm -rf "$KROOT.tmp"
  dpkg-deb -x "$dl"/linux-image-"$KABI"_*.deb "$KROOT.tmp"
  rm -rf "$KROOT"; mv "$KROOT.tmp" "$KROOT"
}

# The zfsutils-linux library packages of version $ZFSVER (names change between ZFS releases).
zfs_user_packages() {
  local libs
  libs=$(apt-cache show "zfsutils-linux=$ZFSVER" 2>/dev/null | sed -n 's/^Depends: //p' | head -1 | tr ',|' '\n' \
         | sed -n 's/^ *\(lib\(zfs\|zpool\|nvpair\|uutil\)[0-9a-z]*linux\).*/\1/p' | sort -u)
  [ -n "$libs" ] || die "cannot read the dependencies of zfsutils-linux=$ZFSVER"
  # shellcheck disable=SC2086 # one package per word
  echo zfsutils-linux $libs
}

# Record the artifacts of $CACHE as the lab's current build (read by `lab.sh env` and the Rust harness).
write_current() {
  local tmp=$LAB_DIR/current.env.tmp
  {
    echo "TANDEM_LAB_KEY=$KEY"
    echo "TANDEM_LAB_KERNEL_ABI=$KABI"
    echo "TANDEM_LAB_ZFS_VERSION=$ZFSVER"
    echo "TANDEM_LAB_KERNEL=$CACHE/vmlinuz"
    echo "TANDEM_LAB_INITRD=$CACHE/initrd.cpio"
  } > "$tmp"
  mv "$tmp" "$LAB_DIR/current.env"
}

# elapsed T0: seconds since T0 (a `date +%s.%N` value)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{print b-a}'; }

# qemu-system-x86 must match the QEMU already on the host: when qemu-utils came from bookworm-backports
# (some images ship it), take qemu-system-x86 from there too, otherwise from bookworm.
ensure_qemu() {
  local have
  dpkg-query -W -f='${Status}\n' qemu-system-x86 2>/dev/null | grep -q '^install ok installed$' && return 0
  have=$(dpkg-query -W -f='${Status} ${Version}\n' qemu-utils 2>/dev/null | sed -n 's/^install ok installed //p')
  if [[ $have == *bpo12* ]]; then
    log "installing qemu-system-x86 from bookworm-backports (matches installed qemu-utils $have)"
    "${APT_GET[@]}" install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  else
    ensure_packages qemu-system-x86 qemu-utils
  fi
}
