#!/usr/bin/env bash
# The test command (README, .ci/run): installs the servers and tools the tests run for real,
# builds the binaries that the end-to-end tests start, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, as "command:package". apt-get update runs once, and only
# when something is missing.
need=(
  "mosquitto:mosquitto"          # MQTT broker: uplink, MQTT ingest and MQTT meter tests
  "mosquitto_passwd:mosquitto"   # password file for the TLS/authentication test
  "openssl:openssl"              # certificates for the TLS test
  "socat:socat"                  # pseudo-terminal pair for the gateway's serial (RTU) tests
  "systemd-analyze:systemd"      # deploy tests: systemd-analyze verify on the units
  "promtool:prometheus"          # deploy tests: rule checks and unit tests, check metrics
  "amtool:prometheus-alertmanager"  # deploy tests: Alertmanager configuration
  "kubectl:kubernetes-client"    # deploy tests: offline parse of the Kubernetes manifest
  "c++:g++"                      # fuzz/run.sh: libFuzzer is C++
  "prometheus-alertmanager:prometheus-alertmanager"   # alerts e2e: alerts posted to a real Alertmanager
  "prometheus:prometheus"        # dashboards e2e: every PromQL panel query runs on a real Prometheus
  "influxd:influxdb"             # InfluxDB 1.x: the InfluxDB storage backend test (tests/tests/influx.rs)
  "victoria-metrics:victoria-metrics"  # the same backend's v2 write path
  "chromium:chromium"            # headless browser: the bureau's page and the printable reports
  "unzip:unzip"                  # the report workbooks' page setup (tests/tests/reports.rs)
  "pdftoppm:poppler-utils"       # the printed reports' pages as PNG, their text and page count (tests/tests/reports.rs)
)
missing=()
for item in "${need[@]}"; do
  cmd="${item%%:*}"; pkg="${item##*:}"
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("$pkg")
  fi
done
# A Chinese font, so that the reports' screenshots show the text (tests/tests/reports.rs).
if ! fc-list 2>/dev/null | grep -qiE "wqy|noto sans cjk"; then
  missing+=("fonts-wqy-microhei")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: missing Debian packages: ${missing[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

# InfluxData's official Python clients, for tests/tests/influx_clients.rs (PyPI, only when
# missing).
if ! python3 -c 'import influxdb_client, influxdb' >/dev/null 2>&1; then
  python3 -m pip install -q influxdb-client influxdb
fi

# cargo-nextest runs each test in its own process, in parallel; fall back to cargo test.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

# Fuzzing (fuzz/README.md): every target briefly from its seed corpus, FUZZ_SECONDS each
# (default 10); FUZZ_SECONDS=0 skips it.
if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
  fuzz/run.sh
fi
