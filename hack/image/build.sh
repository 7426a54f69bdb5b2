#!/usr/bin/env bash
# Builds the images the node of the test environment runs, as OCI archives, without Docker:
#
#   hack/image/build.sh operator OUT.tar [REF]   the operator image, the Dockerfile's layout:
#                                                the static (musl) release binary at
#                                                /usr/local/bin/secret-relay, the CA bundle at
#                                                /etc/ssl/certs/ca-certificates.crt, user
#                                                65532:65532, entrypoint the binary, cmd `run`;
#                                                REF defaults to localhost/secret-relay:dev
#   hack/image/build.sh pause OUT.tar            the pause image (pause.c, static), named
#                                                localhost/secret-relay-pause:testenv
#
# The operator binary is built like the Dockerfile builds it: `cargo build --release --locked
# --bin secret-relay` for musl (here the x86_64-unknown-linux-musl target, which `rustup target
# add` installs; musl-gcc from Debian's musl-tools compiles the C parts), then stripped.
# Import an archive with `ctr -n k8s.io images import OUT.tar`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
what=${1:?usage: build.sh operator|pause OUT.tar [REF]}
out=${2:?usage: build.sh operator|pause OUT.tar [REF]}
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case "$what" in
  pause)
    cc=gcc
    command -v musl-gcc >/dev/null 2>&1 && cc=musl-gcc
    "$cc" -static -Os -s -o "$work/pause" "$here/pause.c"
    python3 "$here/build-oci.py" --out "$out" --name localhost/secret-relay-pause:testenv \
      --file "$work/pause:/pause:755" --entrypoint '["/pause"]' --user 65535:65535
    ;;
  operator)
    ref=${3:-localhost/secret-relay:dev}
    target=x86_64-unknown-linux-musl
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
      rustup target add "$target" >&2
    fi
    if ! command -v musl-gcc >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools >&2
      else
        echo "build.sh: musl-gcc is missing (Debian: apt-get install musl-tools)" >&2
        exit 1
      fi
    fi
    # The release dependencies are kept under $HOME/.cache (a fresh clone then rebuilds only
    # this crate); without that cache everything is built, as on a new machine.
    tdir="${SECRET_RELAY_IMAGE_TARGET_DIR:-$HOME/.cache/secret-relay/image-target}"
    (cd "$root" && CARGO_TARGET_DIR="$tdir" cargo build --release --locked --target "$target" \
      --bin secret-relay >&2)
    bin="$tdir/$target/release/secret-relay"
    cp "$bin" "$work/secret-relay"
    strip "$work/secret-relay"
    if file "$work/secret-relay" 2>/dev/null | grep -q 'dynamically linked'; then
      echo "build.sh: $bin is not static" >&2
      exit 1
    fi
    "$work/secret-relay" --version >&2
    python3 "$here/build-oci.py" --out "$out" --name "$ref" \
      --file "$work/secret-relay:/usr/local/bin/secret-relay:755" \
      --file "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:644" \
      --user 65532:65532 --entrypoint '["/usr/local/bin/secret-relay"]' --cmd '["run"]' \
      --port 8080/tcp
    ;;
  *)
    echo "build.sh: unknown image '$what' (operator or pause)" >&2
    exit 2
    ;;
esac
