#!/usr/bin/env bash
# Build the Kubernetes, etcd and containerd binaries Tether's tests run, from the Go
# module proxy, and cache them outside the repository.
#
# Why build from source: no package on this machine ships kube-apiserver, a kubelet or
# containerd 2, and no prebuilt binary may be downloaded; the Go module proxy serves
# the source.
#
# What:
#   - Kubernetes KUBE_VERSION: kube-apiserver, kube-controller-manager, kube-scheduler,
#     kubelet and kubectl, all in ONE `go build` (they share almost every package, so
#     one build costs little more than the apiserver alone); only the missing ones.
#   - etcd ETCD_VERSION (its own module).
#   - kubelet KUBELET_PREVIOUS (the newest release of the previous minor, its own
#     module), so tests upgrade a real node from one kubelet to the other.
#   - containerd CONTAINERD2_VERSION (its own module), so the generated containerd
#     configuration is checked by the real containerd 2 (Debian ships 1.6).
#   - crictl CRICTL_VERSION (its own module), the CRI client a node's uninstall uses.
#   - the static test images' programs (pause, echo) from scripts/images/.
#
# Usage:
#   scripts/build-kube.sh              build what is missing (no-op if all is cached)
#   scripts/build-kube.sh --print-dir  print the cache dir of the pinned Kubernetes version
#
# Environment:
#   TETHER_KUBE_CACHE  cache root (default: $HOME/.cache/tether/kube)
#
# Layout (each binary next to a NAME.version stamp):
#   $TETHER_KUBE_CACHE/<KUBE_VERSION>/{kube-apiserver,etcd,kube-controller-manager,
#                                      kube-scheduler,kubelet,kubectl}
#   $TETHER_KUBE_CACHE/<KUBELET_PREVIOUS>/kubelet
#   $TETHER_KUBE_CACHE/containerd-<CONTAINERD2_VERSION>/containerd
#   $TETHER_KUBE_CACHE/crictl-<CRICTL_VERSION>/crictl
#   $TETHER_KUBE_CACHE/images/{pause,echo}   (stamp: the sha256 of their source)
#
# Keep the versions in step with tether.sim.envtest (KUBE_VERSION, KUBELET_PREVIOUS,
# CONTAINERD2_VERSION, CRICTL_VERSION, ETCD_VERSION).
set -euo pipefail

# Newest k8s.io/kubernetes release on the proxy whose go.mod `go` line
# (go 1.26.0) the machine's Go 1.26.x toolchain builds without fetching another.
KUBE_VERSION="1.37.2"
# Newest 1.36 release: the kubelet a real node upgrades from.
KUBELET_PREVIOUS="1.36.3"
# Newest etcd 3.6 patch release (go.mod `go 1.26.0`); 3.6 is the etcd minor
# Kubernetes 1.34+ is released and tested against.
ETCD_VERSION="3.6.16"
# Newest containerd 2 release (go.mod `go 1.26.6`).
CONTAINERD2_VERSION="2.4.2"
# crictl, the CRI's own client: uninstall removes every pod through it (Debian has none).
CRICTL_VERSION="1.37.0"

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE_ROOT="${TETHER_KUBE_CACHE:-$HOME/.cache/tether/kube}"
OUT_DIR="${CACHE_ROOT}/${KUBE_VERSION}"
PREV_DIR="${CACHE_ROOT}/${KUBELET_PREVIOUS}"
CTRD_DIR="${CACHE_ROOT}/containerd-${CONTAINERD2_VERSION}"
CRICTL_DIR="${CACHE_ROOT}/crictl-${CRICTL_VERSION}"
IMG_DIR="${CACHE_ROOT}/images"
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

