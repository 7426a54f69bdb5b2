#!/usr/bin/env bash
# Runs the test suite inside the test environment (hack/testenv/testenv.py): etcd,
# kube-apiserver, OpenBao and moto on loopback ports, torn down afterwards.
# Arguments go to `cargo test`, e.g. `hack/test.sh --test smoke`.
# SECRET_RELAY_EXISTING_KUBECONFIG=PATH uses that cluster instead of a local API server.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 hack/testenv/testenv.py run -- cargo test --all-targets "$@"
