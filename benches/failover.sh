#!/usr/bin/env bash
# Recovery time of automatic failover on the netns cluster: three corosync
# nodes in network namespaces, an ipmi_sim BMC per node, zfs-fuse pools,
# the real daemons (crates/tandem/tests/auto_failover.rs is the harness).
# For each scenario, the time from the fault (power cut, or cable cut) to
# (a) the replica writable and (b) the on_promote hook started, median of N
# runs, printed next to Proxmox VE HA's documented timeline.
#
#   bash benches/failover.sh                       # N=10, failover_delay 10s (the default)
#   FAILOVER_RUNS=3 FAILOVER_DELAY=3s bash benches/failover.sh
#   FAILOVER_TOKEN_MS=3000 bash benches/failover.sh  # corosync's default token instead of the lab's 1 s
#
# Rows go to target/bench/failover.json as {"scenario", "runs",
# "rto_writable_s", "rto_hook_s", "unfenced_promotions"} (medians, seconds);
# every single run to target/bench/failover-runs.jsonl. Run it on an
# otherwise idle machine: the table says whether it was (load average).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
runs=${FAILOVER_RUNS:-10}
delay=${FAILOVER_DELAY:-10s}
token=${FAILOVER_TOKEN_MS:-1000}
bash scripts/setup.sh zfs ipmi corosync >/dev/null
mkdir -p target/bench
out=target/bench/failover-runs.jsonl
: > "$out"; : > target/bench/failover-runs.log
load_before=$(cut -d' ' -f1 /proc/loadavg)
cargo nextest run -p tandem --test auto_failover --no-run >/dev/null 2>&1 ||
  cargo nextest run -p tandem --test auto_failover --no-run
filter='test(/powered_off_fails_over|reachable_bmc|hung_bmc/)'
for i in $(seq 1 "$runs"); do
  echo "failover bench: run $i of $runs"
  TANDEM_RTO_OUT=$here/$out TANDEM_RTO_DELAY=$delay TANDEM_LAB_TOKEN_MS=$token \
  TANDEM_TEST_REQUIRE_ZFS=1 TANDEM_TEST_REQUIRE_COROSYNC=1 TANDEM_TEST_REQUIRE_IPMI=1 \
    cargo nextest run -p tandem --test auto_failover -E "$filter" --no-fail-fast >>"$here/target/bench/failover-runs.log" 2>&1 ||
    echo "failover bench: run $i had a failing test (its rows are kept if it measured)"
done
load_after=$(cut -d' ' -f1 /proc/loadavg)

python3 - "$out" "$runs" "$delay" "$token" "$load_before" "$load_after" <<'PY'
import json, statistics, sys
path, runs, delay, token, lb, la = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["scenario"], []).append(r)
out = []
print()
print(f"Automatic failover, netns cluster (3 corosync nodes, token {token} ms), failover_delay = {delay},")
print(f"medians of {runs} runs; load average {lb} before, {la} after "
      f"({'idle' if float(lb) < 0.5 else 'NOT idle'} at the start; 2 cores); debug build.")
print()
print(f"| {'scenario':<44} | runs | fault → writable | fault → hook | unfenced |")
print(f"|{'-'*46}|------|------------------|--------------|----------|")
for name, rs in by.items():
    w = statistics.median(r["rto_writable_s"] for r in rs)
    h = statistics.median(r["rto_hook_s"] for r in rs)
    u = sum(r["unfenced"] for r in rs)
    out.append({"scenario": name, "runs": len(rs), "rto_writable_s": round(w, 2),
                "rto_hook_s": round(h, 2), "unfenced_promotions": u})
    print(f"| {name:<44} | {len(rs):>4} | {w:>14.2f} s | {h:>10.2f} s | {u:>8} |")
print(f"| {'Proxmox VE HA (documented, not measured)':<44} |    - | {'≥ 120 s':>16} | {'~120-180 s':>12} |        - |")
print()
print("Proxmox VE HA: the dead node's LRM lock must expire (120 s) before its services are")
print("recovered, since its only fence is the node's own watchdog; then the CRM starts them.")
json.dump(out, open("target/bench/failover.json", "w"), indent=1)
print("rows written to target/bench/failover.json")
PY
