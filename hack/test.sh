#!/usr/bin/env bash
# Runs the test suite inside the test environment (hack/testenv/testenv.py): etcd,
# kube-apiserver, OpenBao and moto on loopback ports, torn down afterwards. Tools are built
# once into $HOME/.cache/secret-relay by hack/testenv/build-tools.sh (called by testenv.py).
#
#   hack/test.sh                      cargo test --all-targets --no-fail-fast, then
#                                     tests/api_server_restart.rs (it kills the API server) and
#                                     tests/tenant_fairness.rs (timed, over every namespace),
#                                     each alone in an environment of its own, then the node tier
#                                     (below); every part runs whatever failed before it, and
#                                     the run ends with one summary of what failed
#   hack/test.sh --test smoke         only tests/smoke.rs (a target selection replaces --all-targets)
#   hack/test.sh -- --nocapture       other arguments go to cargo test as they are
#   hack/test.sh --node-only          only the node tier
#   hack/test.sh --repeat N [--load] [--fresh-clone]
#                                     the whole run N times (with --load, one core kept busy
#                                     by a spinning process meanwhile; with --fresh-clone, each
#                                     run as CI makes it: `CI=true bash .ci/run` in a new clone
#                                     of HEAD's commit, ../shared beside it, no stdin, empty
#                                     target/ unless CARGO_TARGET_DIR names a build cache they
#                                     share, the clone removed afterwards); then the tests
#                                     that failed in some runs and passed in others (flaky),
#                                     and those that failed every time
#
# The node tier: tests/node.rs in an environment of its own with a node (`testenv.py run
# --node`: containerd, kubelet, scheduler, controller-manager on this machine, root only),
# running the operator image that hack/image/build.sh builds (the Dockerfile's layout, without
# Docker) as the chart's Pods. SECRET_RELAY_NODE_TIER=0 skips it; without root it is skipped
# with a message.
#
# Each part's output is also kept in target/test-logs/ (the last run), which the summary reads.
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

logs="${CARGO_TARGET_DIR:-target}/test-logs"

# run_part NAME CMD...: runs CMD with its output shown and kept in $logs/NAME.log; records a
# failure instead of stopping.
failed_parts=()
run_part() {
  local name=$1 rc=0
  shift
  set +e
  "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    failed_parts+=("$name (exit $rc)")
  fi
}

