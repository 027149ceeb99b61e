#!/usr/bin/env bash
# Builds the local control plane from Go modules: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok, kwokctl and helm.
#
# Each family has its own tools module under hack/tools/<family> (minimal version
# selection would otherwise mix incompatible k8s.io, grpc and etcd versions). The
# version of a family is the version its go.mod requires; binaries land in
#   $STRATUS_CACHE/tools/<family>-<version>/
# and are built only when missing. $STRATUS_CACHE/tools/bin holds links to the
# binaries of the versions this checkout pins. Go's own module and build caches are
# used as they are, so a second build after a version bump is incremental.
#
# Usage: hack/build-tools.sh [family ...]     (default: all families)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${STRATUS_CACHE:-$HOME/.cache/stratus}
bindir=$cache/tools/bin
mkdir -p "$bindir"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

command -v go >/dev/null || { echo "build-tools: Go is not installed; install Go 1.26 and run again" >&2; exit 1; }

# family -> main module whose version names the build, and the packages to build
declare -A MODULE=(
  [k8s]=k8s.io/kubernetes
  [etcd]=go.etcd.io/etcd/server/v3
  [kwok]=sigs.k8s.io/kwok
  [helm]=helm.sh/helm/v3
  [s3]=github.com/versity/versitygw
)
declare -A PACKAGES=(
  [k8s]="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler"
  [etcd]="go.etcd.io/etcd/server/v3"
  [kwok]="sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl"
  [helm]="helm.sh/helm/v3/cmd/helm"
  [s3]="github.com/versity/versitygw/cmd/versitygw"
)
# Measured cold build times (empty Go caches), shown while building.
declare -A COLD=(
  [k8s]="about 6 minutes, 2 GB peak memory"
  [etcd]="about 30 seconds"
  [kwok]="about 70 seconds"
  [helm]="about 60 seconds"
  [s3]="about 65 seconds, 650 MB peak memory"
)
declare -A BINARIES=(
  [k8s]="kube-apiserver kube-controller-manager kube-scheduler"
  [etcd]="etcd"
  [kwok]="kwok kwokctl"
  [helm]="helm"
  [s3]="versitygw"
)

module_version() { # family -> version required by its tools module
  (cd "$here/tools/$1" && go list -m -f '{{.Version}}' "${MODULE[$1]}")
}

ldflags() { # family version -> linker flags (version stamps where the binary reports one)
  local v=$2 minor
  case $1 in
    k8s)
      minor=$(echo "${v#v}" | cut -d. -f2)
      local cb=k8s.io/component-base/version
      echo "-s -w -X $cb.gitVersion=$v -X $cb.gitMajor=1 -X $cb.gitMinor=$minor -X $cb.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$v"
      ;;
    kwok) local kv; kv=$(module_version k8s); echo "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${v#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kv#v}" ;;
    helm) echo "-s -w -X helm.sh/helm/v3/internal/version.version=$v" ;;
    s3) echo "-s -w -X main.Version=$v" ;;
    *) echo "-s -w" ;;
  esac
}

build_family() {
  local fam=$1 version out start pid n
  version=$(module_version "$fam")
  out=$cache/tools/$fam-$version
  local missing=0
  for b in ${BINARIES[$fam]}; do [ -x "$out/$b" ] || missing=1; done
  if [ $missing = 0 ]; then
    echo "build-tools: $fam $version cached ($out)"
  else
    echo "build-tools: building $fam $version (${BINARIES[$fam]}); cold, on 2 cores: ${COLD[$fam]:-not measured}"
    mkdir -p "$out.tmp"
    start=$(date +%s)
    local log=$out.tmp/build.log
    (
      cd "$here/tools/$fam"
      if [ "$fam" = etcd ]; then
        go build -v -trimpath -ldflags "$(ldflags "$fam" "$version")" -o "$out.tmp/etcd" ${PACKAGES[$fam]}
      else
        go build -v -trimpath -ldflags "$(ldflags "$fam" "$version")" -o "$out.tmp/" ${PACKAGES[$fam]}
      fi
    ) >"$log" 2>&1 &
    pid=$!
    local tick=0
    while kill -0 $pid 2>/dev/null; do
      sleep 1
      tick=$((tick + 1))
      if [ $((tick % 30)) = 0 ] && kill -0 $pid 2>/dev/null; then
        n=$(grep -cv '^go: ' "$log" || true)
        echo "build-tools:   $fam: $(( $(date +%s) - start ))s, $n packages compiled so far"
      fi
    done
    if ! wait $pid; then
      tail -n 40 "$log" >&2
      echo "build-tools: building $fam $version failed (log above; full log in $log)" >&2
      exit 1
    fi
    rm -rf "$out" && mv "$out.tmp" "$out"
    echo "build-tools: built $fam $version in $(( $(date +%s) - start ))s"
  fi
  for b in ${BINARIES[$fam]}; do ln -sfn "$out/$b" "$bindir/$b"; done
}

families=("$@")
[ ${#families[@]} -gt 0 ] || families=(etcd kwok helm s3 k8s)
for f in "${families[@]}"; do
  [ -n "${MODULE[$f]:-}" ] || { echo "build-tools: unknown family '$f' (known: ${!MODULE[*]})" >&2; exit 2; }
  build_family "$f"
done
