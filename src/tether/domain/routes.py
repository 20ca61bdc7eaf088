"""Static routes the plane asks a host to keep, and what keeping them takes. Pure.

A pool host with its own VPN server address (``HostSpec.vpnServerIP``) needs a route for
the cluster's VPC CIDR via that address. The route travels in the host's desired-state
document (``{"routes": [{"destination": ..., "via": ...}], "node": ...}``); the agent
installs it, puts it back when it goes missing, and removes it when a document no longer
asks for it (the host left its pool).

:func:`route_actions` compares what is wanted, what the agent installed before (its
*managed* routes, so that it never removes a route someone else made) and what the
kernel has, and says what to replace, what to delete and how each wanted route stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final, Literal

__all__ = [
    "ROUTE_CHECK",
    "Route",
    "RouteActions",
    "RouteError",
    "parse_routes",
    "route_actions",
    "routes_document",
]

#: The heartbeat check that reports the routes (its ``vpn`` prefix makes it count for the
#: site's tunnel health on the dashboard).
ROUTE_CHECK: Final = "vpn-route"

RouteState = Literal["present", "missing", "error"]


class RouteError(ValueError):
    """A ``routes`` entry of a desired-state document is invalid (``field`` says which)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, order=True)
class Route:
    destination: IPv4Network
    via: IPv4Address

    def as_dict(self) -> dict[str, str]:
        return {"destination": str(self.destination), "via": str(self.via)}

    def __str__(self) -> str:
        return f"{self.destination} via {self.via}"


def routes_document(routes: Iterable[Route]) -> list[dict[str, str]]:
    return [r.as_dict() for r in sorted(routes)]


def parse_routes(data: Any) -> list[Route]:
    """The ``routes`` of a desired-state document; :class:`RouteError` names a bad entry."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise RouteError("routes", "must be a list of {destination, via}")
    out: dict[IPv4Network, Route] = {}
    for i, entry in enumerate(data):
        where = f"routes[{i}]"
        if not isinstance(entry, Mapping):
            raise RouteError(where, "must be an object with destination and via")
        try:
            destination = IPv4Network(str(entry.get("destination")))
        except ValueError:
            raise RouteError(
                f"{where}.destination", "must be an IPv4 CIDR without host bits"
            ) from None
        try:
            via = IPv4Address(str(entry.get("via")))
        except ValueError:
            raise RouteError(f"{where}.via", "must be an IPv4 address") from None
        if destination in out:
            raise RouteError(f"{where}.destination", f"{destination} is listed twice")
        out[destination] = Route(destination, via)
    return sorted(out.values())


@dataclass
class RouteActions:
    """What to do to the kernel's table, and how each wanted route stands before it."""

    replace: list[Route] = field(default_factory=list)
    delete: list[Route] = field(default_factory=list)
    states: dict[Route, RouteState] = field(default_factory=dict)


def route_actions(
    wanted: Sequence[Route],
    managed: Iterable[Route],
    observed: Mapping[IPv4Network, IPv4Address | None],
) -> RouteActions:
    """Compare wanted, managed and observed routes (module doc).

    ``observed`` maps each destination in the kernel's main table to its gateway (None
    for a route without one). A wanted route whose destination is there with another
    gateway counts as missing and is replaced. A managed route no longer wanted is
    deleted only while the kernel still has it with the gateway the agent gave it.
    """
    out = RouteActions()
    wanted_by_dest = {r.destination: r for r in wanted}
    for route in wanted:
        if observed.get(route.destination, None) == route.via:
            out.states[route] = "present"
        else:
            out.states[route] = "missing"
            out.replace.append(route)
    for route in sorted(set(managed)):
        if route.destination in wanted_by_dest:
            continue
        if route.destination in observed and observed[route.destination] == route.via:
            out.delete.append(route)
    return out
