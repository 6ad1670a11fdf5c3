#!/usr/bin/env bash
# A real three-node (or two-node) corosync cluster on one machine, for the quorum tests:
# Debian's corosync (knet over veth, votequorum), one network namespace per
# node, all three plugged into a bridge that lives in a fourth namespace
# (the "switch"), so nothing touches the host's own network.
#
#   scripts/corosync-lab.sh up     DIR [PREFIX]   start it; waits until all three are quorate
#   scripts/corosync-lab.sh cut    DIR N          unplug node N (its port on the switch goes down)
#   scripts/corosync-lab.sh heal   DIR N          plug it back in
#   scripts/corosync-lab.sh stop   DIR N          stop node N's corosync (SIGTERM, then SIGKILL)
#   scripts/corosync-lab.sh start  DIR N          start it again (after stop)
#   scripts/corosync-lab.sh status DIR N          `corosync-quorumtool -s` as node N sees it
#   scripts/corosync-lab.sh exec   DIR N CMD...   run CMD in node N's network namespace
#   scripts/corosync-lab.sh bmc    DIR N          start node N's BMC (ipmi_sim on 10.77.0.10N:623,
#                                                 on the switch, so reachable while N is cut off)
#   scripts/corosync-lab.sh split  DIR A B        corosync between nodes A and B cut (blackhole
#                                                 routes), both still reach the switch: the
#                                                 BMCs and the qnetd
#   scripts/corosync-lab.sh unsplit DIR A B       the routes removed
#   scripts/corosync-lab.sh power  DIR N 0|1      what N's BMC does to N: 0 kills every process
#                                                 in N's namespace (corosync, daemon, hooks), 1
#                                                 starts its corosync again
#   scripts/corosync-lab.sh down   DIR            stop the corosyncs, delete the namespaces
#
# DIR holds everything of one lab (configs, authkey, logs, state, pids); the
# PREFIX (default: tq<pid>) names its namespaces, so several labs coexist.
# TANDEM_LAB_NODES=2 (at `up`) makes a two-node cluster instead, with votequorum's
# `two_node: 1` (each node stays quorate alone; wait_for_all at start).
# TANDEM_LAB_QDEVICE=1 (with NODES=2) gives it a QDevice instead of two_node:
# corosync-qnetd on the switch (10.77.0.254, TLS off: a lab on one machine),
# corosync-qdevice in each node, model net, algorithm ffsplit (a 50:50 split
# goes to the partition with the lowest node id).
#
# Why it is shaped so:
# - libqb's IPC (how corosync-quorumtool and friends reach corosync) uses
#   abstract unix sockets, which belong to a network namespace: a tool run
#   with `nsenter --net=/run/netns/PREFIX-nN` talks to node N's corosync.
# - corosync takes a lock on /var/run/corosync.pid, shared by every
#   instance on a machine, so each one runs in its own mount namespace with
#   a private tmpfs on /run (and its own state_dir and log file).
# - `ip netns exec` remounts /sys, which breaks zfs-fuse for what runs
#   inside; this script and the tests enter namespaces with `nsenter --net`.
# Needs root, iproute2, util-linux and corosync (scripts/setup.sh corosync).
set -euo pipefail

cmd=${1:?usage: corosync-lab.sh up|cut|heal|split|unsplit|stop|start|status|exec|bmc|power|down DIR ...}
dir=${2:?the lab directory}
token_ms=${TANDEM_LAB_TOKEN_MS:-1000}

prefix_of() { cat "$dir/prefix"; }
nodes_of() { seq 1 "$(cat "$dir/nodes" 2>/dev/null || echo 3)"; }
ns() { echo "$(prefix_of)-n$1"; }
sw() { echo "$(prefix_of)-sw"; }
in_ns() { local n=$1; shift; nsenter --net="/run/netns/$n" "$@"; }

write_conf() {
  local n=$1 d=$dir/n$1
  mkdir -p "$d/state"
  cat > "$d/corosync.conf" <<CONF
totem {
    version: 2
    cluster_name: tandemlab
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    keyfile: $dir/authkey
    token: $token_ms
    token_retransmits_before_loss_const: 4
    join: 50
    consensus: $(( token_ms * 12 / 10 ))
    knet_ping_interval: 200
    knet_ping_timeout: 600
}
nodelist {
$(for m in $(nodes_of); do printf '    node {\n        name: n%s\n        nodeid: %s\n        ring0_addr: 10.77.0.%s\n    }\n' "$m" "$m" "$m"; done)
}
quorum {
    provider: corosync_votequorum
$(if [ -f "$dir/qdevice" ]; then
  printf '    device {\n        model: net\n        votes: 1\n        net {\n            tls: off\n            host: 10.77.0.254\n            algorithm: ffsplit\n        }\n    }\n'
elif [ "$(nodes_of | wc -l)" = 2 ]; then echo "    two_node: 1"; fi)
}
system {
    state_dir: $d/state
}
logging {
    to_stderr: no
    to_syslog: no
    to_logfile: yes
    logfile: $d/corosync.log
    timestamp: hires
    debug: off
}
CONF
}

