#!/usr/bin/env bash
# The scale benchmark (issue 6): N ExternalSecrets in 100 namespaces, half SSM (moto), half
# Vault KV v2 (OpenBao), N/10 distinct remote keys, synced by the release binary.
#
#   hack/bench.sh              N = 1000, then N = 10000
#   hack/bench.sh 1000 ...     the given N (multiples of 20)
#
# Builds the release binary (cargo build --release), then runs, for each N, the ignored test
# tests/bench_scale.rs in a fresh test environment (hack/testenv/testenv.py). Each N adds its
# run to BENCHMARKS.json and rewrites BENCHMARKS.md at the repo root; the operator's log goes
# to target/bench/scale-N-operator.log. Method and settings: tests/scale/ and the end of
# BENCHMARKS.md. Environment variables SECRET_RELAY_BENCH_* (see tests/bench_scale.rs) change
# the settings; SECRET_RELAY_BENCH_TIMEOUT (default 45m) bounds each N as a whole.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
if [ ${#sizes[@]} -eq 0 ]; then
  sizes=(1000 10000)
fi
for n in "${sizes[@]}"; do
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -eq 0 ] || [ $((n % 20)) -ne 0 ]; then
    echo "bench.sh: N must be a positive multiple of 20, not '$n'" >&2
    exit 2
  fi
done

cargo build --release --bin secret-relay
cargo test --release --test bench_scale --no-run
export SECRET_RELAY_BENCH_BIN="$PWD/target/release/secret-relay"

failed=0
for n in "${sizes[@]}"; do
  echo "bench.sh: N = $n" >&2
  if ! SECRET_RELAY_BENCH_N="$n" timeout --kill-after=60 "${SECRET_RELAY_BENCH_TIMEOUT:-45m}" \
    python3 hack/testenv/testenv.py run -- \
    cargo test --release --test bench_scale -- --ignored --exact scale_benchmark \
    --nocapture --test-threads=1; then
    echo "bench.sh: the run at N = $n failed (see above)" >&2
    failed=1
  fi
done
exit "$failed"
