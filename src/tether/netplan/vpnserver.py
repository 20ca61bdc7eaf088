"""A site VPN server's desired state: what ``tether net plan`` renders for it, as one document.

``{"vpnServer": {"pool": ..., "site": ..., "files": {"swanctl/swanctl.conf": ...,
"swanctl/secrets.conf": ..., "routes.sh": ..., "bird.conf": ...}}}``: the files of
``pools/<pool>/vpn-server/`` of :meth:`Plan.files` (:data:`FILES`), by their path below
that folder. The
agent of a host with the ``vpn-server`` role applies it (:mod:`tether.agent.vpnserver`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tether.domain.agent import document_hash
from tether.netplan.planner import Plan

__all__ = [
    "FILES",
    "KEY_FILE",
    "ServerDocuments",
    "hide_keys",
    "server_documents",
    "to_push",
    "vpn_server_document",
]

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


@dataclass(frozen=True)
class ServerDocuments:
    """What each ``vpn-server`` host should run, and the pools whose server gets nothing."""

    #: host -> (its pool, its document)
    documents: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: pool -> why its site's VPN server gets no document (``field: message``)
    problems: dict[str, str] = field(default_factory=dict)


def server_documents(plans: Iterable[Plan], servers: Mapping[str, str]) -> ServerDocuments:
    """The document of each site's VPN server host (``servers``: site -> host), from the
    plans of the clusters with pools at those sites. A site with pools of more than one
    cluster gets none: a plan gives each pool its own VPN server (its own tunnels and
    inside address), so one host cannot stand for two."""
    found: dict[str, list[tuple[Plan, str]]] = defaultdict(list)
    for result in plans:
        for pool in result.pools:
            if pool.site in servers:
                found[pool.site].append((result, pool.name))
    out = ServerDocuments()
    for site, pools in sorted(found.items()):
        if len(pools) > 1:
            names = ", ".join(sorted(name for _, name in pools))
            for _, name in pools:
                out.problems[name] = (
                    f"spec.site: site {site} has pools {names}; its vpn-server host "
                    f"{servers[site]} serves one pool"
                )
            continue
        result, name = pools[0]
        out.documents[servers[site]] = (name, vpn_server_document(result, name))
    return out


def to_push(wanted: Mapping[str, dict[str, Any]], stored: Mapping[str, str]) -> dict[str, Any]:
    """The documents of ``wanted`` (host -> document) whose hash is not the stored one
    (host -> hash): only those are written, so an unchanged plan writes nothing."""
    return {host: doc for host, doc in wanted.items() if stored.get(host) != document_hash(doc)}
