"""A ``vpn-server`` host's agent applies its site's VPN server configuration and reports
the tunnels and BGP sessions (see :mod:`tether.netplan.vpnserver` for the document).

:meth:`VpnServer.apply` writes ``swanctl.conf`` and ``secrets.conf`` (0600, in
``vpnServer.dir``/swanctl) and loads them into charon over vici (``swanctl --load-all``:
connections no longer in the file are unloaded, new children with ``start_action =
start`` come up, established ones stay), writes ``bird.conf`` and has the running BIRD
read it (``birdc configure``), and runs ``routes.sh``. Commands are lists from the
agent's config, so a test (or a host with its own layout) can prefix them
(``ip netns exec NS``) or point them at a vici socket (``swanctl --uri ...``).

:meth:`VpnServer.checks` reads ``swanctl --list-sas`` and ``birdc show protocols`` and
returns the ``tunnel`` and ``bgp`` checks the heartbeat reports. Secrets never leave the
host: results carry counts and states only, and command output is never reported.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.agent.config import VpnServerConfig
from tether.domain.vpnstatus import (
    BgpState,
    TunnelState,
    bgp_problem,
    bgp_state,
    tunnel_problem,
    tunnel_state,
)
from tether.errors import Permanent, Temporary
from tether.files import write_atomic
from tether.netplan.vpnserver import FILES

log = logging.getLogger("tether.agent.vpnserver")

__all__ = ["VpnServer", "VpnServerError"]


class VpnServerError(Temporary):
    """A command failed; the message names it, never the content of a file. Retried: the
    daemon it talks to may not be up yet."""


class InvalidVpnDocument(Permanent):
    """The ``vpnServer`` section is invalid; the message names the field."""


@dataclass(frozen=True)
class Expect:
    tunnels: int
    children: int
    bgp_sessions: int


def _parse(data: Any) -> tuple[dict[str, str], Expect]:
    if not isinstance(data, Mapping):
        raise InvalidVpnDocument("vpnServer: must be an object")
    files = data.get("files")
    if not isinstance(files, Mapping) or "swanctl/swanctl.conf" not in files:
        raise InvalidVpnDocument("vpnServer.files: must hold swanctl/swanctl.conf")
    for name, content in files.items():
        if name not in FILES:
            raise InvalidVpnDocument(
                f"vpnServer.files.{name}: unknown file (known: {', '.join(sorted(FILES))})"
            )
        if not isinstance(content, str):
            raise InvalidVpnDocument(f"vpnServer.files.{name}: must be text")
    raw = data.get("expect") or {}
    try:
        expect = Expect(
            int(raw.get("tunnels", 2)), int(raw.get("children", 4)), int(raw.get("bgpSessions", 0))
        )
    except (TypeError, ValueError, AttributeError):
        raise InvalidVpnDocument("vpnServer.expect: counts must be integers") from None
    return dict(files), expect


class VpnServer:
    def __init__(self, config: VpnServerConfig) -> None:
        self.config = config
        self.expect: Expect | None = None

    def _run(self, argv: list[str], what: str) -> str:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.config.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VpnServerError(f"{what}: {exc}") from exc
        if done.returncode != 0:
            # The tools' errors name connections and files, not keys; keep them short.
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise VpnServerError(f"{what} failed ({done.returncode}): {tail[0][:200]}")
        return done.stdout

    def _swanctl(self, *args: str) -> str:
        uri = ["--uri", self.config.vici] if self.config.vici else []
        return self._run([*self.config.swanctl, *args, *uri], f"swanctl {args[0]}")

    def want(self, data: Any) -> None:
        """Remember what to report on, from a stored document (after a restart)."""
        self.expect = _parse(data)[1] if data is not None else None

    def apply(self, data: Any) -> dict[str, Any]:
        """Apply the ``vpnServer`` section (module doc); the applied result."""
        try:
            files, expect = _parse(data)
        except InvalidVpnDocument as exc:
            return {"ok": False, "retryable": False, "message": str(exc)}
        cfg = self.config
        root = cfg.dir
        for name, content in files.items():
            path = cfg.bird_config if name == "bird.conf" else root / name
            write_atomic(path, content, FILES[name])
        self.expect = expect
        done = []
        try:
            swanctl = root / "swanctl/swanctl.conf"
            self._swanctl("--load-all", "--file", str(swanctl))
            done.append("swanctl")
            if "bird.conf" in files:
                self._run([*cfg.birdc, "configure", f'"{cfg.bird_config}"'], "birdc configure")
                done.append("bird")
            if "routes.sh" in files:
                self._run([*cfg.shell, str(root / "routes.sh")], "routes.sh")
                done.append("routes")
        except VpnServerError as exc:
            return {"ok": False, "message": str(exc), "applied": done}
        return {"ok": True, "message": "applied: " + ", ".join(done), "applied": done}

    def _observe(self) -> tuple[TunnelState | str, BgpState | str | None]:
        """The tunnels (or why they cannot be read) and, where BGP is expected, the
        sessions; nothing of a file or a key."""
        tunnels: TunnelState | str
        bgp: BgpState | str | None = None
        try:
            tunnels = tunnel_state(self._swanctl("--list-sas"))
        except VpnServerError as exc:
            tunnels = str(exc)
        if self.expect is not None and self.expect.bgp_sessions:
            try:
                bgp = bgp_state(
                    self._run([*self.config.birdc, "show", "protocols"], "birdc show protocols")
                )
            except VpnServerError as exc:
                bgp = str(exc)
        return tunnels, bgp

    def checks(self) -> tuple[dict[str, str | None], dict[str, Any]]:
        """The ``tunnel`` (and, with BGP sessions expected, ``bgp``) checks, each a
        problem or None, and the state as counts (IKE and child SAs up, bytes in and
        out, BGP sessions established). Both empty when this host is no VPN server."""
        expect = self.expect
        if expect is None:
            return {}, {}
        tunnels, bgp = self._observe()
        problems: dict[str, str | None] = {}
        status: dict[str, Any] = {}
        if isinstance(tunnels, str):
            problems["tunnel"] = tunnels
        else:
            problems["tunnel"] = tunnel_problem(tunnels, expect.tunnels, expect.children)
            status["tunnels"] = tunnels.as_dict()
        if isinstance(bgp, str):
            problems["bgp"] = bgp
        elif bgp is not None:
            problems["bgp"] = bgp_problem(bgp, expect.bgp_sessions)
            status["bgp"] = bgp.as_dict()
        return problems, status
