"""Fixtures: one real etcd + kube-apiserver for the whole test session.

The binaries come from ``scripts/build-kube.sh`` (cached outside the repo). Without
them the tests skip, saying why, except under CI (``CI=true``), where a missing
control plane is a failure: CI must build it first.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Namespace, Pod
from sqlalchemy import select

from tether.api.app import create_app
from tether.domain import resources as r
from tether.domain.kubeapi import BootstrapTokenGrant, ImportRequest, ImportResult
from tether.domain.models import ObjectKind
from tether.domain.states import HostEvent
from tether.kube.client import KubeClient
from tether.services import events as events_svc
from tether.services import kubeimport, tokens
from tether.services import resources as svc
from tether.services.kubeconn import open_cluster
from tether.services.nodeidentity import mint_bootstrap_token
from tether.settings import Settings
from tether.sim.envtest import BinariesNotFoundError, LocalControlPlane, find_network_crds
from tether.store.db import Database, migrate
from tether.store.schema import HostRow

from ...conftest import wait_until


@pytest.fixture(scope="session")
def network_crds(kube_cluster: LocalControlPlane) -> list[str]:
    """The upstream Cilium and Calico CRDs (``scripts/fetch-crds.sh``), installed in the
    session's API server and Established; their names. Missing: skip, or fail under CI."""
    try:
        files = find_network_crds()
    except BinariesNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no CRDs: {exc}", pytrace=False)
        pytest.skip(str(exc))
    names = []
    served = []  # (apiVersion, plural) of each
    with KubeClient(kube_cluster.kubeconfig) as admin:
        for path in files:
            crd = yaml.safe_load(path.read_text())
            crd.pop("status", None)
            admin.apply_object("customresourcedefinitions", crd, force=True)
            names.append(crd["metadata"]["name"])
            version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
            served.append((f"{crd['spec']['group']}/{version}", crd["spec"]["names"]["plural"]))

        def established() -> bool:
            crds = admin.list_objects("apiextensions.k8s.io/v1", "customresourcedefinitions")
            ready = {
                crd["metadata"]["name"]
                for crd in crds
                for c in crd.get("status", {}).get("conditions", [])
                if c["type"] == "Established" and c["status"] == "True"
            }
            assert set(names) <= ready, sorted(set(names) - ready)
            for api_version, plural in served:  # storage ready: no 429 "initializing"
                admin.list_objects(api_version, plural)
            return True

        wait_until(established)
    return names


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("ns")`` -> ``"ns-1a2b3c4d"``: tests share one API server."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """``wait_for(check, timeout=30.0)``: poll *check* until it is true; after *timeout*,
    fail with the last error *check* raised (see ``tests/conftest.py``'s ``wait_until``)."""
    return wait_until


@pytest.fixture
def namespace(kube: KubeClient, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    name = unique_name("ns")
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    kube.delete(Namespace, name, missing_ok=True)


KubeconfigWriter = Callable[[Path, str, dict[str, str], "bytes | None"], Path]


def _write_kubeconfig(path: Path, server: str, user: dict[str, str], ca_pem: bytes | None) -> Path:
    cluster: dict[str, object] = {"server": server}
    if ca_pem is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def write_kubeconfig() -> KubeconfigWriter:
    """``write_kubeconfig(path, server, user, ca_pem)``: a one-context kubeconfig.

    *user* is the kubeconfig ``user`` mapping (e.g. ``{"token": ...}``); *ca_pem*
    ``None`` means ``insecure-skip-tls-verify``. Test modules cannot import from a
    conftest under ``--import-mode=importlib``, hence a fixture.
    """
    return _write_kubeconfig


# --- the plane: a SQLite store, a data dir, imported clusters, pools and hosts ------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite store (the Kubernetes tests need only one backend)."""
    db = Database.connect(f"sqlite:///{tmp_path / 'tether.db'}")
    migrate(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def api(store: Database, data_dir: Path) -> Iterator[TestClient]:
    """The plane's REST API on :func:`store` and :func:`data_dir`, without credentials."""
    settings = Settings()
    settings.paths.data_dir = data_dir
    with TestClient(create_app(settings, store)) as client:
        yield client


@pytest.fixture
def auth(store: Database) -> Callable[[r.Role], dict[str, str]]:
    """``auth(Role.OPERATOR)``: an Authorization header with a fresh token of that role."""

    def headers(role: r.Role) -> dict[str, str]:
        with store.session() as s:
            issued = tokens.issue(s, r.TokenCreate(name=role.value, role=role), default_ttl_days=1)
        return {"Authorization": f"Bearer {issued.token}"}

    return headers


class Plane:
    """Test helper: import clusters and make sites, pools and hosts in the store."""

    def __init__(self, db: Database, data_dir: Path, cp: LocalControlPlane) -> None:
        self.db = db
        self.data_dir = data_dir
        self.cp = cp

    def import_cluster(self, name: str, **spec: object) -> ImportResult:
        body = ImportRequest(
            kubeconfig=self.cp.kubeconfig.read_text(),
            spec={
                "vpcCIDR": "10.226.0.0/16",
                "remoteNodeNetworks": ["10.80.0.0/16"],
                "remotePodNetworks": ["10.85.0.0/16"],
                **spec,
            },
        )
        with self.db.session() as s:
            return kubeimport.import_cluster(s, name, body, data_dir=self.data_dir)

    def client(self, cluster: str) -> KubeClient:
        """A client with the credentials Tether stored for *cluster* (its service account)."""
        return open_cluster(self.data_dir, cluster)

    def pool(
        self,
        cluster: str,
        pool: str,
        hosts: dict[str, dict[str, object]] | list[str],
        *,
        site: str | None = None,
        spare: tuple[str, ...] = (),
        spec: dict[str, object] | None = None,
    ) -> None:
        """Site + pool in *cluster*; *hosts* (name -> inventory) Ready and assigned to it.

        *spare* hosts are made Ready in the same site but not assigned; *spec* adds to
        (or replaces fields of) the pool's spec.
        """
        site = site or f"{pool}-site"
        inventories = hosts if isinstance(hosts, dict) else {h: {} for h in hosts}
        with self.db.session() as s:
            svc.create_site(s, r.SiteCreate(name=site))
            svc.create_pool(
                s,
                r.PoolCreate.model_validate(
                    {
                        "name": pool,
                        "spec": {
                            "cluster": cluster,
                            "site": site,
                            "nodeCIDR": "10.80.1.0/24",
                            "podCIDR": "10.85.0.0/18",
                            "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
                            **(spec or {}),
                        },
                    }
                ),
            )
            for name in [*inventories, *spare]:
                svc.create_host(
                    s, r.HostCreate.model_validate({"name": name, "spec": {"site": site}})
                )
                svc.transition_host(s, name, HostEvent.CHECKS_PASSED)
                row = s.scalars(select(HostRow).where(HostRow.name == name)).one()
                row.inventory = dict(inventories.get(name, {}))
            s.flush()
            for name in inventories:
                host = svc.get_host(s, name)
                svc.update_host(
                    s,
                    name,
                    r.HostUpdate.model_validate(
                        {
                            "resourceVersion": host.resource_version,
                            "spec": {"site": site, "pool": pool},
                        }
                    ),
                )

    def events(self, kind: str | None = None, name: str | None = None) -> list[r.Event]:
        with self.db.session() as s:
            items, _ = events_svc.list_events(
                s,
                kind=ObjectKind(kind) if kind else None,
                name=name,
                limit=1000,
                continue_token=None,
            )
        return items


@pytest.fixture
def plane(store: Database, data_dir: Path, kube_cluster: LocalControlPlane) -> Plane:
    return Plane(store, data_dir, kube_cluster)


def _replicaset_pod(kube: KubeClient, name: str, namespace: str, node: str) -> Pod:
    """A Pod bound to ``node`` and owned by a ReplicaSet (so a drain would evict it)."""
    owner = OwnerReference(
        apiVersion="apps/v1",
        kind="ReplicaSet",
        name="web",
        uid="6d0c1a4e-0000-4000-8000-000000000001",
        controller=True,
    )
    return kube.create(
        Pod(
            metadata=ObjectMeta(name=name, ownerReferences=[owner]),
            spec=PodSpec(nodeName=node, containers=[Container(name="c", image="x/y:1")]),
        ),
        namespace=namespace,
    )


@pytest.fixture
def replicaset_pod() -> Callable[[KubeClient, str, str, str], Pod]:
    """``replicaset_pod(kube, name, namespace, node)``: create a ReplicaSet-owned Pod."""
    return _replicaset_pod


@dataclass(frozen=True)
class Joining:
    """A host ready to join: its cluster imported, the host in a pool, a bootstrap token
    minted, and a NodeConfig whose credentials are that token's file."""

    cluster: str
    host: str
    grant: BootstrapTokenGrant
    node_config: dict[str, Any]


@pytest.fixture
def joining(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    node_config_doc: Callable[..., dict[str, Any]],
) -> Callable[[str], Joining]:
    """``joining(prefix)``: a :class:`Joining` in a new cluster named after ``prefix``."""

    def make(prefix: str) -> Joining:
        cluster = unique_name(prefix)
        plane.import_cluster(cluster)
        host = unique_name("edge")
        plane.pool(cluster, f"{cluster}-p", [host])
        with plane.client(cluster) as client, plane.db.session() as s:
            grant = mint_bootstrap_token(s, host, client=client)
        token_file = tmp_path / f"{host}-token"
        token_file.write_text(grant.token + "\n")
        doc = node_config_doc(name=host, ip="127.0.0.1", nodeCIDR="127.0.0.0/24", labels={})
        doc["spec"]["cluster"].update(
            name=cluster,
            apiServerEndpoint=kube_cluster.url,
            certificateAuthority=kube_cluster.ca_cert_pem.decode(),
        )
        doc["spec"]["credentials"] = {"bootstrapToken": {"tokenFile": str(token_file)}}
        return Joining(cluster, host, grant, doc)

    return make
