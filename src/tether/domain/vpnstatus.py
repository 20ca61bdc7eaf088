"""A VPN server's tunnel and BGP state, read from ``swanctl --list-sas`` and
``birdc show protocols``. Pure: the agent runs the commands and passes their output.

:func:`tunnel_state` counts IKE SAs ``ESTABLISHED`` and child SAs ``INSTALLED`` and adds
up the bytes of the child SAs; :func:`bgp_state` lists each BGP protocol with its state.
:func:`tunnel_problem` and :func:`bgp_problem` say what is wrong (None when all is up):
the agent reports them as its ``tunnel`` and ``bgp`` checks, which the plane turns into
the site's tunnel and BGP health.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["BgpState", "TunnelState", "bgp_problem", "bgp_state", "tunnel_problem", "tunnel_state"]

_IKE = re.compile(r"^(\S+): #\d+, (\w+), IKEv\d")
_CHILD = re.compile(r"^\s+(\S+): #\d+, reqid \d+, (\w+),")
_BYTES = re.compile(r"^\s+(in|out)\s+\S+,\s+(\d+) bytes")
_BGP_STATES = frozenset({"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"})


@dataclass
class TunnelState:
    ike: dict[str, str] = field(default_factory=dict)  # IKE SA name -> state
    children: dict[str, str] = field(default_factory=dict)  # child SA name -> state
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def ike_up(self) -> int:
        return sum(1 for s in self.ike.values() if s == "ESTABLISHED")

    @property
    def children_up(self) -> int:
        return sum(1 for s in self.children.values() if s == "INSTALLED")

    def as_dict(self) -> dict[str, int]:
        return {
            "ikeUp": self.ike_up,
            "childrenUp": self.children_up,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
        }


def tunnel_state(list_sas: str) -> TunnelState:
    """Parse ``swanctl --list-sas`` (several SAs of one name count once, the best state)."""
    out = TunnelState()
    for line in list_sas.splitlines():
        if m := _IKE.match(line):
            if out.ike.get(m[1]) != "ESTABLISHED":
                out.ike[m[1]] = m[2]
        elif m := _CHILD.match(line):
            if out.children.get(m[1]) != "INSTALLED":
                out.children[m[1]] = m[2]
        elif m := _BYTES.match(line):
            if m[1] == "in":
                out.bytes_in += int(m[2])
            else:
                out.bytes_out += int(m[2])
    return out


def tunnel_problem(state: TunnelState, tunnels: int, children: int) -> str | None:
    """What is down of ``tunnels`` IKE SAs and ``children`` child SAs (None: all up)."""
    if state.ike_up >= tunnels and state.children_up >= children:
        return None
    down = sorted(
        k
        for k, s in {**state.ike, **state.children}.items()
        if s not in ("ESTABLISHED", "INSTALLED")
    )
    extra = f"; not up: {', '.join(down)}" if down else ""
    return (
        f"{state.ike_up}/{tunnels} IKE SAs established, "
        f"{state.children_up}/{children} child SAs installed{extra}"
    )


@dataclass
class BgpState:
    sessions: dict[str, str] = field(default_factory=dict)  # protocol -> state/info

    @property
    def established(self) -> int:
        return sum(1 for s in self.sessions.values() if s == "Established")

    def as_dict(self) -> dict[str, int]:
        return {"established": self.established, "sessions": len(self.sessions)}


def bgp_state(show_protocols: str) -> BgpState:
    """Parse ``birdc show protocols``: each BGP protocol and its BGP state (or BIRD's)."""
    out = BgpState()
    for line in show_protocols.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "BGP":
            out.sessions[parts[0]] = next((p for p in parts[4:] if p in _BGP_STATES), parts[3])
    return out


def bgp_problem(state: BgpState, sessions: int) -> str | None:
    """What is down of ``sessions`` expected BGP sessions (None: all Established)."""
    if state.established >= sessions:
        return None
    down = sorted(f"{k} {v}" for k, v in state.sessions.items() if v != "Established")
    extra = f"; down: {', '.join(down)}" if down else ""
    return f"{state.established}/{sessions} BGP sessions established{extra}"
