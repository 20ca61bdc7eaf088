"""The agent keeps the static routes of its desired state (see :mod:`tether.domain.routes`).

:meth:`RouteKeeper.want` takes the routes of a new document; :meth:`RouteKeeper.keep`
compares them with the kernel's table and the routes it installed before, replaces what
is missing or points elsewhere, deletes what it installed and is no longer wanted, and
rewrites the boot unit. The agent calls it on every document and every heartbeat, so a
route deleted by hand is back within one heartbeat interval; it starts from the stored
document, so after a reboot the routes are back before the plane is reachable.

The routes it installed are kept in ``stateDir/routes.json``: it only ever deletes those,
also after a restart, never a route someone else made.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tether.domain.routes import Route, RouteState, parse_routes, route_actions, routes_document
from tether.errors import HostError
from tether.files import write_atomic
from tether.node.routes import write_boot_unit

log = logging.getLogger("tether.agent.routes")

__all__ = ["Kept", "RouteKeeper", "RouteTable"]


class RouteTable(Protocol):
    def show(self) -> dict[Any, Any]: ...
    def replace(self, route: Route) -> None: ...
    def delete(self, route: Route) -> None: ...


@dataclass
class Kept:
    """What one :meth:`RouteKeeper.keep` found and did."""

    states: dict[Route, RouteState] = field(default_factory=dict)
    errors: dict[Route, str] = field(default_factory=dict)
    restored: list[Route] = field(default_factory=list)
    removed: list[Route] = field(default_factory=list)

    def report(self) -> dict[str, str]:
        """``{"<dest> via <gw>": "present" | "error: ..."}`` for heartbeats and results."""
        return {
            str(r): state if r not in self.errors else f"error: {self.errors[r]}"
            for r, state in sorted(self.states.items())
        }

    def failing(self) -> str | None:
        """The heartbeat check's message when a route cannot be kept, else None."""
        if not self.errors:
            return None
        return "; ".join(f"{r}: {msg}" for r, msg in sorted(self.errors.items()))[:500]


class RouteKeeper:
    def __init__(self, state_dir: Path, table: RouteTable, root: Path) -> None:
        self.path = state_dir / "routes.json"
        self.table = table
        self.root = root
        self.wanted: list[Route] = []
        self._lock = threading.Lock()

    def _managed(self) -> list[Route]:
        try:
            return parse_routes(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return []

    def want(self, document: dict[str, Any] | None) -> None:
        """Take the routes of ``document`` (none for None); RouteError if they are invalid."""
        routes = parse_routes((document or {}).get("routes"))
        with self._lock:
            self.wanted = routes

    def keep(self) -> Kept:
        """Make the kernel's table hold the wanted routes (module doc)."""
        with self._lock:
            kept = Kept()
            managed = self._managed()
            if not self.wanted and not managed:
                return kept
            try:
                observed = self.table.show()
            except HostError as exc:
                kept.states = dict.fromkeys(self.wanted, "error")
                kept.errors = dict.fromkeys(self.wanted, str(exc))
                return kept
            actions = route_actions(self.wanted, managed, observed)
            kept.states = dict(actions.states)
            for route in actions.replace:
                try:
                    self.table.replace(route)
                except HostError as exc:
                    kept.states[route], kept.errors[route] = "error", str(exc)
                    continue
                kept.states[route] = "present"
                kept.restored.append(route)
            for route in actions.delete:
                try:
                    self.table.delete(route)
                    kept.removed.append(route)
                except HostError as exc:
                    log.warning("cannot remove route %s: %s", route, exc)
            # Remember every wanted route before the next step can fail, and a route
            # that could not be removed, to try again.
            still = [r for r in actions.delete if r not in kept.removed]
            remember = [*self.wanted, *still]
            if remember != managed or kept.restored or kept.removed:  # no write per beat
                write_atomic(self.path, json.dumps(routes_document(remember)))
                write_boot_unit(self.root, self.wanted)
            return kept
