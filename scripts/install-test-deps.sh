#!/usr/bin/env bash
# Debian packages the integration tests use; installs only what is missing (root only).
set -euo pipefail
packages=(postgresql iproute2 iputils-ping procps strongswan-swanctl charon-systemd libcharon-extra-plugins bird2 chromium
  containerd runc containernetworking-plugins iptables util-linux
  debootstrap e2fsprogs qemu-system-x86 grub-common grub-pc-bin xorriso
  python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema python3-netifaces python3-oauthlib
  python3-requests python3-yaml python3-serial)
# Debian's cloud-init validates the site seed in tests: unpacked, never installed (it would
# configure this machine). Its Python dependencies are in the list above.
unpack_cloud_init() {
  local dir="$HOME/.cache/tether/cloud-init" tmp
  [ -d "$dir/usr/lib/python3/dist-packages/cloudinit" ] && return 0
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q cloud-init && dpkg -x cloud-init_*.deb "$tmp/root")
  mkdir -p "$(dirname "$dir")" && rm -rf "$dir" && mv "$tmp/root" "$dir" && rm -rf "$tmp"
}
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "all present: ${packages[*]}"; unpack_cloud_init; exit 0; }
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The packages' own services are not wanted: tests start their own instances.
for unit in strongswan-starter strongswan bird containerd; do
  service "$unit" stop >/dev/null 2>&1 || true
done
unpack_cloud_init
