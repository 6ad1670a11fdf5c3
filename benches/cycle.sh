#!/usr/bin/env bash
# Time of a replication cycle with no new data, for 1 and 100 jobs, on
# zfs-fuse file-backed pools on this machine, next to a hand-written shell
# cycle that does the minimum by hand (snapshot, send -i | receive, destroy
# the previous snapshot on both sides) for the same datasets.
#
#   bash benches/cycle.sh            # 1 and 100 jobs, 5 rounds each
#   JOBS="1 10" ROUNDS=3 bash benches/cycle.sh
#
# zfs-fuse lacks the `written` property, so a no-change cycle there still
# takes and sends an (empty) snapshot; on OpenZFS tandem skips it ("up to
# date") and a no-change cycle is two listings per node.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh zfs >/dev/null
cargo build --quiet --release -p tandem
bin=$PWD/target/release/tandem
JOBS=${JOBS:-"1 100"}
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d /tmp/tandem-bench-XXXX)
pa=tbench$$a; pb=tbench$$b
cleanup() {
  for p in $pa $pb; do for _ in 1 2 3 4 5; do zpool destroy -f $p 2>/dev/null && break; sleep 0.5; done; done
  rm -rf "$work"
}
trap cleanup EXIT
truncate -s 1G "$work/a.img" "$work/b.img"
zpool create -f $pa "$work/a.img"; zpool create -f $pb "$work/b.img"
zfs create $pa/data; zfs create $pa/shell; zfs create $pb/replica; zfs create $pb/shell

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

printf '%-6s %-26s %-26s %-22s\n' jobs "tandem no-change cycle" "per job" "shell baseline cycle"
rows=()
for n in $JOBS; do
  cfg=$work/t$n.toml
  { echo "state_dir = \"$work/state$n\""; echo 'local_node = "a"'; echo 'parallel = 4'
    echo '[nodes.a]'; echo 'address = "local"'; echo '[nodes.b]'; echo 'address = "local"'; } > "$cfg"
  for i in $(seq 1 "$n"); do
    ds=$pa/data/n${n}d$i
    zfs create "$ds"; echo "data $i" > "/$ds/f"
    printf '[jobs.n%sj%s]\nsource = "a:%s"\ntarget = "b:%s/replica/n%sd%s"\nkeep = 2\n' "$n" "$i" "$ds" "$pb" "$n" "$i" >> "$cfg"
  done
  $bin -c "$cfg" run >/dev/null   # first cycle: full sends
  times=()
  for _ in $(seq 1 "$ROUNDS"); do
    t0=$(now); $bin -c "$cfg" run >/dev/null; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  done
  t=$(printf '%s\n' "${times[@]}" | median)

  # baseline: the same number of datasets, cycled by hand
  for i in $(seq 1 "$n"); do
    zfs create "$pa/shell/n${n}d$i"; zfs snapshot "$pa/shell/n${n}d$i@s0"
    zfs send "$pa/shell/n${n}d$i@s0" | zfs receive "$pb/shell/n${n}d$i"
  done
  btimes=()
  for r in $(seq 1 "$ROUNDS"); do
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
  printf '%-6s %-26s %-26s %-22s\n' "$n" "${t} s" "${per} ms" "${b} s"
  rows+=("{\"jobs\": $n, \"tandem_s\": $t, \"baseline_s\": $b}")
done
mkdir -p target/bench
( IFS=,; echo "[${rows[*]}]" ) > target/bench/cycle.json
echo "(median of $ROUNDS rounds; zfs-fuse; rows also in target/bench/cycle.json)"
