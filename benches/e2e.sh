#!/usr/bin/env bash
# End-to-end replication throughput on zfs-fuse file-backed pools (native
# disk speed), one run, one table: raw `zfs send`, `zfs recv < file`, the
# local pipe, `zfs send | ssh | zfs recv`, syncoid over ssh (no compression,
# zstd-fast), tandem over ssh (serve with compress none/auto, and plain
# transport = "ssh"), tandem over mutual TLS. Then a second table over a
# rate-limited link (two network namespaces joined by a veth pair shaped by
# tc) with tandem's compress = none vs auto.
#
#   bash benches/e2e.sh                       # the full run (~1.3 GB dataset)
#   E2E_SIZE_MB=300 bash benches/e2e.sh       # a quick one
#
# Options (environment):
#   E2E_SIZE_MB=1300     data written to the source dataset, MB (10^6 bytes):
#                        a byte-uniform sample of /usr/lib plus random data
#   E2E_RANDOM_MB        the random (incompressible) part; default 300/1300 of
#                        E2E_SIZE_MB (300 MB at the default size)
#   E2E_LINK_MBPS=50     rate of the shaped link, MB/s (tc tbf on the veth)
#   E2E_ONLY=main|link   only the first or only the second table
#   E2E_SKIP_SYNCOID=1   skip the syncoid rows (otherwise Debian's sanoid
#                        package is installed with apt when missing)
#   E2E_SSH_PORT=2223    port of the bench's own loopback sshd
#   E2E_TIMEOUT=900      seconds allowed per measurement
#   E2E_WORK=/var/tmp    where the pool images go (needs ~3x E2E_SIZE_MB)
#   E2E_TANDEM=PATH      use this tandem binary instead of building
#                        target/release/tandem
#   E2E_ROWS=REGEX       only the rows whose log name matches (grep -E), e.g.
#                        'local-pipe|tandem-serve' (the reference row of a
#                        table is needed for its ratio column)
#
# Every path moves the same snapshot into a target pool created fresh for
# that measurement; MB/s = bytes of the `zfs send` stream / wall time of the
# whole command (tandem and syncoid: the whole run, connection set-up and
# listings included). CPU s = user+sys of every process of the measurement,
# both ends: the commands run in a cpuacct cgroup that also holds the bench's
# own sshd (so the ssh sessions and the far side count). zfs-fuse does the
# ZFS work in its daemon, outside that cgroup: its CPU is a separate column
# (a delta of the shared daemon, so other pool users on the machine add to
# it). Peak RSS = the largest VmHWM among the measurement's processes,
# sampled every 0.1 s; the same sampling gives an approximate CPU split by
# process (in the progress lines and the JSON's cpu_by_process).
# Rows: target/bench/e2e.json and e2e-link.json.
# shellcheck disable=SC2016  # backquotes in single-quoted table labels are markdown
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

E2E_SIZE_MB=${E2E_SIZE_MB:-1300}
E2E_RANDOM_MB=${E2E_RANDOM_MB:-$((E2E_SIZE_MB * 300 / 1300))}
E2E_LINK_MBPS=${E2E_LINK_MBPS:-50}
E2E_SSH_PORT=${E2E_SSH_PORT:-2223}
E2E_TIMEOUT=${E2E_TIMEOUT:-900}
E2E_WORK=${E2E_WORK:-/var/tmp}

[ "$(id -u)" = 0 ] || { echo "e2e: needs root (zfs-fuse pools, network namespaces, cgroups)" >&2; exit 1; }
log() { echo "e2e: $*" >&2; }

bash scripts/setup.sh zfs sshd >/dev/null
env_dir=${TANDEM_TEST_ENV:-/var/tmp/tandem-test-env}
key=$env_dir/ssh/client_ed25519
if [ -n "${E2E_TANDEM:-}" ]; then
  bin=$(realpath "$E2E_TANDEM")
else
  log "building tandem (release)"
  cargo build --quiet --release -p tandem
  bin=$root/target/release/tandem