# The closing summary: the failed tests of every part's log, and a "N passed, N failed" line
# summed over cargo's "test result:" lines.
summary() {
  local passed=0 failed=0 p f line
  while IFS= read -r line; do
    p=$(sed -n 's/.* \([0-9][0-9]*\) passed;.*/\1/p' <<<"$line")
    f=$(sed -n 's/.* \([0-9][0-9]*\) failed;.*/\1/p' <<<"$line")
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
  done < <(cat "$logs"/*.log 2>/dev/null | grep -a '^test result: ' || true)
  echo
  echo "==== test.sh summary ===="
  if [ ${#failed_parts[@]} -eq 0 ]; then
    echo "every part passed"
  else
    echo "failed parts:"
    printf '  %s\n' "${failed_parts[@]}"
    echo "failed tests:"
    cat "$logs"/*.log 2>/dev/null | grep -a -E '^test .* \.\.\. FAILED$' |
      sed -E 's/^test (.*) \.\.\. FAILED$/  \1/' | sort -u || true
    # A part that failed without a failed test (a build error, an environment that did not
    # start) has its reason in its log.
  fi
  echo "summary: $passed passed, $failed failed"
}

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
  bash hack/image/build.sh operator "$image" || return
  python3 hack/testenv/testenv.py run --node --import "$image" -- \
    cargo test --test node -- --nocapture || return
  echo "test.sh: node tier took $((SECONDS - start))s" >&2
}

# one_run I: run I of --repeat, in this work tree or (with --fresh-clone) in a new clone of
# $commit; its summary is kept as $logs/repeat/run-I.txt.
one_run() {
  local i=$1 rc=0 dir
  if [ "$fresh" = 0 ]; then
    bash "$0" || rc=$?
    cp "$logs/summary.txt" "$logs/repeat/run-$i.txt" 2>/dev/null || true
    return "$rc"
  fi
  dir="$scratch/run-$i"
  mkdir -p "$dir"
  git clone -q --no-checkout "$PWD" "$dir/secret-relay"
  git -C "$dir/secret-relay" checkout -q "$commit"
  [ -d ../shared ] && ln -s "$(cd ../shared && pwd)" "$dir/shared"
  (cd "$dir/secret-relay" && CI=true bash .ci/run </dev/null) || rc=$?
  # Keep the run's logs (each part's output and the summary), drop its 5 GiB of target/ (with
  # an absolute CARGO_TARGET_DIR, shared by the clones as a build cache, the logs are there).
  local run_logs="$dir/secret-relay/target/test-logs"
  [ -n "${CARGO_TARGET_DIR:-}" ] && run_logs="$CARGO_TARGET_DIR/test-logs"
  mkdir -p "$logs/repeat/run-$i-logs"
  cp "$run_logs"/*.log "$run_logs/summary.txt" "$logs/repeat/run-$i-logs/" 2>/dev/null || true
  cp "$run_logs/summary.txt" "$logs/repeat/run-$i.txt" 2>/dev/null || true
  rm -rf "$dir"
  return "$rc"
}

# --repeat N [--load] [--fresh-clone]: the whole run N times; flaky tests named at the end.
if [ "${1:-}" = --repeat ]; then
  runs=${2:?"--repeat needs a count"}
  shift 2
  load=0
  fresh=0
  for arg in "$@"; do
    case "$arg" in
      --load) load=1 ;;
      --fresh-clone) fresh=1 ;;
      *) echo "test.sh: --repeat N [--load] [--fresh-clone] takes no other arguments" >&2; exit 2 ;;
    esac
  done
  mkdir -p "$logs/repeat"
  rm -rf "$logs"/repeat/*
  if [ "$fresh" = 1 ]; then
    case "${CARGO_TARGET_DIR:-/}" in
      /*) ;;
      *) echo "test.sh: --fresh-clone needs CARGO_TARGET_DIR absolute or unset" >&2; exit 2 ;;
    esac
    # Every run tests the same commit, whatever is committed meanwhile.
    commit=$(git rev-parse HEAD)
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/secret-relay-fresh.XXXXXX")
    echo "test.sh: --fresh-clone: runs of $commit in clones under $scratch" >&2
  fi
  spinner=""
  scratch=${scratch:-}
  trap '[ -z "$spinner" ] || kill "$spinner" 2>/dev/null || true; [ -z "$scratch" ] || rm -rf "$scratch"' EXIT
  if [ "$load" = 1 ]; then
    # One core busy for the whole run (bounded: killed at exit).
    bash -c 'while :; do :; done' &
    spinner=$!
    echo "test.sh: --load: one core kept busy by pid $spinner" >&2
  fi
  green=0
  for i in $(seq 1 "$runs"); do
    start=$SECONDS
    rc=0
    one_run "$i" || rc=$?
    [ "$rc" = 0 ] && green=$((green + 1))
    echo "test.sh: run $i of $runs: exit $rc in $((SECONDS - start))s" | tee -a "$logs/repeat/runs.txt"
  done
  echo
  echo "==== test.sh --repeat $runs$([ "$load" = 1 ] && echo ' --load')$([ "$fresh" = 1 ] && echo " --fresh-clone ($commit)") ===="
  cat "$logs/repeat/runs.txt"
  # A test that failed in some runs only is flaky; in every run, broken.
  # (No failed test in any run: grep finds nothing, which is not an error here.)
  { grep -h '^  ' "$logs"/repeat/run-*.txt 2>/dev/null || true; } | { grep -v ' (exit ' || true; } |
    sort | uniq -c |
    awk -v n="$runs" '{ c = $1; $1 = ""; printf "  %s in %d of %d runs:%s\n", (c < n ? "flaky" : "failed"), c, n, $0 }'
  echo "summary: $green passed, $((runs - green)) failed"
  [ "$green" = "$runs" ]
  exit
fi

targets=(--all-targets)
for arg in "$@"; do
  case "$arg" in
    --) break ;;
    --node-only)
      [ $# -eq 1 ] || { echo "test.sh: --node-only takes no other arguments" >&2; exit 2; }
      SECRET_RELAY_NODE_TIER=1 node_tier
      exit
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

mkdir -p "$logs"
rm -f "$logs"/*.log "$logs/summary.txt"
run_part cargo-test python3 hack/testenv/testenv.py run -- cargo test "${targets[@]}" --no-fail-fast
# tests/api_server_restart.rs kills its environment's API server, and tests/tenant_fairness.rs
# runs an operator over every namespace and times it: both are ignored above and run here
# alone, in an environment of their own (not against an existing cluster).
if [ -z "${SECRET_RELAY_EXISTING_KUBECONFIG:-}" ]; then
  for alone in api_server_restart tenant_fairness; do
    run_part "$alone" python3 hack/testenv/testenv.py run -- \
      cargo test --test "$alone" -- --ignored
  done
fi
run_part node-tier node_tier
summary | tee "$logs/summary.txt"
[ ${#failed_parts[@]} -eq 0 ]
