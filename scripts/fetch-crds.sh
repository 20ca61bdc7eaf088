#!/usr/bin/env bash
# Fetch the upstream Cilium and Calico CRDs Tether's tests install into the test
# kube-apiserver, so its schema validation judges every resource Tether applies.
#
# Why from the Go module proxy: no registry or release page is reachable here, but the
# proxy serves each project's module, and the modules carry the CRD YAML.
#
# What (copied from the module source, unchanged):
#   - Cilium CILIUM_VERSION: pkg/k8s/apis/cilium.io/client/crds/v2/<name>.yaml for
#     the BGP control plane (cluster configs, peer configs, advertisements, node
#     configs) and CiliumNode;
#   - Calico CALICO_VERSION (a pseudo-version: the calico module's release tags are
#     not valid Go module versions): libcalico-go/config/crd/crd.projectcalico.org_*.yaml
#     for BGP peers, BGP configurations and IP pools.
#
# Usage:
#   scripts/fetch-crds.sh              fetch what is missing (no-op if cached)
#   scripts/fetch-crds.sh --print-dir  print the cache dir
#
# Environment:
#   TETHER_KUBE_CACHE  cache root (default: $HOME/.cache/tether/kube)
#
# Layout: $TETHER_KUBE_CACHE/crds-cilium-<CILIUM_VERSION>-calico-<CALICO_VERSION>/*.yaml
# and a VERSIONS stamp written last. Keep the versions in step with
# tether.sim.envtest (CILIUM_VERSION, CALICO_VERSION).
set -euo pipefail

CILIUM_VERSION="1.20.2"
CALICO_VERSION="v1.11.0-cni-plugin.0.20250813170300-a0db560f0520"
CILIUM_CRDS=(ciliumbgpclusterconfigs ciliumbgppeerconfigs ciliumbgpadvertisements
	ciliumbgpnodeconfigs ciliumbgpnodeconfigoverrides ciliumnodes)
CALICO_CRDS=(bgppeers bgpconfigurations ippools)

CACHE_ROOT="${TETHER_KUBE_CACHE:-$HOME/.cache/tether/kube}"
OUT_DIR="${CACHE_ROOT}/crds-cilium-${CILIUM_VERSION}-calico-${CALICO_VERSION}"
STAMP="cilium=v${CILIUM_VERSION} calico=${CALICO_VERSION}"

case "${1:-}" in
--print-dir)
	echo "${OUT_DIR}"
	exit 0
	;;
"") ;;
*)
	echo "fetch-crds.sh: unknown argument: $1" >&2
	exit 2
	;;
esac

complete() { [[ "$(cat "${OUT_DIR}/VERSIONS" 2>/dev/null)" == "${STAMP}" ]]; }

# shellcheck source=lib/cache.sh
source "$(cd "$(dirname "$0")" && pwd)/lib/cache.sh"
cache_ready_or_lock fetch-crds "${CACHE_ROOT}/.crds.lock" complete

# module_dir MODULE@VERSION: download the module (outside any go.mod) and print its dir.
module_dir() {
	(cd / && GOFLAGS=-mod=mod go mod download -json "$1" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

STAGE="${OUT_DIR}.tmp"
rm -rf "${STAGE}"
mkdir -p "${STAGE}"
trap 'rm -rf "${STAGE}"' EXIT

cilium=$(module_dir "github.com/cilium/cilium@v${CILIUM_VERSION}")
for name in "${CILIUM_CRDS[@]}"; do
	cp "${cilium}/pkg/k8s/apis/cilium.io/client/crds/v2/${name}.yaml" "${STAGE}/cilium-${name}.yaml"
done
calico=$(module_dir "github.com/projectcalico/calico@${CALICO_VERSION}")
for name in "${CALICO_CRDS[@]}"; do
	cp "${calico}/libcalico-go/config/crd/crd.projectcalico.org_${name}.yaml" "${STAGE}/calico-${name}.yaml"
done
printf '%s\n' "${STAMP}" >"${STAGE}/VERSIONS"
rm -rf "${OUT_DIR}"
mv "${STAGE}" "${OUT_DIR}"
echo "fetch-crds: ${STAMP} in ${OUT_DIR}"