fi
if [ -z "${E2E_SKIP_SYNCOID:-}" ] && ! command -v syncoid >/dev/null; then
  log "installing Debian's sanoid package (syncoid)"
  env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq sanoid >/dev/null \
    || log "apt-get install sanoid failed; the syncoid rows will say so"
fi

work=$(mktemp -d "$E2E_WORK/tandem-e2e-XXXX")
logs=$root/target/bench/e2e-logs      # output of every measured command
rm -rf "$logs"; mkdir -p "$logs"
tag=te2e$$
src=${tag}s; dst=${tag}d
cg=/sys/fs/cgroup/cpuacct/tandem-e2e-$$
nsa=${tag}a; nsb=${tag}b              # network namespaces: source side, target side
net=10.$((200 + $$ % 50)).$(($$ % 250)).   # addresses only inside those namespaces
sshd_pids=()

cg_procs() { if [ -d "$cg" ]; then cat "$cg/cgroup.procs" 2>/dev/null || true; fi; }
kill_cg() { # every process the measurements left (all started by this script)
  local keep=" ${*:-} " p
  for sig in TERM KILL; do
    for p in $(cg_procs); do case "$keep" in *" $p "*) ;; *) kill -s $sig "$p" 2>/dev/null || true ;; esac; done
    if [ $sig = TERM ]; then sleep 0.3; fi
  done
}
destroy_pool() { for _ in 1 2 3 4 5 6 7 8 9 10; do zpool list "$1" >/dev/null 2>&1 || return 0; zpool destroy -f "$1" 2>/dev/null && return 0; sleep 0.5; done; log "could not destroy pool $1"; }
cleanup() {
  set +e
  [ -f "$work/sampler.pid" ] && kill "$(cat "$work/sampler.pid")" 2>/dev/null
  kill_cg
  for p in "${sshd_pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -d "$cg" ] && { sleep 0.3; rmdir "$cg"; }
  ip netns del "$nsa" 2>/dev/null; ip netns del "$nsb" 2>/dev/null
  destroy_pool "$dst"; destroy_pool "$src"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- accounting ----------------------------------------------------------
cg_ok=1
mkdir "$cg" 2>/dev/null || { cg_ok=0; log "no cpuacct cgroup ($cg): CPU s will be n/a"; }
cg_run() { # runs "$@" inside the cgroup (it and everything it starts)
  if [ $cg_ok = 1 ]; then bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"; else "$@"; fi
}
cg_ns() { [ $cg_ok = 1 ] && cat "$cg/cpuacct.usage" || echo 0; }
zfuse_ticks() { local p; p=$(pgrep -x zfs-fuse | head -1); awk '{print $14 + $15}' "/proc/$p/stat"; }
tck=$(getconf CLK_TCK)
sampler() { # $1 = output file: "KB name" of the largest VmHWM seen in the cgroup;
  # $1.cpu: CPU seconds by process name, as last seen (approximate: a process
  # loses its last < 0.1 s, and one that lives less than that is missed)
  set +e
  local out=$1 max=0 name=- pid k v r comm line f n
  local -A tk nm sum
  while [ ! -e "$out.stop" ]; do
    for pid in $(cg_procs); do
      comm='?'
      while read -r k v r; do
        case $k in Name:) comm=$v ;; VmHWM:) if ((v > max)); then max=$v; name=$comm; fi; break ;; esac
      done 2>/dev/null </proc/"$pid"/status
      read -r line 2>/dev/null </proc/"$pid"/stat || continue
      read -r -a f <<<"${line##*) }"   # f[11], f[12]: utime, stime (fields 14, 15)
      tk[$pid]=$((f[11] + f[12])); nm[$pid]=$comm
    done
    echo "$max $name" >"$out"
    sleep 0.1
  done
  for pid in "${!tk[@]}"; do n=${nm[$pid]}; sum[$n]=$((${sum[$n]:-0} + tk[$pid])); done
  for n in "${!sum[@]}"; do echo "${sum[$n]} $n"; done | sort -rn \
    | awk -v t="$tck" '$1 / t >= 0.05 { printf "%s%s %.1f", sep, $2, $1 / t; sep = ", " }' >"$out.cpu"
}

