#!/usr/bin/env bash
# A short coverage-guided fuzz run of every target (cargo-fuzz, libFuzzer), called by
# tests/run.sh after the tests. Each target starts from its seed corpus in fuzz/corpus/<target>/
# (never modified here; new inputs go to a scratch corpus in the target directory) and runs for
# FUZZ_SECONDS (default 10). Prints each target's executions; fails on any crash, whose input
# libFuzzer leaves in fuzz/artifacts/<target>/.
#
# cargo-fuzz wants a nightly toolchain; the stable one accepts its flags with RUSTC_BOOTSTRAP=1.
# Without a sanitizer (--sanitizer none): AddressSanitizer needs -Zsanitizer and a nightly
# standard library, and every crate here forbids unsafe code anyway. Panics, overflows
# (overflow-checks on) and assertion failures in the targets are what is found.
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECONDS:-10}"
targets=(wire_decode lineproto profile_load registry_load modbus_decode chunk_decode dlt645_decode cjt188_decode collector_frame collector_xml log_decode)
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked, about a minute)"
  cargo install cargo-fuzz --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --codegen-units 16 --target-dir "$target_dir")
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz/run.sh: built ${#targets[@]} targets in $(( $(date +%s) - start )) s"

summary=()
for t in "${targets[@]}"; do
  scratch="$target_dir/corpus/$t"
  mkdir -p "$scratch" "artifacts/$t"
  log="$target_dir/$t.log"
  if ! cargo fuzz run "${flags[@]}" "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz/run.sh: $t FAILED (input in fuzz/artifacts/$t/, full log $log)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo "?")
  summary+=("$t: $execs executions in ${secs} s, coverage $cov edges, corpus $(ls "$scratch" | wc -l) new + $(ls "corpus/$t" | wc -l) seeds")
done
printf 'fuzz %s\n' "${summary[@]}"
echo "fuzz/run.sh: ${#targets[@]} targets, no crash ($(( $(date +%s) - start )) s in all)"
