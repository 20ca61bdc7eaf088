"""``tether node init`` credentials against a real plane and a real kube-apiserver.

The plane (people's API + mutual-TLS agent server, SQLite and PostgreSQL) imports a real
control plane into its own data dir, so the agent route ``POST
/agent/v1/hosts/{name}/bootstrap-token`` mints with the stored cluster credentials. Hosts
enrol with real agent processes (``x509``) or through ``token_source`` itself
(``activation``).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.core_v1 import Node, Secret

from tether.agent.identity import Identity
from tether.agent.runner import enrol_identity
from tether.domain import resources as r
from tether.domain.nodeidentity import BOOTSTRAP_GROUP, host_bootstrap_group
from tether.domain.states import HostEvent
from tether.kube.client import KubeClient
from tether.node.credentials import token_source
from tether.node.nodeconfig import parse_node_config
from tether.node.phases import PhaseRefused
from tether.services import resources as svc
from tether.services.nodeidentity import HOST_LABEL
from tether.sim.envtest import LocalControlPlane

from .conftest import (
    Plane,
    assign,
    enrol,
    enrolled_in_pool,
    host_events,
    import_cluster,
    make_pool,
    node_config,
    ready,
    stop,
    unique,
    x509_credentials,
)

pytestmark = pytest.mark.integration

TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


def token_secret(kube: KubeClient, token: str) -> tuple[Secret, dict[str, str]]:
    match = TOKEN.match(token)
    assert match, "not a bootstrap token: id.secret"
    secret = kube.get(Secret, f"bootstrap-token-{match.group(1)}", namespace="kube-system")
    data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    return secret, data


def registrations(plane: Plane, activation: str) -> int:
    view = plane.api.get(f"/api/v1/activations/{activation}").json()
    return int(view["registrations"])


def test_x509_credentials_mint_a_token_for_the_enrolled_host(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    kube: KubeClient,
    node_config_doc: Callable[..., dict[str, Any]],
) -> None:
    cluster, host, state = enrolled_in_pool(plane, kube_cluster)
    config = parse_node_config(
        node_config(node_config_doc, kube_cluster, cluster, host, x509_credentials(plane, state))
    )

    token = token_source(config)()

    match = TOKEN.match(token)
    assert match is not None, token
    token_id, secret_part = match.groups()
    secret, data = token_secret(kube, token)
    assert secret.type == "bootstrap.kubernetes.io/token"
    assert secret.metadata is not None and secret.metadata.labels is not None
    assert secret.metadata.labels[HOST_LABEL] == host
    assert (data["token-id"], data["token-secret"]) == (token_id, secret_part)
    assert data["auth-extra-groups"].split(",") == [BOOTSTRAP_GROUP, host_bootstrap_group(host)]
    assert host in host_bootstrap_group(host)

    minted = [e for e in host_events(plane, host) if e["reason"] == "BootstrapTokenMinted"]
    assert len(minted) == 1
    assert token_id in minted[0]["message"] and cluster in minted[0]["message"]
    assert secret_part not in json.dumps(minted)
    logged = "\n".join(plane.capture.lines)  # type: ignore[attr-defined]
    assert secret_part not in logged

    # Each call mints a fresh token.
    again = token_source(config)()
    assert TOKEN.match(again) and again != token


def test_a_host_certificate_mints_only_for_its_own_pooled_host(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    kube: KubeClient,
    node_config_doc: Callable[..., dict[str, Any]],
) -> None:
    cluster = import_cluster(plane, kube_cluster)
    pool = make_pool(plane, cluster)
    host, other = unique("edge"), unique("edge")
    state = enrol(plane, host)
    stop(plane.processes[-1])
    ident = Identity(state)
    mine = plane.client(ident.cert_path, ident.key_path)

    # Enrolled but in no pool: a clear refusal naming the pool, not a server error.
    refused = mine.post(f"/agent/v1/hosts/{host}/bootstrap-token")
    assert 400 <= refused.status_code < 500, refused.text
    body = refused.json()
    assert "pool" in body["message"] and body["field"] == "spec.pool", body
    config = parse_node_config(
        node_config(node_config_doc, kube_cluster, cluster, host, x509_credentials(plane, state))
    )
    with pytest.raises(PhaseRefused, match=r"not in a pool.*\[assigned\]"):  # permanent
        token_source(config)()

    # Another host, Ready and in the pool: mintable, but not with this host's certificate.
    with plane.db.session() as s:
        svc.create_host(s, r.HostCreate.model_validate({"name": other, "spec": {"site": "dc1"}}))
        svc.transition_host(s, other, HostEvent.CHECKS_PASSED)
    assign(plane, other, pool)
    forbidden = mine.post(f"/agent/v1/hosts/{other}/bootstrap-token")
    assert forbidden.status_code == 403, forbidden.text
    assert forbidden.json()["rule"] == "agent.own_host_only"

    anonymous = plane.client(None, None).post(f"/agent/v1/hosts/{other}/bootstrap-token")
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["rule"] == "agent.client_cert_required"

    # None of the refusals minted anything.
    for name in (host, other):
        assert not [e for e in host_events(plane, name) if e["reason"] == "BootstrapTokenMinted"]
        assert not list(kube.list(Secret, namespace="kube-system", labels={HOST_LABEL: name}))


def test_activation_credentials_enrol_once_then_mint(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    kube: KubeClient,
    node_config_doc: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    cluster = import_cluster(plane, kube_cluster)
    pool = make_pool(plane, cluster)
    host = unique("edge")
    act = plane.activation()
    code_file = tmp_path / "activation-code"
    code_file.write_text(act.code + "\n")
    state = tmp_path / "node-agent-state"
    credentials = {
        "activation": {
            "id": act.id,
            "codeFile": str(code_file),
            "planeEndpoint": plane.server.agent_url,
            "caPath": str(plane.server.ca_bundle),
            "stateDir": str(state),
        }
    }
    config = parse_node_config(
        node_config(node_config_doc, kube_cluster, cluster, host, credentials)
    )
    mint = token_source(config, enrol_identity)

    # A fresh host enrols, but is in no pool yet: nothing to join, said clearly.
    with pytest.raises(PhaseRefused, match="not in a pool"):
        mint()
    ident = Identity(state)
    assert ident.enrolled()
    assert all(p.is_file() for p in (ident.cert_path, ident.key_path, ident.ca_path))
    assert plane.host(host).spec.site == "dc1"
    assert registrations(plane, act.id) == 1

    # The agent (same state dir, no activation) brings it to Ready; an operator assigns it.
    plane.start_agent(plane.agent_config(host, None, stateDir=str(state)))
    ready(plane, host)
    assign(plane, host, pool)
    stop(plane.processes[-1])

    token = mint()
    _, data = token_secret(kube, token)
    assert host_bootstrap_group(host) in data["auth-extra-groups"].split(",")
    again = token_source(config, enrol_identity)()
    assert TOKEN.match(again) and again != token
    assert registrations(plane, act.id) == 1
    enrolled = [e for e in host_events(plane, host) if e["reason"] == "Enrolled"]
    assert len(enrolled) == 1


def test_node_init_with_x509_credentials_joins_the_node(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    kube: KubeClient,
    node_config_doc: Callable[..., dict[str, Any]],
    cli_installed: Path,
    tmp_path: Path,
    run_tether: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    tether = run_tether
    cluster, host, state = enrolled_in_pool(plane, kube_cluster)
    root = cli_installed
    config = tmp_path / "nodeconfig.yaml"
    doc = node_config(node_config_doc, kube_cluster, cluster, host, x509_credentials(plane, state))
    config.write_text(yaml.safe_dump(doc))

    joined = tether(
        "node",
        "init",
        "-c",
        f"file://{config}",
        "--root",
        str(root),
        "--simulate-kubelet",
        str(kube_cluster.kubeconfig),
        "-o",
        "json",
    )
    assert joined.returncode == 0, joined.stdout + joined.stderr
    report = json.loads(joined.stdout)
    assert all(p["status"] == "Completed" for p in report["phases"]), report

    node = kube.get(Node, host)
    assert node.spec is not None and node.spec.providerID == f"tether://{cluster}/{host}"
    conditions = {c.type: c.status for c in (node.status.conditions if node.status else None) or []}
    assert conditions.get("Ready") == "True"
    secrets = list(kube.list(Secret, namespace="kube-system", labels={HOST_LABEL: host}))
    assert len(secrets) == 1
    secret_part = base64.b64decode((secrets[0].data or {})["token-secret"]).decode()
    assert secret_part not in joined.stdout + joined.stderr
    assert [e for e in host_events(plane, host) if e["reason"] == "BootstrapTokenMinted"]
