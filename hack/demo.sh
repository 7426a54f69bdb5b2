#!/usr/bin/env bash
# The main job end to end on the embedded local environment: control plane, OpenBao and moto
# up; CRDs installed; parameters and KV secrets written; the examples' dev overlay applied; the
# operator running; then the resulting Secrets and `kubectl describe externalsecret` printed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
exec python3 hack/testenv/testenv.py run -- bash hack/demo-inner.sh
