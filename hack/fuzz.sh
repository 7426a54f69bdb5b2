#!/usr/bin/env bash
# Fuzzes the SOPS document parser/decryptor (fuzz/fuzz_targets/sops_parse.rs) with cargo-fuzz.
#
#   hack/fuzz.sh                 60 s
#   FUZZ_SECONDS=600 hack/fuzz.sh
#
# Needs a nightly toolchain (rustup toolchain install nightly). cargo-fuzz is installed once
# into $HOME/.cache/secret-relay/cargo-fuzz-<version>. The corpus (fuzz/corpus/sops_parse) is
# seeded from tests/fixtures/sops; crashes land in fuzz/artifacts/sops_parse.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
root="$HOME/.cache/secret-relay/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [[ ! -x "$root/bin/cargo-fuzz" ]]; then
  cargo install --locked --root "$root" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
export PATH="$root/bin:$PATH"

corpus=fuzz/corpus/sops_parse
mkdir -p "$corpus"
for f in tests/fixtures/sops/*; do
  case "$f" in *.agekey | *.md) continue ;; esac
  cp -f "$f" "$corpus/seed-$(basename "$f")"
done

# From the project root, cargo-fuzz finds fuzz/ and uses fuzz/corpus/sops_parse by default.
exec cargo +nightly fuzz run sops_parse -- -max_total_time="${FUZZ_SECONDS:-60}"