start_node() {
  local n=$1
  # Own mount namespace with a private /run: see the top of this file.
  # Not through in_ns: $! must be corosync's pid (nsenter, unshare and the
  # shell all exec), not a subshell's.
  nsenter --net="/run/netns/$(ns "$n")" unshare --mount --propagation private \
    sh -c 'mount -t tmpfs tmpfs /run && exec corosync -f -c "$1"' sh "$dir/n$n/corosync.conf" \
    >> "$dir/n$n/stdout" 2>&1 &
  echo $! > "$dir/n$n/pid"
  [ -f "$dir/qdevice" ] && start_qdevice "$n"
  return 0
}

# corosync-qdevice of node N: its own mount namespace and /run (its lock),
# in the node's network namespace (corosync's IPC); it waits for corosync.
start_qdevice() {
  local n=$1
  nsenter --net="/run/netns/$(ns "$n")" unshare --mount --propagation private \
    sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/corosync-qdevice && for i in $(seq 1 100); do corosync-cmapctl -g runtime.votequorum.this_node_id >/dev/null 2>&1 && break; sleep 0.1; done; exec corosync-qdevice -f' \
    >> "$dir/n$n/qdevice.log" 2>&1 &
  echo $! > "$dir/n$n/qdevice.pid"
}

start_qnetd() {
  in_ns "$(sw)" ip addr replace 10.77.0.254/24 dev br0
  nsenter --net="/run/netns/$(sw)" unshare --mount --propagation private \
    sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/corosync-qnetd && exec corosync-qnetd -f -s off -l 10.77.0.254' \
    >> "$dir/qnetd.log" 2>&1 &
  echo $! > "$dir/qnetd.pid"
}

stop_node() {
  local n=$1 pid
  if [ -f "$dir/n$n/qdevice.pid" ]; then
    kill -KILL "$(cat "$dir/n$n/qdevice.pid")" 2>/dev/null || true
    rm -f "$dir/n$n/qdevice.pid"
  fi
  [ -f "$dir/n$n/pid" ] || return 0
  pid=$(cat "$dir/n$n/pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/n$n/pid"
}

quorate() { in_ns "$(ns "$1")" corosync-quorumtool -s 2>/dev/null | grep -q '^Quorate:[[:space:]]*Yes'; }

case $cmd in
up)
  command -v corosync >/dev/null || { echo "corosync-lab: corosync is not installed (scripts/setup.sh corosync)" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  echo "${3:-tq$$}" > "$dir/prefix"
  echo "${TANDEM_LAB_NODES:-3}" > "$dir/nodes"
  rm -f "$dir/qdevice"
  if [ "${TANDEM_LAB_QDEVICE:-0}" = 1 ]; then
    [ "$(cat "$dir/nodes")" = 2 ] || { echo "corosync-lab: a QDevice lab has two nodes (TANDEM_LAB_NODES=2)" >&2; exit 2; }
    command -v corosync-qnetd >/dev/null && command -v corosync-qdevice >/dev/null ||
      { echo "corosync-lab: corosync-qnetd and corosync-qdevice are not installed (scripts/setup.sh corosync)" >&2; exit 1; }
    touch "$dir/qdevice"
  fi
  case $(cat "$dir/nodes") in 2|3) ;; *) echo "corosync-lab: TANDEM_LAB_NODES must be 2 or 3" >&2; exit 2 ;; esac
  [ -f "$dir/authkey" ] || { dd if=/dev/urandom of="$dir/authkey" bs=256 count=1 status=none; chmod 400 "$dir/authkey"; }
  ip netns add "$(sw)"
  in_ns "$(sw)" ip link add br0 type bridge
  in_ns "$(sw)" ip link set br0 up
  in_ns "$(sw)" ip link set lo up
  for n in $(nodes_of); do
    ip netns add "$(ns $n)"
    # eth0 in the node, pN on the switch.
    ip link add "$(prefix_of)e$n" type veth peer name "$(prefix_of)p$n"
    ip link set "$(prefix_of)e$n" netns "$(ns $n)"
    ip link set "$(prefix_of)p$n" netns "$(sw)"
    in_ns "$(ns $n)" ip link set "$(prefix_of)e$n" name eth0
    in_ns "$(sw)" ip link set "$(prefix_of)p$n" name "p$n" master br0
    in_ns "$(sw)" ip link set "p$n" up
    in_ns "$(ns $n)" ip link set lo up
    in_ns "$(ns $n)" ip addr add "10.77.0.$n/24" dev eth0
    in_ns "$(ns $n)" ip link set eth0 up
    write_conf "$n"
  done
  [ -f "$dir/qdevice" ] && start_qnetd
  for n in $(nodes_of); do start_node "$n"; done
  count=$(nodes_of | wc -l)
  for _ in $(seq 1 150); do
    all=1
    for n in $(nodes_of); do quorate "$n" || { all=0; break; }; done
    if [ $all = 1 ]; then echo "corosync-lab: up, all $count quorate ($(prefix_of))"; exit 0; fi
    sleep 0.2
  done
  echo "corosync-lab: the $count nodes did not become quorate in 30s; logs in $dir/n*/corosync.log" >&2
  exit 1
  ;;
