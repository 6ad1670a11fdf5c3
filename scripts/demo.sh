#!/usr/bin/env bash
# The demo: installs and starts zfs-fuse if needed, then runs `tandem demo`
# (two file-backed pools, several replication cycles, status, clean-up).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh zfs >/dev/null
exec cargo run --quiet --release -p tandem -- demo "$@"
