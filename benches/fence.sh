#!/usr/bin/env bash
# Fence latency against a simulated BMC (OpenIPMI's ipmi_sim on loopback):
# the time from "fence off" to a confirmed Off, tandem next to Debian's
# fence_ipmilan, median of N runs each. The machine is powered on again
# (through its power file, not through IPMI) before every run.
#
#   bash benches/fence.sh            # N=20
#   FENCE_RUNS=50 bash benches/fence.sh
#
# Rows also go to target/bench/fence.json.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${FENCE_RUNS:-20}
bash "$here/scripts/setup.sh" ipmi >/dev/null
tandem=${FENCE_TANDEM:-}
if [ -z "$tandem" ]; then
  (cd "$here" && cargo build -q --release -p tandem)
  tandem=$here/target/release/tandem
fi
work=$(mktemp -d /tmp/tandem-fence-bench.XXXXXX)
cleanup() { bash "$here/scripts/ipmi-sim.sh" stop "$work/bmc" || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(bash "$here/scripts/ipmi-sim.sh" start "$work/bmc")
printf 'secret\n' > "$work/pw"; chmod 600 "$work/pw"
cat > "$work/tandem.toml" <<CONF
state_dir = "$work/state"
local_node = "bench"
[nodes.bench]
address = "local"
[nodes.oracle]
address = "192.0.2.1"
[[nodes.oracle.fence]]
kind = "ipmi"
host = "127.0.0.1"
port = $port
username = "admin"
password_file = "$work/pw"
CONF

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

measure() { # label, command...
  local label=$1; shift
  : > "$work/times"
  for _ in $(seq 1 "$runs"); do
    echo 1 > "$work/bmc/power"
    local t0 t1
    t0=$(now)
    "$@" > "$work/out" 2>&1 || { echo "$label failed:"; cat "$work/out"; exit 1; }
    t1=$(now)
    [ "$(cat "$work/bmc/power")" = 0 ] || { echo "$label: the machine is still on"; exit 1; }
    echo "$t1 - $t0" | bc -l >> "$work/times"
  done
  local med min max
  med=$(median < "$work/times"); min=$(sort -n "$work/times" | head -1); max=$(sort -n "$work/times" | tail -1)
  printf '| %-52s | %8.3f | %8.3f | %8.3f |\n' "$label" "$med" "$min" "$max"
  printf '{"path": "%s", "median_s": %.4f, "min_s": %.4f, "max_s": %.4f, "runs": %d}' "$label" "$med" "$min" "$max" "$runs" >> "$work/rows"
  echo >> "$work/rows"
}

echo "fence off -> confirmed off, ipmi_sim on 127.0.0.1:$port, $runs runs each (seconds)"
echo
echo "| path                                                 |   median |      min |      max |"
echo "|------------------------------------------------------|----------|----------|----------|"
: > "$work/rows"
measure "tandem fence off (cipher suite asked, 200 ms poll)" "$tandem" --config "$work/tandem.toml" fence off oracle --yes
if command -v fence_ipmilan >/dev/null; then
  measure "fence_ipmilan --lanplus --cipher=3 -o off" fence_ipmilan --ip 127.0.0.1 --ipport "$port" \
    --username admin --password secret --lanplus --cipher=3 --action off
fi
mkdir -p "$here/target/bench"
{ echo "["; paste -sd, "$work/rows"; echo "]"; } > "$here/target/bench/fence.json"
echo
echo "rows: target/bench/fence.json"
