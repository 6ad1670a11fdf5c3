#!/usr/bin/env bash
# Time of a replication cycle with no new data, for 1, 100 and 1000 jobs,
# on zfs-fuse file-backed pools on this machine (unmounted datasets), next to a hand-written
# shell cycle that does the minimum by hand (snapshot, send -i | receive,
# destroy the previous snapshot on both sides) for the same datasets; one
# recursive job over a tree of 100 disks next to the same loop over 100
# datasets; the
# `zfs` processes tandem starts per job in one steady-state cycle, counted
# through a `zfs_path` wrapper (by subcommand); and the peak RSS of `tandem
# daemon` running the largest job set for one cycle.
#
#   bash benches/cycle.sh            # 1, 100 and 1000 jobs, 5 rounds each
#   JOBS="1 10" ROUNDS=3 DISKS=10 bash benches/cycle.sh   # DISKS=0: no tree row
#
# Rows go to target/bench/cycle.json. Run it on an otherwise idle machine:
# the table says whether it was (load average before and after).
#
# zfs-fuse lacks the `written` property, so a no-change cycle there still
# takes and sends an (empty) snapshot; on OpenZFS tandem skips it ("up to
# date") and a no-change cycle is two listings per node.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh zfs >/dev/null
cargo build --quiet --release -p tandem
bin=$PWD/target/release/tandem
JOBS=${JOBS:-"1 100 1000"}
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d /tmp/tandem-bench-XXXX)
pa=tbench$$a; pb=tbench$$b
cleanup() {
  for p in $pa $pb; do for _ in 1 2 3 4 5; do zpool destroy -f $p 2>/dev/null && break; sleep 0.5; done; done
  rm -rf "$work"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1 /proc/loadavg)
# every zfs process tandem starts, one line each: "<subcommand>"
counter=$work/zfs-count
cat > "$counter" <<EOS
#!/bin/sh
[ -n "\$TANDEM_BENCH_COUNT" ] && echo "\$1" >> "\$TANDEM_BENCH_COUNT"
exec /usr/sbin/zfs "\$@"
EOS
chmod 755 "$counter"
truncate -s 4G "$work/a.img" "$work/b.img"
zpool create -f $pa "$work/a.img"; zpool create -f $pb "$work/b.img"
# Unmounted (mountpoint=none, inherited by every job's dataset and replica):
# zfs-fuse gives each mounted dataset its own FUSE mount and loses them past
# ~1000, and a no-change cycle needs no files.
for d in $pa/data $pa/shell $pb/replica $pb/shell; do zfs create -o mountpoint=none "$d"; done

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
# tandem_cycles CFG ROUNDS COUNTFILE: the median time of ROUNDS no-change
# cycles (after a first, full one), then one more counting its processes
tandem_cycles() {
  local cfg=$1 rounds=$2 count=$3 times=() t0 t1
  $bin -c "$cfg" run >/dev/null   # first cycle: full sends
  for _ in $(seq 1 "$rounds"); do
    t0=$(now); $bin -c "$cfg" run >/dev/null; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  done
  : > "$count"
  TANDEM_BENCH_COUNT=$count $bin -c "$cfg" run >/dev/null
  printf '%s\n' "${times[@]}" | median
}
# shell_cycles PREFIX N ROUNDS: the same number of datasets cycled by hand
# (snapshot, send -i | receive, destroy the previous on both sides)
shell_cycles() {
  local p=$1 n=$2 rounds=$3 btimes=() t0 t1 i r s d
  for i in $(seq 1 "$n"); do
    zfs create "$pa/shell/$p$i"; zfs snapshot "$pa/shell/$p$i@s0"
    zfs send "$pa/shell/$p$i@s0" | zfs receive "$pb/shell/$p$i"
  done
  for r in $(seq 1 "$rounds"); do
    t0=$(now)
    for i in $(seq 1 "$n"); do
      s=$pa/shell/$p$i; d=$pb/shell/$p$i
      zfs snapshot "$s@s$r"
      zfs send -i "$s@s$((r-1))" "$s@s$r" | zfs receive "$d"
      zfs destroy "$s@s$((r-1))"; zfs destroy "$d@s$((r-1))"
    done
    t1=$(now); btimes+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  done
  printf '%s\n' "${btimes[@]}" | median
}
# per_unit COUNTFILE N: "<processes per unit> (<subcommand> <per unit>, ...)"
per_unit() {
  awk -v n="$2" '{c[$1]++; t++} END {printf "%.1f (", t / n; for (k in c) {printf "%s%s %.1f", sep, k, c[k] / n; sep=", "}; printf ")"}' "$1"
}