# --- pools and data --------------------------------------------------------
pool_mb=$(((E2E_SIZE_MB * 13 / 10 + 600) / 100 * 100))
new_pool() { # mounted under the work dir, so a left-over mountpoint cannot block it
  destroy_pool "$1"; rm -f "$work/$1.img"
  mountpoint -q "$work/mnt-$1" || rm -rf "$work/mnt-$1"
  truncate -s "${pool_mb}M" "$work/$1.img"
  zpool create -f -m "$work/mnt-$1" "$1" "$work/$1.img" 2>&1 | grep -v '^Defaulting to' >&2 || true
  zpool list "$1" >/dev/null
}
new_pool "$src"
zfs create "$src/data"
mnt=$(zfs get -H -o value mountpoint "$src/data")
usr_mb=$((E2E_SIZE_MB - E2E_RANDOM_MB))
log "source: ${usr_mb} MB sampled from /usr/lib + ${E2E_RANDOM_MB} MB random in $src/data"
{ find /usr/lib -xdev -type f -printf '%s\t%P\n' 2>/dev/null || true; } | LC_ALL=C sort -t $'\t' -k 2 >"$work/usr.all"
# A byte-uniform systematic sample over the whole tree (not just its first
# directories), so the mix of text, binaries and compressed files is /usr/lib's.
awk -F '\t' -v budget=$((usr_mb * 1000000)) 'NR == FNR { T += $1; next }
  FNR == 1 { f = budget / T }
  { cum += $1; if (taken + $1 <= cum * f + 1e6 && taken + $1 <= budget) { taken += $1; print $2 } }' \
  "$work/usr.all" "$work/usr.all" >"$work/usr.list"
mkdir -p "$mnt/usr"
{ tar -C /usr/lib --ignore-failed-read --verbatim-files-from -T "$work/usr.list" -cf - 2>/dev/null || true; } | tar -C "$mnt/usr" -xf -
mkdir -p "$mnt/random"
left=$E2E_RANDOM_MB; i=0
while [ "$left" -gt 0 ]; do
  n=$((left < 64 ? left : 64))
  head -c $((n * 1000000)) /dev/urandom >"$mnt/random/r$i"
  left=$((left - n)); i=$((i + 1))
done
zfs snapshot "$src/data@bench"
new_pool "$dst"

t0=$(date +%s.%N)
zfs send "$src/data@bench" >"$work/stream"
t1=$(date +%s.%N)
S=$(stat -c %s "$work/stream")
z0=$(date +%s.%N)
Z=$(zstd -1 -T1 -c "$work/stream" | wc -c)
z1=$(date +%s.%N)
info=$(awk -v s="$S" -v z="$Z" -v a="$z0" -v b="$z1" -v c="$t0" -v d="$t1" 'BEGIN {
  printf "stream %.2f GB (%d bytes); zstd -1 ratio %.2f, one thread %.0f MB/s; zfs send > file %.0f MB/s", s / 1e9, s, s / z, s / 1e6 / (b - a), s / 1e6 / (d - c) }')
log "$info"

# --- the loopback sshd of this bench (in the cgroup, so its sessions count) ----
start_sshd() { # $1 = listen address:port, $2 = name, then an optional command prefix (nsenter ...)
  local listen=$1 name=$2; shift 2
  cat >"$work/sshd_$name.conf" <<CONF
ListenAddress $listen
HostKey $env_dir/ssh/host_ed25519
PidFile $work/sshd_$name.pid
AuthorizedKeysFile $env_dir/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 64
MaxStartups 64:30:128
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONF
  mkdir -p /run/sshd
  cg_run "$@" /usr/sbin/sshd -f "$work/sshd_$name.conf"
  for _ in $(seq 1 50); do [ -s "$work/sshd_$name.pid" ] && break; sleep 0.1; done
  [ -s "$work/sshd_$name.pid" ] || { log "sshd on $listen did not start (port in use? E2E_SSH_PORT)"; exit 1; }
  sshd_pids+=("$(cat "$work/sshd_$name.pid")")
}
sshopt=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i "$key")
start_sshd "127.0.0.1:$E2E_SSH_PORT" lo
for _ in $(seq 1 50); do ssh "${sshopt[@]}" -p "$E2E_SSH_PORT" root@127.0.0.1 true 2>/dev/null && break; sleep 0.2; done
ssh "${sshopt[@]}" -p "$E2E_SSH_PORT" root@127.0.0.1 true || { log "the bench sshd on 127.0.0.1:$E2E_SSH_PORT does not answer"; exit 1; }

