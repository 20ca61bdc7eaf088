"""Connections to imported clusters: kubeconfig checks, storage, clients, error mapping.

Tether keeps one kubeconfig per imported cluster at
``<data dir>/clusters/<name>/kubeconfig`` (directory 0700, file 0600). It holds the
API server URL, its CA and the token of Tether's own service account
(``tether-system/tether``), never the credentials the operator imported with.

Kubeconfigs that arrive over the API are checked before anything reads them: they must
be self-contained (``certificate-authority-data``, ``client-certificate-data``,
``client-key-data``, ``token``). File references would make the plane read its own
files for a remote caller, and ``exec``/``auth-provider`` users would make it run
commands, so both are refused; so is ``insecure-skip-tls-verify``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from tether.errors import Conflict, Invalid, PlaneError
from tether.files import parse_yaml_or_json, write_atomic
from tether.kube.client import KubeClient
from tether.kube.errors import (
    Forbidden,
    KubeError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tether.store.db import Database
from tether.store.repo import get_named
from tether.store.schema import HostRow, PoolRow

__all__ = [
    "ClusterError",
    "ClusterUnreachable",
    "NotImported",
    "ResolvedKubeconfig",
    "cluster_dir",
    "from_kube_error",
    "imported_clusters",
    "kubeconfig_path",
    "open_cluster",
    "parse_kubeconfig",
    "write_private",
]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_FILE_KEYS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


class ClusterUnreachable(PlaneError):
    """The cluster's API server did not answer (or failed); nothing changed."""

    status = 502
    code = "cluster_unreachable"


class ClusterError(PlaneError):
    """The cluster's API server refused a request Tether needed."""

    status = 502
    code = "cluster_error"


class NotImported(Conflict):
    code = "not_imported"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"cluster {name!r} has not been imported: run 'tether cluster import {name} "
            "--kubeconfig FILE' first",
            field="name",
            rule="imported",
        )


def from_kube_error(exc: KubeError, doing: str) -> PlaneError:
    """Turn a Kubernetes failure into a plane error saying what Tether was doing."""
    if isinstance(exc, Unavailable | TooManyRequests):
        return ClusterUnreachable(f"{doing}: the cluster's API server is unavailable: {exc}")
    if isinstance(exc, Unauthorized):
        return Invalid(
            f"{doing}: the cluster refused the credentials: {exc}",
            field="kubeconfig",
            rule="kube_credentials",
        )
    if isinstance(exc, Forbidden):
        return ClusterError(f"{doing}: the cluster's RBAC refused it: {exc}", rule="kube_rbac")
    return ClusterError(f"{doing}: {exc}", rule="kube_request")


def check_name(name: str) -> str:
    """A cluster name is also a directory name: only DNS labels pass."""
    if not _NAME.match(name):
        raise Invalid(f"{name!r} is not a valid cluster name", field="name", rule="dns_label")
    return name


def cluster_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "clusters" / check_name(name)


def kubeconfig_path(data_dir: Path, name: str) -> Path:
    return cluster_dir(data_dir, name) / "kubeconfig"


def write_private(path: Path, text: str) -> None:
    """Write *text* 0600 in a 0700 directory, atomically."""
    write_atomic(path, text, 0o600)
    os.chmod(path.parent, 0o700)  # also when the directory existed with a wider mode


def imported_clusters(data_dir: Path) -> list[str]:
    """Names of clusters with a stored kubeconfig."""
    root = data_dir / "clusters"
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if _NAME.match(p.name) and (p / "kubeconfig").is_file()
    )


def open_cluster(data_dir: Path, name: str, *, timeout: float = 10.0) -> KubeClient:
    """A client for an imported cluster, as Tether's service account."""
    path = kubeconfig_path(data_dir, name)
    if not path.is_file():
        raise NotImported(name)
    return KubeClient(path, timeout=timeout)


@contextmanager
def cluster_client(data_dir: Path, name: str) -> Iterator[KubeClient]:
    """:func:`open_cluster` whose Kubernetes failures surface as the plane's errors."""
    with open_cluster(data_dir, name) as client:
        try:
            yield client
        except KubeError as exc:
            raise from_kube_error(exc, f"talking to cluster {name}") from exc