bmc)
  n=${3:?node}
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  mkdir -p "$dir/bmc$n"
  in_ns "$(sw)" ip addr replace "10.77.0.$((100 + n))/24" dev br0
  cat > "$dir/bmc$n/on-power" <<HOOK
#!/bin/sh
exec bash "$here/corosync-lab.sh" power "$dir" $n "\$1"
HOOK
  chmod +x "$dir/bmc$n/on-power"
  TANDEM_BMC_ADDR="10.77.0.$((100 + n))" in_ns "$(sw)" bash "$here/ipmi-sim.sh" start "$dir/bmc$n" 623 >/dev/null
  echo "corosync-lab: node $n's BMC on 10.77.0.$((100 + n)):623"
  ;;
power)
  n=${3:?node}
  case ${4:?0 or 1} in
  0) # The machine is off: nothing of it runs any more.
    for pid in $(ip netns pids "$(ns "$n")"); do kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$dir/n$n/pid" "$dir/n$n/qdevice.pid" ;;
  1) [ -f "$dir/n$n/pid" ] && kill -0 "$(cat "$dir/n$n/pid")" 2>/dev/null || start_node "$n" ;;
  *) echo "corosync-lab: power takes 0 or 1" >&2; exit 2 ;;
  esac
  ;;
split|unsplit)
  a=${3:?node}; b=${4:?node}
  verb=add; [ "$cmd" = unsplit ] && verb=del
  in_ns "$(ns "$a")" ip route "$verb" blackhole "10.77.0.$b/32"
  in_ns "$(ns "$b")" ip route "$verb" blackhole "10.77.0.$a/32"
  ;;
cut) in_ns "$(sw)" ip link set "p${3:?node}" down ;;
heal) in_ns "$(sw)" ip link set "p${3:?node}" up ;;
stop) stop_node "${3:?node}" ;;
start) start_node "${3:?node}" ;;
status) in_ns "$(ns "${3:?node}")" corosync-quorumtool -s ;;
exec) n=${3:?node}; shift 3; in_ns "$(ns "$n")" "$@" ;;
down)
  [ -f "$dir/prefix" ] || exit 0
  for n in $(nodes_of); do
    if [ -f "$dir/n$n/pid" ]; then kill -TERM "$(cat "$dir/n$n/pid")" 2>/dev/null || true; fi
  done
  for n in $(nodes_of); do stop_node "$n"; done
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  for n in $(nodes_of); do
    [ -d "$dir/bmc$n" ] && bash "$here/ipmi-sim.sh" stop "$dir/bmc$n"
    # Whatever a test left running in the node (a daemon, a hook).
    for pid in $(ip netns pids "$(ns "$n")" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  if [ -f "$dir/qnetd.pid" ]; then kill -KILL "$(cat "$dir/qnetd.pid")" 2>/dev/null || true; rm -f "$dir/qnetd.pid"; fi
  for n in $(nodes_of); do ip netns del "$(ns $n)" 2>/dev/null || true; done
  ip netns del "$(sw)" 2>/dev/null || true
  ;;
*) echo "corosync-lab: unknown command $cmd" >&2; exit 2 ;;
esac
