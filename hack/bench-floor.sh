#!/usr/bin/env bash
# The API server's own cost of each request the operator makes per ExternalSecret (issue 14):
# the floor under the initial sync on this machine. Writes BENCHMARKS-floor.json/md at the repo
# root (method: hack/bench_floor.py).
#
#   hack/bench-floor.sh [COUNT]     COUNT requests of each type (default 2000)
#   SECRET_RELAY_BENCH_PPROF_SECS=10 hack/bench-floor.sh
#                                   also kube-apiserver's CPU profile under status PATCHes
#                                   and under Secret POSTs (10 s each), in BENCHMARKS-floor.md
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin secret-relay
export SECRET_RELAY_BENCH_BIN="$PWD/target/release/secret-relay"
if [ -n "${SECRET_RELAY_BENCH_PPROF_SECS:-}" ]; then
  export SECRET_RELAY_TESTENV_PROFILING=1
fi
exec python3 hack/testenv/testenv.py run -- python3 hack/bench_floor.py "${1:-2000}"