def host_cluster(session: Session, host: str) -> str:
    """The cluster a host is a node of: its pool's cluster (refused for a free host)."""
    row = get_named(session, HostRow, "host", host)
    if row.pool is None:
        raise Invalid(
            f"host {host!r} is not in a pool, so it is no node of any cluster",
            field="spec.pool",
            rule="assigned",
        )
    return get_named(session, PoolRow, "pool", row.pool).cluster


@contextmanager
def node_client(db: Database, data_dir: Path, host: str) -> Iterator[KubeClient]:
    """A client for the cluster the host is a node of (its pool's cluster)."""
    with db.session() as s:
        cluster = host_cluster(s, host)
    with cluster_client(data_dir, cluster) as client:
        yield client


# Checking kubeconfigs that arrive over the API --------------------------------------------


@dataclass(frozen=True)
class ResolvedKubeconfig:
    """One context of a kubeconfig, checked and self-contained."""

    server: str
    ca_pem: str | None
    user: Mapping[str, Any]
    context: str

    def as_dict(self) -> dict[str, Any]:
        cluster: dict[str, Any] = {"server": self.server}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "imported", "cluster": cluster}],
            "users": [{"name": "imported", "user": dict(self.user)}],
            "contexts": [
                {"name": self.context, "context": {"cluster": "imported", "user": "imported"}}
            ],
            "current-context": self.context,
        }

    def client(self, *, timeout: float = 10.0) -> KubeClient:
        return KubeClient(self.as_dict(), timeout=timeout)


def _invalid(message: str) -> Invalid:
    return Invalid(message, field="kubeconfig", rule="self_contained_kubeconfig")


def _named(entries: Any, name: str, what: str) -> Mapping[str, Any]:
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                body = entry.get(what)
                if isinstance(body, Mapping):
                    return body
    raise _invalid(f"the kubeconfig has no {what} named {name!r}")


def _decode_pem(data: Any, what: str) -> str:
    try:
        text = base64.b64decode(str(data), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid(f"{what} is not base64-encoded PEM") from None
    if "-----BEGIN" not in text:
        raise _invalid(f"{what} is not base64-encoded PEM")
    return text


def parse_kubeconfig(text: str, context: str | None = None) -> ResolvedKubeconfig:
    """Check a kubeconfig (rules: module doc) and resolve one context of it."""
    try:
        doc = parse_yaml_or_json(text)
    except yaml.YAMLError as exc:
        raise _invalid(f"the kubeconfig is not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise _invalid("the kubeconfig must be a mapping")
    ctx_name = context or doc.get("current-context")
    if not isinstance(ctx_name, str) or not ctx_name:
        raise _invalid("the kubeconfig has no current-context; name one with --context")
    ctx = _named(doc.get("contexts"), ctx_name, "context")
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster")
    user = _named(doc.get("users"), str(ctx.get("user")), "user")
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise _invalid("the cluster's server must be an https:// URL")
    if cluster.get("insecure-skip-tls-verify"):
        raise _invalid("insecure-skip-tls-verify is refused: give certificate-authority-data")
    for key in _FILE_KEYS:
        if cluster.get(key) or user.get(key):
            raise _invalid(
                f"{key} names a file; send a flattened kubeconfig ({key}-data) instead "
                "(the tether CLI flattens it for you)"
            )
    if "exec" in user or "auth-provider" in user:
        raise _invalid(
            "exec and auth-provider credentials would run commands on the plane; send a "
            "kubeconfig with a token or a client certificate (the tether CLI resolves exec "
            "credentials on your machine)"
        )
    ca = cluster.get("certificate-authority-data")
    ca_pem = _decode_pem(ca, "certificate-authority-data") if ca else None
    resolved: dict[str, Any] = {}
    if isinstance(user.get("token"), str) and user["token"]:
        resolved["token"] = user["token"]
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data or key_data:
        if not (cert_data and key_data):
            raise _invalid("client-certificate-data and client-key-data go together")
        _decode_pem(cert_data, "client-certificate-data")
        _decode_pem(key_data, "client-key-data")
        resolved["client-certificate-data"] = cert_data
        resolved["client-key-data"] = key_data
    if isinstance(user.get("username"), str) and isinstance(user.get("password"), str):
        resolved["username"], resolved["password"] = user["username"], user["password"]
    if not resolved:
        raise _invalid("the kubeconfig's user has no token or client certificate")
    return ResolvedKubeconfig(server=server, ca_pem=ca_pem, user=resolved, context=ctx_name)
