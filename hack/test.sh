#!/usr/bin/env bash
# Runs the test suite inside the test environment (hack/testenv/testenv.py): etcd,
# kube-apiserver, OpenBao and moto on loopback ports, torn down afterwards. Tools are built
# once into $HOME/.cache/secret-relay by hack/testenv/build-tools.sh (called by testenv.py).
#
#   hack/test.sh                      cargo test --all-targets, then tests/api_server_restart.rs
#                                     (it kills the API server) alone in a second environment
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
if [ ${#targets[@]} -eq 0 ] || [ -n "${SECRET_RELAY_EXISTING_KUBECONFIG:-}" ]; then
  exec python3 hack/testenv/testenv.py run -- cargo test "${targets[@]}" "$@"
fi
python3 hack/testenv/testenv.py run -- cargo test "${targets[@]}" "$@"
# tests/api_server_restart.rs kills its environment's API server, so it is ignored above and
# runs here alone, in an environment of its own (not against an existing cluster).
exec python3 hack/testenv/testenv.py run -- cargo test --test api_server_restart -- --ignored