# --- measurements -------------------------------------------------------------
# measure NAME CMD: runs CMD (bash) in the cgroup on a fresh target pool; sets
# R_S (wall), R_CPU, R_ZF (zfs-fuse CPU), R_RSS ("MB (process)"), R_ERR.
# VERIFY=1 (default) checks that the target's snapshots have the source's GUIDs.
measure() {
  local name=$1 cmd=$2 t0 t1 c0 c1 f0 f1 rc=0 k n
  if [ -n "${E2E_ROWS:-}" ] && ! grep -qE "$E2E_ROWS" <<<"$name"; then
    R_ERR="skipped (E2E_ROWS)"; return
  fi
  new_pool "$dst"
  clean_src_snaps
  rm -f "$work/rss" "$work/rss.stop" "$work/rss.cpu"
  sampler "$work/rss" & echo $! >"$work/sampler.pid"
  c0=$(cg_ns); f0=$(zfuse_ticks); t0=$(date +%s.%N)
  cg_run timeout -k 10 "$E2E_TIMEOUT" bash -c "$cmd" >"$logs/$name.log" 2>&1 || rc=$?
  t1=$(date +%s.%N); c1=$(cg_ns); f1=$(zfuse_ticks)
  kill_cg "${sshd_pids[@]}"   # leftovers (ssh control masters) go before the next row
  touch "$work/rss.stop"; wait "$(cat "$work/sampler.pid")" 2>/dev/null || true; rm -f "$work/sampler.pid"
  read -r k n <"$work/rss" || { k=0; n=-; }
  R_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  R_CPU=$([ $cg_ok = 1 ] && awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", (b - a) / 1e9}' || echo null)
  R_ZF=$(awk -v a="$f0" -v b="$f1" -v t="$tck" 'BEGIN {printf "%.2f", (b - a) / t}')
  R_RSS=$(awk -v k="$k" 'BEGIN {printf "%.0f", k / 1024}'); R_RSSP=$n
  R_BY=$(cat "$work/rss.cpu" 2>/dev/null || true)
  [ $cg_ok = 1 ] || { R_RSS=null; R_RSSP=-; }   # nothing to sample without the cgroup
  R_ERR=
  if [ $rc != 0 ]; then
    R_ERR="failed (exit $rc): $(grep -v '^\s*$' "$logs/$name.log" | tail -1 | cut -c1-150)"
  elif [ "${VERIFY:-1}" = 1 ]; then
    R_ERR=$(verify_target)
  fi
  if [ -n "$R_ERR" ]; then log "$name: $R_ERR"; return; fi
  log "$name: $(awk -v s="$S" -v t="$R_S" 'BEGIN {printf "%.0f MB/s", s / 1e6 / t}') ($R_S s, cpu $R_CPU s, zfs-fuse $R_ZF s, rss $R_RSS MB $R_RSSP; cpu by process: $R_BY)"
}
verify_target() { # every snapshot that arrived has the GUID of the source's snapshot of that name
  local n=0 name guid sg
  while IFS=$'\t' read -r name guid; do
    case $name in *@*) ;; *) continue ;; esac
    sg=$(zfs get -H -p -o value guid "$src/data@${name#*@}" 2>/dev/null || true)
    [ "$sg" = "$guid" ] || { echo "target snapshot $name does not match the source"; return; }
    n=$((n + 1))
  done < <(zfs get -H -p -r -o name,value guid "$dst/data" 2>/dev/null)
  [ $n -gt 0 ] || echo "nothing arrived on the target"
}
clean_src_snaps() { # snapshots tandem took on the source, with its hold (zfs-fuse cannot list holds)
  local s
  for s in $(zfs get -H -r -o name type "$src/data" | cut -f1 | grep '@' | grep -v '@bench$' || true); do
    zfs release tandem_@dst "$s" 2>/dev/null || true
    for _ in 1 2 3 4 5; do zfs destroy "$s" 2>/dev/null && break; sleep 0.5; done
  done
}