printf '%-6s %-24s %-12s %-22s %-9s %s\n' jobs "tandem no-change cycle" "per job" "shell baseline cycle" "× shell" "zfs processes per job (by subcommand)"
rows=()
for n in $JOBS; do
  cfg=$work/t$n.toml
  { echo "state_dir = \"$work/state$n\""; echo 'local_node = "a"'; echo 'parallel = 4'
    echo '[nodes.a]'; echo 'address = "local"'; echo "zfs_path = \"$counter\""
    echo '[nodes.b]'; echo 'address = "local"'; echo "zfs_path = \"$counter\""; } > "$cfg"
  for i in $(seq 1 "$n"); do
    ds=$pa/data/n${n}d$i
    zfs create "$ds"
    printf '[jobs.n%sj%s]\nsource = "a:%s"\ntarget = "b:%s/replica/n%sd%s"\nkeep = 2\n' "$n" "$i" "$ds" "$pb" "$n" "$i" >> "$cfg"
  done
  rounds=$ROUNDS; [ "$n" -ge 1000 ] && [ "$rounds" -gt 3 ] && rounds=3   # 1000 jobs: 3 rounds
  t=$(tandem_cycles "$cfg" "$rounds" "$work/count$n")
  counted=$(per_unit "$work/count$n" "$n"); per_proc=${counted%% *}
  b=$(shell_cycles "n${n}d" "$n" "$rounds")
  per=$(awk -v t="$t" -v n="$n" 'BEGIN {printf "%.1f", t * 1000 / n}')
  ratio=$(awk -v t="$t" -v b="$b" 'BEGIN {printf "%.2f", t / b}')
  printf '%-6s %-24s %-12s %-22s %-9s %s\n' "$n" "${t} s" "${per} ms" "${b} s" "$ratio" "$counted"
  rows+=("{\"jobs\": $n, \"tandem_s\": $t, \"baseline_s\": $b, \"ratio\": $ratio, \"zfs_processes_per_job\": $per_proc}")
  last_cfg=$cfg; last_n=$n
done

# one guest job over a tree of DISKS datasets (`recursive = true`): one
# `zfs snapshot -r`, then a send and a receive per disk, next to the shell
# loop over as many datasets
DISKS=${DISKS:-100}
if [ "$DISKS" -gt 0 ]; then
  cfg=$work/tree.toml
  { echo "state_dir = \"$work/state-tree\""; echo 'local_node = "a"'
    echo '[nodes.a]'; echo 'address = "local"'; echo "zfs_path = \"$counter\""
    echo '[nodes.b]'; echo 'address = "local"'; echo "zfs_path = \"$counter\""
    printf '[jobs.tree]\nsource = "a:%s/tree"\ntarget = "b:%s/tree"\nrecursive = true\nkeep = 2\n' "$pa" "$pb"; } > "$cfg"
  zfs create "$pa/tree"
  for i in $(seq 1 "$DISKS"); do zfs create "$pa/tree/disk-$i"; done
  t=$(tandem_cycles "$cfg" "$ROUNDS" "$work/count-tree")
  counted=$(per_unit "$work/count-tree" "$DISKS"); per_proc=${counted%% *}
  b=$(shell_cycles tree "$DISKS" "$ROUNDS")
  per=$(awk -v t="$t" -v n="$DISKS" 'BEGIN {printf "%.1f", t * 1000 / n}')
  ratio=$(awk -v t="$t" -v b="$b" 'BEGIN {printf "%.2f", t / b}')
  printf '%-6s %-24s %-12s %-22s %-9s %s\n' "1×$DISKS" "${t} s" "${per} ms/disk" "${b} s" "$ratio" "$counted per disk"
  rows+=("{\"jobs\": 1, \"disks\": $DISKS, \"recursive\": true, \"tandem_s\": $t, \"baseline_s\": $b, \"ratio\": $ratio, \"zfs_processes_per_disk\": $per_proc}")
fi

# the daemon's peak RSS with the largest job set: start it, let it run one
# cycle of every job (their interval is the default 1m: all are due at once),
# read VmHWM, stop it
rss=""
if [ -n "${last_cfg:-}" ]; then
  touch "$work/daemon.start"; sleep 1
  $bin -c "$last_cfg" daemon > "$work/daemon.log" 2>&1 &
  dpid=$!
  for _ in $(seq 1 900); do
    sleep 1
    # every job's state file rewritten since the daemon started
    fresh=$(find "$work/state$last_n/jobs" -name '*.json' -newer "$work/daemon.start" 2>/dev/null | wc -l)
    [ "$fresh" -ge "$last_n" ] && break
  done
  rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$dpid/status" 2>/dev/null || true)
  kill -TERM "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true
  echo "tandem daemon with $last_n jobs, one cycle: peak RSS ${rss:-?} MB"
fi
load_after=$(cut -d' ' -f1 /proc/loadavg)
mkdir -p target/bench
( IFS=,; echo "{\"rows\": [${rows[*]}], \"daemon_jobs\": ${last_n:-0}, \"daemon_peak_rss_mb\": ${rss:-null}, \"load_before\": $load_before, \"load_after\": $load_after}" ) > target/bench/cycle.json
idle=$(awk -v l="$load_before" 'BEGIN {print (l < 0.5) ? "idle" : "NOT idle"}')
echo "(median of $ROUNDS rounds, 3 at 1000 jobs; zfs-fuse; load average $load_before before, $load_after after: $idle at the start; rows also in target/bench/cycle.json)"
