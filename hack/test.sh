#!/usr/bin/env bash
# Runs the test suite inside the test environment (hack/testenv/testenv.py): etcd,
# kube-apiserver, OpenBao and moto on loopback ports, torn down afterwards. Tools are built
# once into $HOME/.cache/secret-relay by hack/testenv/build-tools.sh (called by testenv.py).
#
#   hack/test.sh                      cargo test --all-targets (tests/api_server_restart.rs,
#                                     which kills the API server, only in hack/chaos.sh)
#   hack/test.sh --test smoke         only tests/smoke.rs (a target selection replaces --all-targets)
#   hack/test.sh -- --nocapture       other arguments go to cargo test as they are
#
# SECRET_RELAY_EXISTING_KUBECONFIG=PATH uses that cluster instead of a local API server.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(--all-targets)
for arg in "$@"; do
  case "$arg" in
    --) break ;;
    --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --examples | --example | \
      --example=* | --benches | --bench | --bench=* | --doc | --all-targets)
      targets=()
      break
      ;;
  esac
done
exec python3 hack/testenv/testenv.py run -- cargo test "${targets[@]}" "$@"
