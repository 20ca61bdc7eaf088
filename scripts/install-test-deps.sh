#!/usr/bin/env bash
# Debian packages the integration tests use; installs only what is missing (root only).
set -euo pipefail
packages=(postgresql iproute2 iputils-ping procps strongswan-swanctl charon-systemd libcharon-extra-plugins bird2 chromium
  containerd runc containernetworking-plugins iptables util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "all present: ${packages[*]}"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The packages' own services are not wanted: tests start their own instances.
for unit in strongswan-starter strongswan bird containerd; do
  service "$unit" stop >/dev/null 2>&1 || true
done
