#!/usr/bin/env bash
# Time of a replication cycle with no new data, for 1, 100 and 1000 jobs,
# on zfs-fuse file-backed pools on this machine (unmounted datasets), next to a hand-written
# shell cycle that does the minimum by hand (snapshot, send -i | receive,
# destroy the previous snapshot on both sides) for the same datasets; the
# `zfs` processes tandem starts per job in one steady-state cycle, counted
# through a `zfs_path` wrapper (by subcommand); and the peak RSS of `tandem
# daemon` running the largest job set for one cycle.
#
#   bash benches/cycle.sh            # 1, 100 and 1000 jobs, 5 rounds each
#   JOBS="1 10" ROUNDS=3 bash benches/cycle.sh
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
  $bin -c "$cfg" run >/dev/null   # first cycle: full sends
  times=()
  rounds=$ROUNDS; [ "$n" -ge 1000 ] && [ "$rounds" -gt 3 ] && rounds=3   # 1000 jobs: 3 rounds
  for _ in $(seq 1 "$rounds"); do
    t0=$(now); $bin -c "$cfg" run >/dev/null; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  done
  t=$(printf '%s\n' "${times[@]}" | median)
  # one more steady-state cycle, counting its zfs processes
  : > "$work/count$n"
  TANDEM_BENCH_COUNT=$work/count$n $bin -c "$cfg" run >/dev/null
  procs=$(wc -l < "$work/count$n")
  per_proc=$(awk -v p="$procs" -v n="$n" 'BEGIN {printf "%.1f", p / n}')
  by=$(sort "$work/count$n" | uniq -c | awk -v n="$n" '{printf "%s%s %.1f", sep, $2, $1 / n; sep=", "}')

  # baseline: the same number of datasets, cycled by hand
  for i in $(seq 1 "$n"); do
    zfs create "$pa/shell/n${n}d$i"; zfs snapshot "$pa/shell/n${n}d$i@s0"
    zfs send "$pa/shell/n${n}d$i@s0" | zfs receive "$pb/shell/n${n}d$i"
  done
  btimes=()
  for r in $(seq 1 "$rounds"); do
    t0=$(now)
    for i in $(seq 1 "$n"); do
      s=$pa/shell/n${n}d$i; d=$pb/shell/n${n}d$i
      zfs snapshot "$s@s$r"
      zfs send -i "$s@s$((r-1))" "$s@s$r" | zfs receive "$d"
      zfs destroy "$s@s$((r-1))"; zfs destroy "$d@s$((r-1))"
    done
    t1=$(now); btimes+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  done
  b=$(printf '%s\n' "${btimes[@]}" | median)
  per=$(awk -v t="$t" -v n="$n" 'BEGIN {printf "%.1f", t * 1000 / n}')
  ratio=$(awk -v t="$t" -v b="$b" 'BEGIN {printf "%.2f", t / b}')
  printf '%-6s %-24s %-12s %-22s %-9s %s\n' "$n" "${t} s" "${per} ms" "${b} s" "$ratio" "$per_proc ($by)"
  rows+=("{\"jobs\": $n, \"tandem_s\": $t, \"baseline_s\": $b, \"ratio\": $ratio, \"zfs_processes_per_job\": $per_proc}")
  last_cfg=$cfg; last_n=$n
done

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
