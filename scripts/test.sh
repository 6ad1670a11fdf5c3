#!/usr/bin/env bash
# The whole test suite: installs and starts what it needs (zfs-fuse, sshd on
# loopback), then rustfmt, clippy and every test. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
bash scripts/setup.sh zfs sshd
export TANDEM_TEST_SSH_PORT=${TANDEM_TEST_SSH_PORT:-2222}
export TANDEM_TEST_SSH_KEY=${TANDEM_TEST_SSH_KEY:-$PWD/target/test-env/ssh/client_ed25519}
export TANDEM_TEST_REQUIRE_ZFS=1   # a missing ZFS or sshd fails the tests instead of skipping them

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== done in $(( $(date +%s) - t0 ))s"
