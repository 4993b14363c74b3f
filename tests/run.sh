#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, builds the real binaries
# that the end-to-end tests run, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The gateway's serial (RTU) tests talk over a pseudo-terminal pair made by socat.
if ! command -v socat >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y socat >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y socat >/dev/null; }
  else
    echo "tests need socat (Debian package socat): apt-get install socat" >&2
  fi
fi

# cargo-nextest runs each test in its own process, in parallel; fall back to cargo test.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