# tandem config: $1 = dir, $2 = target address, $3 = port, $4 = transport, $5 = compress
tandem_cfg() {
  local d=$1
  mkdir -p "$d"
  cat >"$d/tandem.toml" <<CFG
state_dir = "$d/state"
local_node = "src"
[nodes.src]
address = "local"
[nodes.dst]
address = "$2"
ssh_user = "root"
ssh_port = $3
ssh_identity = "$key"
ssh_options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]
zfs_path = "/usr/sbin/zfs"
transport = "$4"
tandem_path = "$bin"
serve_args = ["--config", "$d/tandem.toml", "--peer", "src"]
[[serve.peers]]
name = "src"
write = ["$dst"]
[jobs.bench]
source = "src:$src/data"
target = "dst:$dst/data"
compress = "$5"
CFG
  echo "$d/tandem.toml"
}

# ------------------------------------------------------------------------------
# TLS: a CA and node certificates from `tandem cert`, a `tandem serve --listen`
# started inside the measured command (so its CPU counts), and a client config
# that reaches the target node over mutual TLS. $1 = compress.
bench_tls() {
  local d=$work/t-tls-$1 port=$((E2E_SSH_PORT + 100))
  mkdir -p "$d"
  if [ ! -f "$d/certs/ca.crt" ]; then
    { "$bin" cert ca --dir "$d/certs" && "$bin" cert node src --dir "$d/certs" && "$bin" cert node dst --dir "$d/certs"; } >/dev/null 2>&1 \
      || { echo "n/a: tandem cert failed"; return 1; }
  fi
  cat >"$d/server.toml" <<CFG
state_dir = "$d/server-state"
local_node = "dst"
[nodes.dst]
address = "local"
[tls]
cert = "$d/certs/dst.crt"
key = "$d/certs/dst.key"
ca = "$d/certs/ca.crt"
[[serve.peers]]
name = "src"
write = ["$dst"]
CFG
  cat >"$d/client.toml" <<CFG
state_dir = "$d/state"
local_node = "src"
[nodes.src]
address = "local"
[nodes.dst]
address = "127.0.0.1"
transport = "tls"
tls_port = $port
[tls]
cert = "$d/certs/src.crt"
key = "$d/certs/src.key"
ca = "$d/certs/ca.crt"
[jobs.bench]
source = "src:$src/data"
target = "dst:$dst/data"
compress = "$1"
CFG
  measure "tandem-tls-$1" "$bin --config $d/server.toml serve --listen 127.0.0.1:$port & s=\$!
    for _ in \$(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    $bin --config $d/client.toml run bench --json; rc=\$?; kill \$s; wait \$s; exit \$rc"
}
# ------------------------------------------------------------------------------

ssh_lo="ssh ${sshopt[*]} -p $E2E_SSH_PORT root@127.0.0.1"
add_row() { # $1 = table label (markdown), $2 = json path
  local mbs
  if [ -n "$R_ERR" ]; then
    row "$1" "$R_ERR" - - - -
    json+=("{\"path\": \"$2\", \"mb_per_s\": null, \"cpu_s\": null, \"rss_mb\": null, \"note\": \"$(printf '%s' "$R_ERR" | tr -d '\042\134')\"}")
    return
  fi
  mbs=$(awk -v s="$S" -v t="$R_S" 'BEGIN {printf "%.0f", s / 1e6 / t}')
  row "$1" "$mbs" "$R_CPU" "$R_ZF" "$R_RSS ($R_RSSP)" "$R_S"
  json+=("{\"path\": \"$2\", \"mb_per_s\": $mbs, \"cpu_s\": $R_CPU, \"rss_mb\": $R_RSS, \"rss_process\": \"$R_RSSP\", \"zfs_fuse_cpu_s\": $R_ZF, \"seconds\": $R_S, \"cpu_by_process\": \"$R_BY\"}")
}
row() { local IFS=$'\x1f'; rows+=("$*"); }
na_row() { row "$1" "$3" - - - -; json+=("{\"path\": \"$2\", \"mb_per_s\": null, \"cpu_s\": null, \"rss_mb\": null, \"note\": \"$3\"}"); }

print_table() { # $1 = reference MB/s for the ratio column, $2 = its name, $3 = extra columns before it
  local r f ratio
  printf '| path | MB/s | CPU s | zfs-fuse CPU s | peak RSS MB | seconds |%s %s |\n' "${3:-}" "$2"
  printf '|---|---|---|---|---|---|%s---|\n' "$(printf '%s' "${3:-}" | sed 's/[^|]*|/---|/g')"
  for r in "${rows[@]}"; do
    IFS=$'\x1f' read -r -a f <<<"$r"
    ratio=$(awk -v m="${f[1]}" -v l="$1" 'BEGIN { if (m + 0 > 0 && l > 0) printf "%.2f", m / l }')
    printf '| %s ' "${f[@]}"
    printf '| %s |\n' "$ratio"
  done
}

syncoid_row() { # $1 = compress
  if [ -n "${E2E_SKIP_SYNCOID:-}" ]; then na_row "syncoid over ssh, $1" "syncoid ssh $1" "skipped (E2E_SKIP_SYNCOID)"; return; fi
  if ! command -v syncoid >/dev/null; then na_row "syncoid over ssh, $1" "syncoid ssh $1" "n/a: syncoid is not installed"; return; fi
  measure "syncoid-$1" "syncoid --no-sync-snap --no-privilege-elevation --compress=$1 --sshport=$E2E_SSH_PORT --sshkey=$key \
    --sshoption=StrictHostKeyChecking=no --sshoption=UserKnownHostsFile=/dev/null --sshoption=LogLevel=ERROR \
    $src/data root@127.0.0.1:$dst/data"
  add_row "syncoid over ssh, $1" "syncoid ssh $1"
}

main_table() {
  local c cfg why
  rows=(); json=()
  VERIFY=0 measure send-null "zfs send $src/data@bench > /dev/null"; add_row '`zfs send > /dev/null`' "zfs send > /dev/null"
  measure recv-file "zfs recv $dst/data < $work/stream"; add_row '`zfs recv < file`' "zfs recv < file"
  measure local-pipe "zfs send $src/data@bench | zfs recv $dst/data"; add_row 'local `zfs send \| zfs recv`' "local zfs send | zfs recv"
  local_mbs=$([ -z "$R_ERR" ] && awk -v s="$S" -v t="$R_S" 'BEGIN {printf "%.3f", s / 1e6 / t}' || echo 0)
  measure ssh-pipe "zfs send $src/data@bench | $ssh_lo zfs recv $dst/data"; add_row '`zfs send \| ssh \| zfs recv`' "zfs send | ssh | zfs recv"
  syncoid_row none
  syncoid_row zstd-fast
  for c in none auto; do
    cfg=$(tandem_cfg "$work/t-serve-$c" 127.0.0.1 "$E2E_SSH_PORT" serve "$c")
    measure "tandem-serve-$c" "$bin --config $cfg run bench --json"
    add_row "tandem over ssh (serve), compress = $c" "tandem ssh serve compress=$c"
  done
  cfg=$(tandem_cfg "$work/t-ssh" 127.0.0.1 "$E2E_SSH_PORT" ssh none)
  measure tandem-ssh "$bin --config $cfg run bench --json"; add_row 'tandem, `transport = "ssh"`' "tandem transport=ssh"
  for c in none auto; do
    bench_tls "$c"
    add_row "tandem over TLS, compress = $c" "tandem tls compress=$c"
  done

  mkdir -p target/bench
  ( IFS=,; echo "[${json[*]}]" ) >target/bench/e2e.json
  echo
  echo "Dataset: $info (E2E_SIZE_MB=$E2E_SIZE_MB: $usr_mb MB of /usr/lib + $E2E_RANDOM_MB MB random); MB = 10^6 bytes"
  echo
  print_table "$local_mbs" "× local pipe"
}

# --- the rate-limited link ----------------------------------------------------------
wire() { ip -n "$nsa" -s -j link show dev "${tag}x" | grep -o '"tx":{"bytes":[0-9]*' | grep -o '[0-9]*$'; }
link_row() { # $1 = label, $2 = json path, $3 = log name, $4 = command (run in the source namespace)
  local w0 w1 wmb
  w0=$(wire)
  measure "$3" "nsenter --net=/run/netns/$nsa bash -c '$4'"
  w1=$(wire); wmb=$(awk -v a="$w0" -v b="$w1" 'BEGIN {printf "%.0f", (b - a) / 1e6}')
  add_row "$1" "$2"
  [ -n "$R_ERR" ] && wmb=-
  rows[-1]+=$'\x1f'"$wmb"
  json[-1]="${json[-1]%\}}, \"wire_mb\": ${wmb/#-/null}}"
}

link_table() {
  local c cfg
  log "rate-limited link: namespaces $nsa -> $nsb, ${E2E_LINK_MBPS} MB/s"
  ip netns add "$nsa"; ip netns add "$nsb"
  ip link add "${tag}x" netns "$nsa" type veth peer name "${tag}y" netns "$nsb"
  ip -n "$nsa" addr add "${net}1/24" dev "${tag}x"; ip -n "$nsb" addr add "${net}2/24" dev "${tag}y"
  ip -n "$nsa" link set lo up; ip -n "$nsb" link set lo up
  ip -n "$nsa" link set "${tag}x" up; ip -n "$nsb" link set "${tag}y" up
  # shape the data direction (source -> target); acks go back unshaped
  tc -n "$nsa" qdisc add dev "${tag}x" root tbf rate "$((E2E_LINK_MBPS * 8))mbit" burst 1mb latency 50ms
  # Only the network namespace is entered (nsenter --net), never a new mount
  # namespace as `ip netns exec` makes: the zfs command mounts zfs-fuse
  # filesystems in its own mount namespace, and a private copy pins the pools.
  start_sshd "${net}2:22" ns nsenter --net="/run/netns/$nsb"
  for _ in $(seq 1 50); do nsenter --net="/run/netns/$nsa" ssh "${sshopt[@]}" root@"${net}2" true 2>/dev/null && break; sleep 0.2; done

  rows=(); json=()
  link_row '`zfs send \| ssh \| zfs recv`' "link zfs send | ssh | zfs recv" link-ssh-pipe \
    "zfs send $src/data@bench | ssh ${sshopt[*]} root@${net}2 zfs recv $dst/data"
  for c in none auto; do
    cfg=$(tandem_cfg "$work/l-serve-$c" "${net}2" 22 serve "$c")
    link_row "tandem over ssh (serve), compress = $c" "link tandem serve compress=$c" "link-tandem-serve-$c" "$bin --config $cfg run bench --json"
  done
  mkdir -p target/bench
  ( IFS=,; echo "[${json[*]}]" ) >target/bench/e2e-link.json
  echo
  echo "Rate-limited link: veth between two network namespaces, tc tbf ${E2E_LINK_MBPS} MB/s, sshd in the target namespace"
  echo
  print_table "$E2E_LINK_MBPS" "× link rate" " wire MB |"
}

case ${E2E_ONLY:-} in "" | main) main_table ;; esac
case ${E2E_ONLY:-} in "" | link) link_table ;; esac
echo
echo "(rows also in target/bench/e2e.json and target/bench/e2e-link.json; each command's output in target/bench/e2e-logs/)"
