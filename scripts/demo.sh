#!/usr/bin/env bash
# The demo: installs and starts zfs-fuse and a simulated BMC (OpenIPMI's
# ipmi_sim) if needed, then runs `tandem demo`: two file-backed pools,
# replication cycles, a fenced failover, reverse, status, clean-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh zfs ipmi >/dev/null
bmc=$(mktemp -d /tmp/tandem-demo-bmc.XXXXXX)
trap 'bash scripts/ipmi-sim.sh stop "$bmc" >/dev/null 2>&1; rm -rf "$bmc"' EXIT
port=$(bash scripts/ipmi-sim.sh start "$bmc")
printf 'secret\n' > "$bmc/password"; chmod 600 "$bmc/password"
cargo build --quiet --release -p tandem
echo "(a simulated BMC for pve1 runs on 127.0.0.1:$port: OpenIPMI's ipmi_sim, started by scripts/ipmi-sim.sh)"
./target/release/tandem demo --bmc "127.0.0.1:$port" --bmc-password-file "$bmc/password" "$@"
