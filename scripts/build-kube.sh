#!/usr/bin/env bash
# Build kube-apiserver and etcd from the Go module proxy and cache them
# outside the repository, for Tether's integration tests (tether.sim.envtest).
#
# Why build from source: no package on this machine ships kube-apiserver and
# no prebuilt binary may be downloaded; the Go module proxy serves the source.
#
# Usage:
#   scripts/build-kube.sh              build (no-op if the cache is complete)
#   scripts/build-kube.sh --print-dir  print the cache dir of the pinned version
#
# Environment:
#   TETHER_KUBE_CACHE  cache root (default: $HOME/.cache/tether/kube)
#
# Layout: $TETHER_KUBE_CACHE/<k8s-version>/{kube-apiserver,etcd,VERSIONS}
#
# Keep KUBE_VERSION in step with tether.sim.envtest.KUBE_VERSION.
set -euo pipefail

# Newest k8s.io/kubernetes release on the proxy whose go.mod `go` line
# (go 1.26.0) the machine's Go 1.26.x toolchain builds without fetching another.
KUBE_VERSION="1.37.2"
# Newest etcd 3.6 patch release (go.mod `go 1.26.0`); 3.6 is the etcd minor
# Kubernetes 1.34+ is released and tested against.
ETCD_VERSION="3.6.16"

CACHE_ROOT="${TETHER_KUBE_CACHE:-$HOME/.cache/tether/kube}"
OUT_DIR="${CACHE_ROOT}/${KUBE_VERSION}"
VERSIONS_WANTED="kube-apiserver=v${KUBE_VERSION}
etcd=v${ETCD_VERSION}"

usage() {
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
--print-dir)
	echo "${OUT_DIR}"
	exit 0
	;;
-h | --help)
	usage
	exit 0
	;;
"") ;;
*)
	echo "build-kube.sh: unknown argument: $1" >&2
	usage >&2
	exit 2
	;;
esac

is_complete() {
	[[ -x "${OUT_DIR}/kube-apiserver" && -x "${OUT_DIR}/etcd" && -f "${OUT_DIR}/VERSIONS" ]] &&
		[[ "$(cat "${OUT_DIR}/VERSIONS")" == "${VERSIONS_WANTED}" ]]
}

if is_complete; then
	echo "build-kube: cached: ${OUT_DIR}"
	exit 0
fi

command -v go >/dev/null || {
	echo "build-kube: the Go toolchain (go) is required" >&2
	exit 1
}

# Never download another toolchain: fail loudly if a go.mod needs a newer Go.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

mkdir -p "${CACHE_ROOT}"
# One builder at a time (make -j, two shells): the second waits, then finds the cache.
exec 9>"${CACHE_ROOT}/.build-${KUBE_VERSION}.lock"
flock 9
if is_complete; then
	echo "build-kube: cached (built by another process): ${OUT_DIR}"
	exit 0
fi

START=$(date +%s)
elapsed() { echo "$(($(date +%s) - START))s"; }
log() { echo "build-kube [$(elapsed)]: $*"; }

BUILD_ROOT="${CACHE_ROOT}/.build-${KUBE_VERSION}"
STAGE="${BUILD_ROOT}/out"
rm -rf "${BUILD_ROOT}"
mkdir -p "${STAGE}"
trap 'rm -rf "${BUILD_ROOT}"' EXIT

log "$(go version); GOMODCACHE=$(go env GOMODCACHE)"

# --- kube-apiserver -----------------------------------------------------------
# k8s.io/kubernetes requires its staging modules (k8s.io/api, apimachinery, ...)
# at v0.0.0 and replaces them with ./staging/src/... paths, which only work in
# its own repository. A consuming module must replace each with the matching
# published v0.<minor>.<patch> release. The list comes from k8s.io/kubernetes's
# own go.mod: every k8s.io/* requirement at v0.0.0.
KDIR="${BUILD_ROOT}/kube-apiserver"
mkdir -p "${KDIR}"
log "fetching k8s.io/kubernetes v${KUBE_VERSION} go.mod"
KMOD=$(cd "${KDIR}" && go mod download -json "k8s.io/kubernetes@v${KUBE_VERSION}" |
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -f "${KMOD}" ]] || {
	echo "build-kube: could not download k8s.io/kubernetes v${KUBE_VERSION}" >&2
	exit 1
}
KGO=$(awk '$1 == "go" {print $2; exit}' "${KMOD}")
STAGING=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "${KMOD}" | sort -u)
[[ -n "${STAGING}" ]] || {
	echo "build-kube: no staging modules found in ${KMOD}" >&2
	exit 1
}
STAGING_VERSION="v0.${KUBE_VERSION#*.}"
log "k8s.io/kubernetes go line: go ${KGO}; $(echo "${STAGING}" | wc -l) staging modules pinned to ${STAGING_VERSION}"
{
	echo "module tether.local/kube-apiserver-build"
	echo
	echo "go ${KGO}"
	echo
	echo "require k8s.io/kubernetes v${KUBE_VERSION}"
	echo
	echo "replace ("
	for m in ${STAGING}; do
		echo "	${m} => ${m} ${STAGING_VERSION}"
	done
	echo ")"
} >"${KDIR}/go.mod"
cat >"${KDIR}/tools.go" <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF
log "resolving kube-apiserver dependencies (go mod tidy)"
(cd "${KDIR}" && go mod tidy)

BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
KMINOR="${KUBE_VERSION#*.}"
KMINOR="${KMINOR%%.*}"
KLDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	KLDFLAGS+=" -X ${pkg}.gitVersion=v${KUBE_VERSION}"
	KLDFLAGS+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${KMINOR}"
	KLDFLAGS+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
	KLDFLAGS+=" -X ${pkg}.buildDate=${BUILD_DATE}"
done
log "building kube-apiserver v${KUBE_VERSION} (the slow part)"
(cd "${KDIR}" && go build -trimpath -ldflags "${KLDFLAGS}" \
	-o "${STAGE}/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
log "kube-apiserver built"

# --- etcd ---------------------------------------------------------------------
# Its own module: etcd 3.6 and Kubernetes pin different versions of shared
# dependencies (grpc, otel, ...); one module would force one set on both.
# go.etcd.io/etcd/server/v3 has main.go at its root (calls etcdmain.Main).
EDIR="${BUILD_ROOT}/etcd"
mkdir -p "${EDIR}"
EMOD=$(cd "${EDIR}" && go mod download -json "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" |
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
EGO=$(awk '$1 == "go" {print $2; exit}' "${EMOD}")
cat >"${EDIR}/go.mod" <<EOF
module tether.local/etcd-build

go ${EGO}

require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}
EOF
cat >"${EDIR}/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
log "resolving etcd v${ETCD_VERSION} dependencies (go mod tidy)"
(cd "${EDIR}" && go mod tidy)
log "building etcd v${ETCD_VERSION}"
(cd "${EDIR}" && go build -trimpath -ldflags "-s -w" \
	-o "${STAGE}/etcd" go.etcd.io/etcd/server/v3)
log "etcd built"

# --- install ------------------------------------------------------------------
"${STAGE}/kube-apiserver" --version
"${STAGE}/etcd" --version | head -1
mkdir -p "${OUT_DIR}"
rm -f "${OUT_DIR}/VERSIONS"
mv -f "${STAGE}/kube-apiserver" "${STAGE}/etcd" "${OUT_DIR}/"
printf '%s\n' "${VERSIONS_WANTED}" >"${OUT_DIR}/VERSIONS"
log "done: ${OUT_DIR} (total $(elapsed))"