usage() {
	sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
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

image_stamp() { cat "${HERE}/images/$1/main.go" | sha256sum | cut -d' ' -f1; }

# built DIR NAME STAMP: the binary is there and was built from STAMP. An older
# checkout of this script (sharing the cache) records kube-apiserver and etcd in
# VERSIONS instead; that counts too, so the two never rebuild each other's output.
built() {
	[[ -x "$1/$2" ]] || return 1
	[[ "$(cat "$1/$2.version" 2>/dev/null)" == "$3" ]] && return 0
	grep -qx "$2=$3" "$1/VERSIONS" 2>/dev/null
}

missing_kube() {
	local cmd
	for cmd in "${KUBE_CMDS[@]}"; do
		built "${OUT_DIR}" "${cmd}" "v${KUBE_VERSION}" || echo "${cmd}"
	done
}

is_complete() {
	[[ -z "$(missing_kube)" ]] &&
		built "${OUT_DIR}" etcd "v${ETCD_VERSION}" &&
		built "${PREV_DIR}" kubelet "v${KUBELET_PREVIOUS}" &&
		built "${CTRD_DIR}" containerd "v${CONTAINERD2_VERSION}" &&
		built "${CRICTL_DIR}" crictl "v${CRICTL_VERSION}" &&
		built "${IMG_DIR}" pause "$(image_stamp pause)" &&
		built "${IMG_DIR}" echo "$(image_stamp echo)"
}

# shellcheck source=lib/cache.sh
source "${HERE}/lib/cache.sh"
# One builder at a time (make -j, two shells): the second waits, then finds the cache.
cache_ready_or_lock build-kube "${CACHE_ROOT}/.build-${KUBE_VERSION}.lock" is_complete
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

START=$(date +%s)
elapsed() { echo "$(($(date +%s) - START))s"; }
log() { echo "build-kube [$(elapsed)]: $*"; }

BUILD_ROOT="${CACHE_ROOT}/.build-${KUBE_VERSION}"
rm -rf "${BUILD_ROOT}"
mkdir -p "${BUILD_ROOT}"
trap 'rm -rf "${BUILD_ROOT}"' EXIT

log "$(go version); GOMODCACHE=$(go env GOMODCACHE)"

# install DIR STAMP NAME...: move the staged binaries NAME... into DIR with their stamp.
install_built() {
	local dir=$1 stamp=$2 name
	shift 2
	mkdir -p "${dir}"
	for name in "$@"; do
		rm -f "${dir}/${name}.version"
		mv -f "${BUILD_ROOT}/out/${name}" "${dir}/${name}"
		printf '%s\n' "${stamp}" >"${dir}/${name}.version"
	done
}

# gomod_of MODULE@VERSION: the path of that module's go.mod in the module cache.
gomod_of() {
	(cd "${BUILD_ROOT}" && go mod download -json "$1" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
}

# --- Kubernetes ---------------------------------------------------------------------
# k8s.io/kubernetes requires its staging modules (k8s.io/api, apimachinery, ...)
# at v0.0.0 and replaces them with ./staging/src/... paths, which only work in
# its own repository. A consuming module must replace each with the matching
# published v0.<minor>.<patch> release. The list comes from k8s.io/kubernetes's
# own go.mod: every k8s.io/* requirement at v0.0.0.
#
# build_kube VERSION OUTDIR CMD...: build the k8s.io/kubernetes/cmd/CMD binaries of
# release VERSION in one `go build` into OUTDIR (with their version stamps).
build_kube() {
	local version=$1 dir=$2
	shift 2
	local kdir="${BUILD_ROOT}/kubernetes-${version}"
	mkdir -p "${kdir}" "${BUILD_ROOT}/out"
	log "fetching k8s.io/kubernetes v${version} go.mod"
	local kmod
	kmod=$(gomod_of "k8s.io/kubernetes@v${version}")
	[[ -f "${kmod}" ]] || {
		echo "build-kube: could not download k8s.io/kubernetes v${version}" >&2
		exit 1
	}
	local kgo staging staging_version
	kgo=$(awk '$1 == "go" {print $2; exit}' "${kmod}")
	staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "${kmod}" | sort -u)
	[[ -n "${staging}" ]] || {
		echo "build-kube: no staging modules found in ${kmod}" >&2
		exit 1
	}
	staging_version="v0.${version#*.}"
	log "k8s.io/kubernetes v${version}: go ${kgo}; $(echo "${staging}" | wc -l) staging modules pinned to ${staging_version}"
	{
		echo "module tether.local/kubernetes-build"
		echo
		echo "go ${kgo}"
		echo
		echo "require k8s.io/kubernetes v${version}"
		echo
		echo "replace ("
		for m in ${staging}; do
			echo "	${m} => ${m} ${staging_version}"
		done
		echo ")"
	} >"${kdir}/go.mod"
	local pkgs=() cmd
	{
		echo "//go:build tools"
		echo
		echo "package tools"
		echo
		for cmd in "$@"; do
			echo "import _ \"k8s.io/kubernetes/cmd/${cmd}\""
			pkgs+=("k8s.io/kubernetes/cmd/${cmd}")
		done
	} >"${kdir}/tools.go"
	log "resolving dependencies of $* (go mod tidy)"
	(cd "${kdir}" && go mod tidy)

	local build_date minor ldflags pkg
	build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	minor="${version#*.}"
	minor="${minor%%.*}"
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X ${pkg}.gitVersion=v${version}"
		ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
		ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
		ldflags+=" -X ${pkg}.buildDate=${build_date}"
	done
	log "building $* v${version} in one go build (the slow part)"
	(cd "${kdir}" && go build -trimpath -ldflags "${ldflags}" -o "${BUILD_ROOT}/out/" "${pkgs[@]}")
	for cmd in "$@"; do
		if [[ "${cmd}" == kubectl ]]; then
			"${BUILD_ROOT}/out/${cmd}" version --client
		else
			"${BUILD_ROOT}/out/${cmd}" --version
		fi
	done
	install_built "${dir}" "v${version}" "$@"
	log "installed $* in ${dir}"
}

mapfile -t MISSING < <(missing_kube)
if ((${#MISSING[@]})); then
	build_kube "${KUBE_VERSION}" "${OUT_DIR}" "${MISSING[@]}"
fi
if ! built "${PREV_DIR}" kubelet "v${KUBELET_PREVIOUS}"; then
	build_kube "${KUBELET_PREVIOUS}" "${PREV_DIR}" kubelet
fi

# build_module DIR STAMP OUT MODULE@VERSION PACKAGE TAGS LDFLAGS: one binary from its own
# module (its dependencies pinned as that module pins them), into DIR with its stamp.
build_module() {
	local dir=$1 stamp=$2 out=$3 module=$4 package=$5 tags=$6 ldflags=$7
	local mdir="${BUILD_ROOT}/${out}-module" gomod goline
	mkdir -p "${mdir}" "${BUILD_ROOT}/out"
	gomod=$(gomod_of "${module}")
	goline=$(awk '$1 == "go" {print $2; exit}' "${gomod}")
	printf 'module tether.local/%s-build\n\ngo %s\n\nrequire %s %s\n' \
		"${out}" "${goline}" "${module%@*}" "${module#*@}" >"${mdir}/go.mod"
	printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "${package}" >"${mdir}/tools.go"
	log "resolving ${module} dependencies (go mod tidy)"
	(cd "${mdir}" && go mod tidy)
	log "building ${out} from ${module}"
	(cd "${mdir}" && go build -trimpath -tags "${tags}" -ldflags "-s -w ${ldflags}" \
		-o "${BUILD_ROOT}/out/${out}" "${package}")
	"${BUILD_ROOT}/out/${out}" --version | head -1
	install_built "${dir}" "${stamp}" "${out}"
	log "${out} built"
}

# --- etcd ---------------------------------------------------------------------------
# Its own module: etcd 3.6 and Kubernetes pin different versions of shared
# dependencies (grpc, otel, ...); one module would force one set on both.
# go.etcd.io/etcd/server/v3 has main.go at its root (calls etcdmain.Main).
if ! built "${OUT_DIR}" etcd "v${ETCD_VERSION}"; then
	build_module "${OUT_DIR}" "v${ETCD_VERSION}" etcd "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" \
		go.etcd.io/etcd/server/v3 "" ""
fi
# Older checkouts sharing this cache look for kube-apiserver and etcd in VERSIONS.
if built "${OUT_DIR}" kube-apiserver "v${KUBE_VERSION}" && built "${OUT_DIR}" etcd "v${ETCD_VERSION}"; then
	printf 'kube-apiserver=v%s\netcd=v%s\n' "${KUBE_VERSION}" "${ETCD_VERSION}" >"${OUT_DIR}/VERSIONS"
fi

# --- containerd 2 -------------------------------------------------------------------
# Only the daemon: the tests check the configuration Tether writes with its own
# `containerd config dump`. no_btrfs: the btrfs snapshotter needs cgo.
if ! built "${CTRD_DIR}" containerd "v${CONTAINERD2_VERSION}"; then
	build_module "${CTRD_DIR}" "v${CONTAINERD2_VERSION}" containerd \
		"github.com/containerd/containerd/v2@v${CONTAINERD2_VERSION}" \
		github.com/containerd/containerd/v2/cmd/containerd "urfave_cli_no_docs no_btrfs" \
		"-X github.com/containerd/containerd/v2/version.Version=v${CONTAINERD2_VERSION}"
fi

# --- crictl -------------------------------------------------------------------------
if ! built "${CRICTL_DIR}" crictl "v${CRICTL_VERSION}"; then
	build_module "${CRICTL_DIR}" "v${CRICTL_VERSION}" crictl \
		"sigs.k8s.io/cri-tools@v${CRICTL_VERSION}" sigs.k8s.io/cri-tools/cmd/crictl "" \
		"-X sigs.k8s.io/cri-tools/pkg/version.Version=v${CRICTL_VERSION}"
fi

# --- test image programs ------------------------------------------------------------
# Static, standard-library-only Go programs; tests pack them into image archives.
for image in pause echo; do
	stamp=$(image_stamp "${image}")
	built "${IMG_DIR}" "${image}" "${stamp}" && continue
	IDIR="${BUILD_ROOT}/image-${image}"
	mkdir -p "${IDIR}" "${BUILD_ROOT}/out"
	cp "${HERE}/images/${image}/main.go" "${IDIR}/"
	printf 'module tether.local/%s\n\ngo 1.22\n' "${image}" >"${IDIR}/go.mod"
	(cd "${IDIR}" && go build -trimpath -ldflags "-s -w" -o "${BUILD_ROOT}/out/${image}" .)
	install_built "${IMG_DIR}" "${stamp}" "${image}"
	log "image program ${image} built"
done

log "done (total $(elapsed))"
