"""A site VPN server's desired state: what ``tether net plan`` renders for it, as one document.

``{"vpnServer": {"pool": ..., "site": ..., "files": {"swanctl/swanctl.conf": ...,
"swanctl/secrets.conf": ..., "routes.sh": ..., "bird.conf": ...}}}``: the files of
``pools/<pool>/vpn-server/`` of :meth:`Plan.files` (:data:`FILES`), by their path below
that folder. The
agent of a host with the ``vpn-server`` role applies it (:mod:`tether.agent.vpnserver`).
"""

from __future__ import annotations

from typing import Any, Final

from tether.netplan.planner import Plan

__all__ = ["FILES", "KEY_FILE", "hide_keys", "vpn_server_document"]

#: The file of a VPN server document that holds the tunnels' keys.
KEY_FILE: Final = "swanctl/secrets.conf"
#: The files a document carries (the agent applies each), and the modes they get.
FILES: Final = {
    "swanctl/swanctl.conf": 0o600,
    KEY_FILE: 0o600,
    "routes.sh": 0o700,
    "bird.conf": 0o600,
}


def vpn_server_document(result: Plan, pool: str) -> dict[str, Any]:
    """The desired-state document of ``pool``'s VPN server (module doc); KeyError if no
    such pool."""
    spec = next((p for p in result.pools if p.name == pool), None)
    if spec is None:
        raise KeyError(pool)
    base = f"pools/{pool}/vpn-server/"
    # The folder's systemd unit for routes.sh is for hand installs: the agent itself runs
    # routes.sh on every document.
    files = {
        name: text
        for path, text in result.files().items()
        if path.startswith(base) and (name := path.removeprefix(base)) in FILES
    }
    expect = {
        "tunnels": len(spec.tunnels),
        "children": sum(len(t.children) for t in spec.tunnels),
        "bgpSessions": len(spec.nodes) if spec.routing == "bgp" else 0,
    }
    return {"vpnServer": {"pool": pool, "site": spec.site, "expect": expect, "files": files}}


def hide_keys(document: dict[str, Any], shown: str) -> dict[str, Any]:
    """``document`` as people may see it: a VPN server's key file replaced by ``shown``
    (only the host's agent gets the keys)."""
    section = document.get("vpnServer")
    if not isinstance(section, dict):
        return document
    files = section.get("files")
    if not isinstance(files, dict) or KEY_FILE not in files:
        return document
    return {**document, "vpnServer": {**section, "files": {**files, KEY_FILE: shown}}}
