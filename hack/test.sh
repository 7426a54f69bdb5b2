#!/usr/bin/env bash
# Runs the test suite inside the test environment (hack/testenv/testenv.py): etcd,
# kube-apiserver, OpenBao and moto on loopback ports, torn down afterwards. Tools are built
# once into $HOME/.cache/secret-relay by hack/testenv/build-tools.sh (called by testenv.py).
#
#   hack/test.sh                      cargo test --all-targets, then tests/api_server_restart.rs
#                                     (it kills the API server) alone in a second environment,
#                                     then the node tier (below)
#   hack/test.sh --test smoke         only tests/smoke.rs (a target selection replaces --all-targets)
#   hack/test.sh -- --nocapture       other arguments go to cargo test as they are
#   hack/test.sh --node-only          only the node tier
#
# The node tier: tests/node.rs in an environment of its own with a node (`testenv.py run
# --node`: containerd, kubelet, scheduler, controller-manager on this machine, root only),
# running the operator image that hack/image/build.sh builds (the Dockerfile's layout, without
# Docker) as the chart's Pods. SECRET_RELAY_NODE_TIER=0 skips it; without root it is skipped
# with a message.
#
# SECRET_RELAY_EXISTING_KUBECONFIG=PATH uses that cluster instead of a local API server (and
# skips the node tier).
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh clone's build takes about 5 GiB (target/) and the node tier's image build about 3 GiB
# more (its cache under $HOME/.cache); a full disk shows up late as a linker crash.
free_gib() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
mkdir -p "${CARGO_TARGET_DIR:-target}"
seen=""
for dir in "${CARGO_TARGET_DIR:-target}" "$HOME"; do
  dev=$(stat -c %d "$dir" 2>/dev/null || echo "$dir")
  case " $seen " in *" $dev "*) continue ;; esac
  seen="$seen $dev"
  free=$(free_gib "$dir")
  if [ -n "$free" ] && [ "$free" -lt 8 ]; then
    echo "test.sh: warning: only ${free} GiB free on the file system of $dir; a run from a" \
      "fresh clone needs about 8 GiB (5 for target/, 3 for the node image's build cache)" >&2
  fi
done

node_tier() {
  if [ "${SECRET_RELAY_NODE_TIER:-1}" = 0 ] || [ -n "${SECRET_RELAY_EXISTING_KUBECONFIG:-}" ]; then
    echo "test.sh: node tier skipped (SECRET_RELAY_NODE_TIER=0 or an existing cluster)" >&2
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: node tier skipped: it needs root (containerd, kubelet); CI runs it" >&2
    return 0
  fi
  local start=$SECONDS image
  image="${CARGO_TARGET_DIR:-target}/oci/secret-relay.tar"
  bash hack/image/build.sh operator "$image"
  python3 hack/testenv/testenv.py run --node --import "$image" -- \
    cargo test --test node -- --nocapture
  echo "test.sh: node tier took $((SECONDS - start))s" >&2
}

targets=(--all-targets)
for arg in "$@"; do
  case "$arg" in
    --) break ;;
    --node-only)
      [ $# -eq 1 ] || { echo "test.sh: --node-only takes no other arguments" >&2; exit 2; }
      SECRET_RELAY_NODE_TIER=1 node_tier
      exit 0
      ;;
    --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --examples | --example | \
      --example=* | --benches | --bench | --bench=* | --doc | --all-targets)
      targets=()
      break
      ;;
  esac
done
if [ ${#targets[@]} -eq 0 ] || [ $# -gt 0 ]; then
  # A selection or extra cargo arguments: that run only.
  exec python3 hack/testenv/testenv.py run -- cargo test "${targets[@]}" "$@"
fi
python3 hack/testenv/testenv.py run -- cargo test "${targets[@]}"
# tests/api_server_restart.rs kills its environment's API server, so it is ignored above and
# runs here alone, in an environment of its own (not against an existing cluster).
if [ -z "${SECRET_RELAY_EXISTING_KUBECONFIG:-}" ]; then
  python3 hack/testenv/testenv.py run -- cargo test --test api_server_restart -- --ignored
fi
node_tier
