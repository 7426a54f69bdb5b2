#!/usr/bin/env bash
# The main job end to end on the embedded local environment: control plane, OpenBao and moto
# up; CRDs installed; parameters and KV secrets written; the examples' dev overlay applied; the
# operator running; then the resulting Secrets, `kubectl describe externalsecret` and
# `kubectl secret-relay status -A` printed.
#
#   hack/demo.sh          the operator as a process of this machine
#   hack/demo.sh --pod    the operator as Pods: the image built by hack/image/build.sh,
#                         `helm install` of charts/secret-relay on the environment's node
#                         (`testenv.py --node`; root only)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --pod ]; then
  image="${CARGO_TARGET_DIR:-target}/oci/secret-relay.tar"
  bash hack/image/build.sh operator "$image"
  exec python3 hack/testenv/testenv.py run --node --import "$image" -- env DEMO_POD=1 bash hack/demo-inner.sh
fi
cargo build --quiet
exec python3 hack/testenv/testenv.py run -- bash hack/demo-inner.sh
