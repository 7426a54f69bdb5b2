#!/usr/bin/env bash
# Where the operator's heap goes at N ExternalSecrets (issue 28): the scale benchmark's initial
# sync (tests/bench_scale.rs, SECRET_RELAY_BENCH_INITIAL_ONLY) with the operator under
# heaptrack, then heaptrack's peak consumers.
#
#   hack/heap-profile.sh [N]      N = 10000 by default (a multiple of 20)
#
# The operator is built with the `system-allocator` feature (the C library's malloc instead of
# jemalloc, src/main.rs), since heaptrack interposes on malloc; its RSS is then not the
# release binary's, only its heap is the same. heaptrack's preload library records every
# allocation to target/heap/raw.PID; heaptrack_interpret turns it into target/heap/heap-N.zst
# (`heaptrack_print` or `heaptrack --analyze` read it) and the peak consumers are printed to
# target/heap/peaks-N.txt. At N = 10,000 the run takes about 5 minutes and 0.5 GB of raw
# data. Needs heaptrack (Debian's package: apt-get install heaptrack) and zstd.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -eq 0 ] || [ $((n % 20)) -ne 0 ]; then
  echo "heap-profile.sh: N must be a positive multiple of 20, not '$n'" >&2
  exit 2
fi
preload=/usr/lib/heaptrack/libheaptrack_preload.so
interpret=/usr/lib/heaptrack/libexec/heaptrack_interpret
for f in "$preload" "$interpret"; do
  [ -e "$f" ] || { echo "heap-profile.sh: $f missing (apt-get install heaptrack)" >&2; exit 2; }
done
command -v zstd > /dev/null || { echo "heap-profile.sh: zstd missing" >&2; exit 2; }

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
out="$target_dir/heap"
mkdir -p "$out/reports"
rm -f "$out"/raw.*
cargo build --release --bin secret-relay --features system-allocator
cp "$target_dir/release/secret-relay" "$out/secret-relay-system-allocator"
# The test build below makes target/release/secret-relay the jemalloc build again (integration
# tests build the binary with default features).
cargo test --release --test bench_scale --no-run
cat > "$out/operator.sh" <<EOF
#!/bin/sh
exec env LD_PRELOAD=$preload DUMP_HEAPTRACK_OUTPUT=$out/raw.\$\$ $out/secret-relay-system-allocator "\$@"
EOF
chmod +x "$out/operator.sh"
SECRET_RELAY_BENCH_N="$n" SECRET_RELAY_BENCH_BIN="$out/operator.sh" \
  SECRET_RELAY_BENCH_INITIAL_ONLY=true SECRET_RELAY_BENCH_OUT="$out/reports" \
  python3 hack/testenv/testenv.py run -- \
  cargo test --release --test bench_scale -- --ignored --exact scale_benchmark \
  --nocapture --test-threads=1
raw=$(ls -t "$out"/raw.* | head -1)
"$interpret" < "$raw" | zstd -q -c > "$out/heap-$n.zst"
rm -f "$out"/raw.*
heaptrack_print -f "$out/heap-$n.zst" --print-peaks 1 --print-allocators 0 \
  --print-temporary 0 --print-leaks 0 -n 40 > "$out/peaks-$n.txt"
grep "peak heap memory consumption" "$out/peaks-$n.txt"
# The 20 largest peak consumers, each with the function that allocated.
grep -A1 -E "^[0-9.]+[KMG]? peak memory consumed" "$out/peaks-$n.txt" | grep -v '^--$' | head -40
echo "heap-profile.sh: the whole profile in $out/heap-$n.zst, peak consumers with their stacks in $out/peaks-$n.txt" >&2
