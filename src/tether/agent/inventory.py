"""What the host is made of, read from /proc, /sys and /etc with graceful fallbacks.

Every reader returns an empty value when its source is missing or unreadable (a
container, a minimal image, an unusual kernel): inventory never stops enrolment. The
roots are parameters so tests use a fake tree.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from tether.domain.agent import NIC, CPUInfo, Disk, Inventory, OSInfo

#: Placeholder UUIDs firmware fills in when it has none.
_BOGUS_UUIDS = {
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
}


@dataclass(frozen=True)
class Roots:
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    etc: Path = Path("/etc")


def _read(path: Path, limit: int = 1 << 20) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def cpu(roots: Roots) -> CPUInfo:
    text = _read(roots.proc / "cpuinfo")
    model = ""
    count = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
    return CPUInfo(model=model[:256], count=count or (os.cpu_count() or 0))


def memory_bytes(roots: Roots) -> int:
    for line in _read(roots.proc / "meminfo").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024
            except (IndexError, ValueError):
                return 0
    return 0


def os_info(roots: Roots) -> OSInfo:
    fields: dict[str, str] = {}
    for line in (
        _read(roots.etc / "os-release") or _read(Path("/usr/lib/os-release"))
    ).splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip('"')
    kernel = _read(roots.proc / "sys" / "kernel" / "osrelease").strip() or platform.release()
    return OSInfo(
        id=fields.get("ID", "")[:256],
        name=fields.get("PRETTY_NAME", fields.get("NAME", ""))[:256],
        version=fields.get("VERSION_ID", "")[:256],
        kernel=kernel[:256],
    )


def _ipv4_by_interface(roots: Roots) -> dict[str, list[str]]:
    """IPv4 addresses per interface from /proc/net/fib_trie (no ioctl, no netlink)."""
    result: dict[str, list[str]] = {}
    routes = _read(roots.proc / "net" / "route").splitlines()[1:]
    text = _read(roots.proc / "net" / "fib_trie")
    # Local addresses appear as "|-- a.b.c.d" followed by "/32 host LOCAL".
    lines = text.splitlines()
    local = []
    for i, line in enumerate(lines[:-1]):
        if "/32 host LOCAL" in lines[i + 1] and "|--" in line:
            local.append(line.split("|--")[-1].strip())
    # Map each address to an interface via the routing table's networks.
    nets: list[tuple[int, int, str]] = []
    for row in routes:
        parts = row.split()
        if len(parts) >= 8:
            try:
                dest = int(parts[1], 16)
                mask = int(parts[7], 16)
            except ValueError:
                continue
            nets.append((dest, mask, parts[0]))
    for addr in dict.fromkeys(local):
        try:
            packed = socket.inet_aton(addr)
        except OSError:
            continue
        value = int.from_bytes(packed, "little")
        best = None
        for dest, mask, iface in nets:
            if mask and value & mask == dest and (best is None or mask.bit_count() > best[0]):
                best = (mask.bit_count(), iface)
        if best is not None:
            result.setdefault(best[1], []).append(addr)
        elif addr.startswith("127."):
            result.setdefault("lo", []).append(addr)
    return result


def _ipv6_by_interface(roots: Roots) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in _read(roots.proc / "net" / "if_inet6").splitlines():
        parts = line.split()
        if len(parts) == 6:
            raw = parts[0]
            try:
                addr = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))
            except (OSError, ValueError):
                continue
            result.setdefault(parts[5], []).append(addr)
    return result


def nics(roots: Roots) -> list[NIC]:
    base = roots.sys / "class" / "net"
    try:
        names = sorted(p.name for p in base.iterdir())
    except OSError:
        names = (
            sorted(name for _, name in socket.if_nameindex())
            if hasattr(socket, "if_nameindex")
            else []
        )
    v4, v6 = _ipv4_by_interface(roots), _ipv6_by_interface(roots)
    result = []
    for name in names[:256]:
        mac = _read(base / name / "address").strip()
        addresses = v4.get(name, []) + v6.get(name, [])
        result.append(NIC(name=name[:256], mac=mac[:256], addresses=addresses[:64]))
    return result


def disks(roots: Roots) -> list[Disk]:
    base = roots.sys / "block"
    try:
        names = sorted(p.name for p in base.iterdir())
    except OSError:
        return []
    result = []
    for name in names:
        if name.startswith(("loop", "ram", "zram", "dm-", "sr")):
            continue
        try:
            sectors = int(_read(base / name / "size").strip() or 0)
        except ValueError:
            sectors = 0
        rotational = _read(base / name / "queue" / "rotational").strip()
        result.append(
            Disk(
                name=name[:256],
                size_bytes=sectors * 512,
                rotational=None if rotational == "" else rotational == "1",
                model=_read(base / name / "device" / "model").strip()[:256],
            )
        )
    return result[:256]


def machine_id(roots: Roots) -> str:
    return (
        _read(roots.etc / "machine-id").strip() or _read(Path("/var/lib/dbus/machine-id")).strip()
    )[:256]


def product_uuid(roots: Roots) -> str:
    """The DMI product UUID (root-only on most systems), or "" if absent or a placeholder."""
    value = _read(roots.sys / "class" / "dmi" / "id" / "product_uuid").strip().lower()
    return "" if value in _BOGUS_UUIDS else value[:256]


def collect(roots: Roots | None = None) -> Inventory:
    roots = roots or Roots()
    return Inventory(
        cpu=cpu(roots),
        memory_bytes=memory_bytes(roots),
        arch=platform.machine(),
        os=os_info(roots),
        nics=nics(roots),
        disks=disks(roots),
        machine_id=machine_id(roots),
        product_uuid=product_uuid(roots),
        hostname=socket.gethostname()[:256],
        image_build=_read(roots.etc / "tether" / "image-build", 256).strip(),
    )
