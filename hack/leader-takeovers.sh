#!/usr/bin/env bash
# Leader-election takeover figures for RELIABILITY.md (issue 28): how long a standby takes to
# hold the Lease after the leader got SIGTERM (it releases the Lease) or SIGKILL (it does not;
# the Lease must expire first). Nothing here measures by itself: the tests print
# `RELIABILITY {json}` lines and this script summarizes them.
#
#   hack/leader-takeovers.sh [N]          N (default 20) takeovers by SIGTERM, then N by
#                                         SIGKILL, of two operator processes
#                                         (tests/operator_process.rs, leader_takeover_figures)
#   hack/leader-takeovers.sh --node [N]   N deletions of the leader's Pod under the chart's two
#                                         replicas on the node tier (tests/node.rs; as root,
#                                         builds the image like hack/test.sh --node-only)
#
# Prints the distribution (min / median / max, how many within 1 s and 3 s) and the JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
node=0
if [ "${1:-}" = --node ]; then
  node=1
  shift
fi
n="${1:-20}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ "$node" = 1 ]; then
  SECRET_RELAY_NODE_TAKEOVERS="$n" bash hack/test.sh --node-only 2>&1 | tee "$log" >&2
else
  SECRET_RELAY_TAKEOVERS="$n" python3 hack/testenv/testenv.py run -- \
    cargo test --test operator_process -- --ignored --exact leader_takeover_figures \
    --nocapture 2>&1 | tee "$log" >&2
fi
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests || echo ' + uncommitted work tree')"
grep -ho 'RELIABILITY {.*}' "$log" | sed 's/^RELIABILITY //' | python3 -c '
import json, statistics, sys

commit = sys.argv[1]

def dist(name, values, unit):
    v = sorted(values)
    if not v:
        return
    within = lambda bound: sum(1 for x in v if x <= bound)
    print(f"{name}: n={len(v)} min {v[0] / unit:.2f} s, median {statistics.median(v) / unit:.2f} s, "
          f"max {v[-1] / unit:.2f} s; <= 1 s: {within(unit)}/{len(v)}, <= 3 s: {within(3 * unit)}/{len(v)}")

for line in sys.stdin:
    f = json.loads(line)
    if f["test"] == "leader_takeover":
        print(f"commit {commit}")
        term, kill = f["sigterm_lease_duration_s"], f["sigkill_lease_duration_s"]
        dist(f"SIGTERM -> standby holds the Lease (lease {term} s)",
             f["sigterm_takeover_after_signal_ms"], 1000)
        dist(f"SIGKILL: Lease expiry -> standby holds it (lease {kill} s)",
             f["sigkill_takeover_after_expiry_ms"], 1000)
        dist("SIGKILL -> standby holds the Lease", f["sigkill_takeover_after_kill_ms"], 1000)
        print(json.dumps(f))
    elif f["test"] == "node_leader_pod_deleted":
        print(f"commit {commit}")
        dist("kubectl delete pod (leader) -> another Pod holds the Lease", f["takeovers_s"], 1)
        print(json.dumps(f))
' "$commit"
