#!/usr/bin/env bash
# The scale benchmark (issues 6 and 14): N ExternalSecrets in 100 namespaces, half SSM (moto),
# half Vault KV v2 (OpenBao), N/10 distinct remote keys, synced by the release binary; then a
# refresh cycle with unchanged values, one after 1 % changed, live adds, and a restart at
# steady state.
#
#   hack/bench.sh                                    N = 1000, then N = 10000
#   hack/bench.sh 1000 ...                           the given N (multiples of 20)
#   hack/bench.sh 100000                             the 100,000 run (opt-in, as 10000 is)
#   SECRET_RELAY_BENCH_PPROF_SECS=20 SECRET_RELAY_BENCH_OUT=/tmp/x hack/bench.sh 10000
#                                                    kube-apiserver's CPU profiles of the floor
#                                                    and the initial sync (20 s each) in
#                                                    target/bench/apiserver-*.pprof
#   hack/bench.sh --page                             BENCHMARKS.md made again from
#                                                    BENCHMARKS.json, no run (after a change
#                                                    of the page's layout)
#   SECRET_RELAY_BENCH_SHARDS=2 hack/bench.sh 10000  2 operator instances, one per shard
#                                                    (label secret-relay.dev/shard=shard-<j>)
#   SECRET_RELAY_BENCH_STORES=cluster hack/bench.sh  two ClusterSecretStores instead of a
#                                                    SecretStore pair per namespace
#   SECRET_RELAY_BENCH_OUT=/tmp/x hack/bench.sh 1000 reports into /tmp/x (for experiments;
#                                                    copy BENCHMARKS.json there first to
#                                                    see the earlier runs in the page)
#
# Builds the release binary (cargo build --release), then runs, for each N, the ignored test
# tests/bench_scale.rs in a fresh test environment (hack/testenv/testenv.py). Each N appends
# its run to BENCHMARKS.json (no earlier run is dropped) and rewrites BENCHMARKS.md at the repo
# root; the operators' logs go to target/bench/scale-N[-shard-J]-operator[-restart].log.
# Method and settings: tests/scale/ and the end of BENCHMARKS.md. Environment variables
# SECRET_RELAY_BENCH_* (see tests/bench_scale.rs) change the settings;
# SECRET_RELAY_BENCH_TIMEOUT bounds each N as a whole (default 45m, 120m from N = 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --page ]; then
  SECRET_RELAY_BENCH_REWRITE_PAGE=true exec cargo test --release --test bench_scale -- \
    --exact page_is_made_from_every_run
fi
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

if [ -n "${SECRET_RELAY_BENCH_PPROF_SECS:-}" ] && [ "$SECRET_RELAY_BENCH_PPROF_SECS" != 0 ]; then
  # kube-apiserver's CPU profiles of the floor and the initial sync (tests/scale/pprof.rs)
  export SECRET_RELAY_TESTENV_PROFILING=1
fi
cargo build --release --bin secret-relay
cargo test --release --test bench_scale --no-run
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
export SECRET_RELAY_BENCH_BIN="$target_dir/release/secret-relay"

failed=0
for n in "${sizes[@]}"; do
  timeout=45m
  if [ "$n" -ge 100000 ]; then
    timeout=120m
  fi
  timeout="${SECRET_RELAY_BENCH_TIMEOUT:-$timeout}"
  echo "bench.sh: N = $n, shards ${SECRET_RELAY_BENCH_SHARDS:-1}, timeout $timeout" >&2
  if ! SECRET_RELAY_BENCH_N="$n" timeout --kill-after=60 "$timeout" \
    python3 hack/testenv/testenv.py run -- \
    cargo test --release --test bench_scale -- --ignored --exact scale_benchmark \
    --nocapture --test-threads=1; then
    echo "bench.sh: the run at N = $n failed (see above)" >&2
    failed=1
  fi
done
exit "$failed"
