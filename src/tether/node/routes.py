"""The host's routing table, through ``ip`` (iproute2), and the unit that restores routes at boot.

:class:`IpRoutes` reads the main IPv4 table (``ip -j -4 route show table main``) and
replaces or deletes single routes (``ip route replace|del``). Its ``ip`` command is a
list, so tests run it in a network namespace (``["ip", "-n", "NS"]``).

:func:`write_boot_unit` keeps the same routes across a reboot without the agent: a
oneshot systemd unit (``tether-routes.service``, enabled by its ``multi-user.target``
link, as ``systemctl enable`` makes it) that runs ``ip route replace`` for each route
once the network is online. With no routes both files are removed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Final

from tether.domain.routes import Route
from tether.errors import Temporary
from tether.files import write_atomic
from tether.netplan.render.site import oneshot_unit
from tether.node.tracker import host_path

__all__ = ["BOOT_UNIT", "IpRoutes", "RouteCommandError", "write_boot_unit"]

BOOT_UNIT: Final = "/etc/systemd/system/tether-routes.service"
_WANTS: Final = "/etc/systemd/system/multi-user.target.wants/tether-routes.service"


class RouteCommandError(Temporary):
    """``ip`` failed; the message is its own. Retried: a route via a gateway whose link
    is not up yet fails now and succeeds later."""


class IpRoutes:
    def __init__(self, ip: Sequence[str] = ("ip",), *, timeout: float = 10.0) -> None:
        self.ip = list(ip)
        self.timeout = timeout

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [*self.ip, *args], capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouteCommandError(f"ip {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()[-300:]
            raise RouteCommandError(f"ip {' '.join(args)}: {message}")
        return done.stdout

    def show(self) -> dict[IPv4Network, IPv4Address | None]:
        """Destination -> gateway of every route in the main IPv4 table."""
        text = self._run("-j", "-4", "route", "show", "table", "main")
        try:
            entries = json.loads(text or "[]")
        except ValueError as exc:
            raise RouteCommandError(f"ip -j route show: unreadable output: {exc}") from exc
        out: dict[IPv4Network, IPv4Address | None] = {}
        for entry in entries:
            dst = entry.get("dst", "")
            try:
                net = IPv4Network("0.0.0.0/0" if dst == "default" else dst)
            except ValueError:
                continue
            gateway = entry.get("gateway")
            out[net] = IPv4Address(gateway) if gateway else None
        return out

    def replace(self, route: Route) -> None:
        self._run("route", "replace", str(route.destination), "via", str(route.via))

    def delete(self, route: Route) -> None:
        self._run("route", "del", str(route.destination), "via", str(route.via))


def write_boot_unit(root: Path, routes: Sequence[Route], ip: str = "/sbin/ip") -> None:
    """Write (or, without routes, remove) the boot unit and its enabling link (module doc)."""
    unit, wants = host_path(root, BOOT_UNIT), host_path(root, _WANTS)
    if not routes:
        unit.unlink(missing_ok=True)
        wants.unlink(missing_ok=True)
        return
    text = oneshot_unit(
        ["Written by the Tether agent: static routes the plane asks this host to keep."],
        "Tether static routes",
        [f"{ip} route replace {r.destination} via {r.via}" for r in routes],
    )
    write_atomic(unit, text, 0o644, dir_mode=0o755)
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to(BOOT_UNIT)
