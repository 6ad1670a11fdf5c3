#!/usr/bin/env bash
# Installs and starts what tandem's demo and tests need on a Debian machine:
#   zfs   - Debian's zfs-fuse (real ZFS pools in files, userspace) and its daemon
#   sshd  - an sshd on 127.0.0.1:${TANDEM_TEST_SSH_PORT:-2222} with a throw-away key,
#           for the remote-node tests (root login with that key only)
#   ipmi  - OpenIPMI's ipmi_sim (a BMC simulator), ipmitool and Debian's
#           fence-agents (fence_ipmilan), for the fencing tests and benchmark;
#           scripts/ipmi-sim.sh starts a simulated BMC
#   corosync - Debian's corosync, for the quorum tests; scripts/corosync-lab.sh runs a
#           three-node cluster in network namespaces (nothing is started here; where
#           the package starts its own service, it runs Debian's one-node config,
#           which tandem's [quorum] mode = "auto" does not count as a cluster), and
#           corosync-qnetd and corosync-qdevice for the two-node QDevice tests
# Always, whatever the arguments (every build links them: tandem-fence's default
# `corosync` feature, the native quorum backend through the rust-corosync bindings):
#   Debian's corosync development packages, libquorum-dev libvotequorum-dev libcpg-dev
#   libcmap-dev libcfg-dev libcorosync-common-dev (bookworm: 3.1.7)
# Usage: scripts/setup.sh [zfs] [sshd] [ipmi] [corosync]      (no argument: all)
# Idempotent: a second run only checks that everything is up.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# One test environment per machine, shared by every checkout (CI clones too).
env_dir=${TANDEM_TEST_ENV:-/var/tmp/tandem-test-env}
ssh_port=${TANDEM_TEST_SSH_PORT:-2222}
want=${*:-zfs sshd ipmi corosync}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
# The build step: the libraries the native quorum backend links (libFOO.so comes
# with FOO-dev only), checked by package status so a half-installed one is redone.
for p in libquorum-dev libvotequorum-dev libcpg-dev libcmap-dev libcfg-dev libcorosync-common-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
case " $want " in *" zfs "*) command -v zfs-fuse >/dev/null || need_pkgs+=(zfs-fuse) ;; esac
case " $want " in *" sshd "*) [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server); command -v ssh >/dev/null || need_pkgs+=(openssh-client) ;; esac
case " $want " in *" ipmi "*)
  command -v ipmi_sim >/dev/null || need_pkgs+=(openipmi)
  command -v ipmitool >/dev/null || need_pkgs+=(ipmitool)
  command -v fence_ipmilan >/dev/null || need_pkgs+=(fence-agents) ;;
esac
case " $want " in *" corosync "*)
  [ -x /usr/sbin/corosync ] && [ -x /usr/sbin/corosync-quorumtool ] || need_pkgs+=(corosync)
  # The QDevice of the two-node HA tests: the arbiter and the node's daemon.
  command -v corosync-qnetd >/dev/null || need_pkgs+=(corosync-qnetd)
  command -v corosync-qdevice >/dev/null || need_pkgs+=(corosync-qdevice)
  command -v nsenter >/dev/null || need_pkgs+=(util-linux)
  command -v ip >/dev/null || need_pkgs+=(iproute2) ;;
esac
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

zfs_ok() { as_root timeout 10 zpool list >/dev/null 2>&1; }

stop_zfs() {
  # A wedged zfs-fuse (it can deadlock under concurrent mounts) is killed,
  # its FUSE mounts detached, and the pool cache dropped so that throw-away
  # test pools are not imported again.
  as_root pkill -9 -x zfs-fuse || true
  sleep 1
  mount | awk '$5 == "fuse.zfs" {print $3}' | sort -r | while read -r m; do as_root umount -l "$m" || true; done
  as_root rm -f /var/lib/zfs/zpool.cache /etc/zfs/zpool.cache /var/run/zfs/zfs_socket /var/run/zfs-fuse.pid
}

start_zfs() {
  if pgrep -x zfs-fuse >/dev/null && ! zfs_ok; then
    echo "setup: zfs-fuse is running but not answering; restarting it"
    stop_zfs
  fi
  [ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing; zfs-fuse cannot run here" >&2; exit 1; }
  for attempt in 1 2 3; do
    if ! pgrep -x zfs-fuse >/dev/null; then
      echo "setup: starting zfs-fuse"
      as_root mkdir -p /var/run/zfs /var/lock/zfs-fuse
      as_root /usr/sbin/zfs-fuse --pidfile /var/run/zfs-fuse.pid || true
    fi
    for _ in $(seq 1 25); do
      if zfs_ok; then echo "setup: zfs-fuse is up"; return 0; fi
      sleep 0.2
    done
    echo "setup: zfs-fuse did not answer (attempt $attempt); restarting it"
    stop_zfs
  done
  echo "setup: zfs-fuse did not come up (zpool list fails)" >&2; exit 1
}

start_sshd() {
  mkdir -p "$env_dir/ssh"
  local d=$env_dir/ssh
  [ -f "$d/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$d/host_ed25519"
  [ -f "$d/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$d/client_ed25519"
  cp "$d/client_ed25519.pub" "$d/authorized_keys"
  chmod 600 "$d/authorized_keys" "$d/client_ed25519" "$d/host_ed25519"
  cat > "$d/sshd_config" <<CONF
ListenAddress 127.0.0.1:$ssh_port
HostKey $d/host_ed25519
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 64
MaxStartups 64:30:128
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONF
  ssh_ok() {
    ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
      -o ConnectTimeout=5 -i "$d/client_ed25519" -p "$ssh_port" root@127.0.0.1 true 2>/dev/null
  }
  if ! ssh_ok; then
    # An sshd of an older test environment may hold the port: replace it.
    as_root pkill -f "sshd -f .*test-env.*sshd_config" || true
    sleep 0.5
  fi
  if [ -f "$d/sshd.pid" ] && kill -0 "$(cat "$d/sshd.pid")" 2>/dev/null; then
    :
  else
    as_root mkdir -p /run/sshd
    echo "setup: starting sshd on 127.0.0.1:$ssh_port"
    as_root /usr/sbin/sshd -f "$d/sshd_config"
  fi
  for _ in $(seq 1 50); do
    if ssh_ok; then
      echo "setup: sshd is up (key $d/client_ed25519)"; return 0
    fi
    sleep 0.2
  done
  echo "setup: sshd on 127.0.0.1:$ssh_port does not accept the test key" >&2; exit 1
}

case " $want " in *" zfs-restart "*) stop_zfs; start_zfs ;; *" zfs "*) start_zfs ;; esac
case " $want " in *" sshd "*) start_sshd ;; esac
case " $want " in *" ipmi "*) echo "setup: ipmi_sim, ipmitool and fence_ipmilan are installed" ;; esac
echo "setup: the corosync development libraries are installed (the build links them)"
case " $want " in *" corosync "*) echo "setup: corosync $(corosync -v | sed -n "s/.*version '\(.*\)'.*/\1/p") is installed" ;; esac
