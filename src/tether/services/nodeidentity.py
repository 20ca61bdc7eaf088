"""Node identity: bootstrap tokens for joining hosts, and the facts the CSR approver needs.

A bootstrap token is a standard ``bootstrap.kubernetes.io/token`` Secret in
``kube-system`` (what ``kubeadm token create`` makes): a random 6-character id and
16-character secret, an ``expiration``, ``usage-bootstrap-authentication``, and
``auth-extra-groups`` = :data:`~tether.domain.nodeidentity.BOOTSTRAP_GROUP` plus the
host's own group, so every CSR made with the token names its host. Tokens are short-lived
(1 h by default) and never read back: the plane's role in ``kube-system`` may create and
delete Secrets but not read them.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.kubeapi import BootstrapTokenGrant
from tether.domain.models import ObjectKind
from tether.domain.nodeidentity import (
    BOOTSTRAP_GROUP,
    HostIdentity,
    host_addresses,
    host_bootstrap_group,
    host_hostnames,
)
from tether.errors import Invalid
from tether.kube.client import KubeClient
from tether.kube.errors import KubeError
from tether.kube.resources import ObjectMeta, Secret
from tether.services import events
from tether.services import resources as svc
from tether.services.kubeconn import from_kube_error
from tether.store.schema import HostRow, PoolRow, utcnow

__all__ = [
    "HOST_LABEL",
    "bootstrap_token_secret",
    "host_identities",
    "mint_bootstrap_token",
    "revoke_bootstrap_token",
]

#: Label on each bootstrap-token Secret naming the host it was minted for.
HOST_LABEL = "tether.io/host"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def bootstrap_token_secret(
    host: str, token_id: str, token_secret: str, expiration: datetime
) -> Secret:
    """The ``bootstrap-token-<id>`` Secret for *host* (format: the module doc)."""
    return Secret(
        metadata=ObjectMeta(
            name=f"bootstrap-token-{token_id}",
            namespace="kube-system",
            labels={HOST_LABEL: host, "app.kubernetes.io/managed-by": "tether"},
        ),
        type="bootstrap.kubernetes.io/token",
        stringData={
            "description": f"Tether: join token for host {host}",
            "token-id": token_id,
            "token-secret": token_secret,
            "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": f"{BOOTSTRAP_GROUP},{host_bootstrap_group(host)}",
        },
    )


def _random(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def mint_bootstrap_token(
    session: Session,
    host: str,
    *,
    client: KubeClient,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> BootstrapTokenGrant:
    """Mint a join token for *host*, which must be assigned to a pool of the client's cluster.

    The grant is the only place the secret appears; the event names only the token id.
    """
    view = svc.get_host(session, host)  # NotFound if unknown
    if view.spec.pool is None:
        raise Invalid(
            f"host {host!r} is not assigned to a pool, so it has no cluster to join",
            field="spec.pool",
            rule="assigned",
        )
    cluster = svc.get_cluster(session, svc.get_pool(session, view.spec.pool).spec.cluster)
    expiration = (now or utcnow()) + ttl
    token_id, token_secret = _random(6), _random(16)
    try:
        client.create(bootstrap_token_secret(view.name, token_id, token_secret, expiration))
    except KubeError as exc:
        raise from_kube_error(exc, f"creating a bootstrap token for host {host}") from exc
    events.record(
        session,
        ObjectKind.HOST,
        host,
        "BootstrapTokenMinted",
        f"bootstrap token {token_id} for cluster {cluster.name}, expires "
        f"{expiration:%Y-%m-%d %H:%M:%S} UTC",
    )
    return BootstrapTokenGrant(
        host=host,
        cluster=cluster.name,
        token_id=token_id,
        token=f"{token_id}.{token_secret}",
        expiration=expiration,
        api_endpoint=cluster.spec.api_endpoint,
        ca_bundle=cluster.spec.ca_bundle,
    )


def revoke_bootstrap_token(client: KubeClient, token_id: str) -> None:
    """Delete a bootstrap token (idempotent)."""
    client.delete(Secret, f"bootstrap-token-{token_id}", namespace="kube-system", missing_ok=True)


def host_identities(session: Session) -> dict[str, HostIdentity]:
    """Every registered host with its pool's cluster, addresses and hostnames."""
    rows = session.execute(select(PoolRow.name, PoolRow.cluster)).all()
    clusters: Mapping[str, str] = {row[0]: row[1] for row in rows}
    identities = {}
    for row in session.scalars(select(HostRow)):
        inventory = row.inventory or {}
        identities[row.name] = HostIdentity(
            name=row.name,
            cluster=clusters.get(row.pool) if row.pool else None,
            pool=row.pool,
            addresses=host_addresses(inventory),
            hostnames=host_hostnames(inventory),
        )
    return identities
