"""Profile versions: reading them, checking that they render a valid node, and diffs.

A profile version (and a pool that uses one) is checked before anything is stored: its
layers are rendered with the variables' values into a node target for a sample host,
and the resulting NodeConfig goes through the node tool's own rules
(:func:`tether.node.nodeconfig.parse_node_config`). A problem is refused with the field
of the profile (or pool) it comes from and the rule it breaks, so a broken profile never
reaches a host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.models import (
    Change,
    ClusterSpec,
    HostSpec,
    PoolSpec,
    ProfileRef,
    ProfileSpec,
    semver_key,
)
from tether.domain.nodeplan import NodeTarget, TargetError, node_config, node_target
from tether.domain.profiles import (
    Action,
    Problem,
    check_defaults,
    diff,
    sample_values,
    sensitive_values,
    strongest,
)
from tether.domain.resources import ProfileDiff
from tether.errors import Invalid
from tether.node.nodeconfig import NodeConfigError, parse_node_config
from tether.store.repo import get_by
from tether.store.schema import ProfileRow

__all__ = [
    "HostVersion",
    "TargetInputs",
    "check_pool",
    "check_profile",
    "diff_versions",
    "host_target",
    "latest_versions",
    "load_profile",
    "sample_target",
    "target_cached",
    "target_key",
]

#: A NodeConfig field and the profile or pool field it is rendered from.
_SOURCES: Final = (
    ("spec.kubelet.config", "spec.layers.kubernetes.kubeletConfig"),
    ("spec.kubelet.flags", "spec.layers.kubernetes.kubeletExtraArgs"),
    ("spec.containerd.config", "spec.layers.kubernetes.containerdConfig"),
    ("spec.os", "spec.layers.os"),
    ("spec.node.labels", "spec.nodeLabels"),
    ("spec.node.ip", "spec.nodeCIDR"),
    ("spec.node.nodeCIDR", "spec.nodeCIDR"),
    ("spec.cluster", "spec.cluster"),
)
_SAMPLE_CA = "-----BEGIN CERTIFICATE-----\nc2FtcGxl\n-----END CERTIFICATE-----\n"


def target_key(
    cluster_name: str, cluster: ClusterSpec, pool: PoolSpec, profile: ProfileSpec | None
) -> str:
    """A digest of everything pool-wide that decides the nodes: when it changes, the
    members need a rollout (see :mod:`tether.domain.rollout`)."""
    parts = {
        "cluster": [
            cluster_name,
            cluster.api_endpoint,
            cluster.ca_bundle,
            str(cluster.service_cidr),
            cluster.eks_compute_type_label,
        ],
        "pool": pool.model_dump(
            mode="json",
            by_alias=True,
            include={"site", "node_cidr", "variables", "node_labels", "node_taints"},
        ),
        "profile": profile.model_dump(mode="json", by_alias=True) if profile else None,
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class TargetInputs(NamedTuple):
    """What every host of a pool shares in its node target, and its digest
    (:func:`target_key`)."""

    key: str
    cluster_name: str
    cluster: ClusterSpec
    pool_name: str
    pool: PoolSpec
    profile: ProfileSpec


#: A host row's version: its ``resource_version`` and when the row was made (a host
#: deleted and enrolled again under its name starts again at version 1).
HostVersion = tuple[int, datetime]

#: Node targets by (pool target key, host, host version): a host's target changes only
#: with the pool's inputs or with the host (its spec, or its inventory on re-enrolment,
#: both of which bump its version), and computing it is most of a reconcile's CPU. Shared
#: by rollout creation and the pool reconciler, so the targets a new rollout computes to
#: list its nodes' actions are the ones its first reconcile after approval uses.
_TARGETS: dict[tuple[str, str, HostVersion], tuple[NodeTarget | None, str | None]] = {}


def host_target(
    inputs: TargetInputs,
    name: str,
    version: HostVersion,
    spec: Mapping[str, Any],
    inventory: Callable[[str], Mapping[str, Any]],
) -> tuple[NodeTarget | None, str | None]:
    """Host ``name``'s node target (at its ``version``, with its ``spec``) or why it has
    none; ``inventory`` is asked only when the target is not cached."""
    cache = (inputs.key, name, version)
    found = _TARGETS.get(cache)
    if found is not None:
        return found
    try:
        result: tuple[NodeTarget | None, str | None] = (
            node_target(
                cluster_name=inputs.cluster_name,
                cluster=inputs.cluster,
                pool_name=inputs.pool_name,
                pool=inputs.pool,
                host_name=name,
                host=HostSpec.model_validate(spec),
                inventory=inventory(name),
                profile=inputs.profile,
            ),
            None,
        )
    except TargetError as exc:
        result = (None, str(exc))
    if len(_TARGETS) > 100_000:
        _TARGETS.clear()
    _TARGETS[cache] = result
    return result


def target_cached(inputs: TargetInputs, name: str, version: HostVersion) -> bool:
    """Whether :func:`host_target` knows this host's target without computing it."""
    return (inputs.key, name, version) in _TARGETS


def profile_row(session: Session, name: str, version: str) -> ProfileRow:
    """The row of one profile version; :class:`~tether.errors.NotFound` naming it."""
    return get_by(
        session,
        ProfileRow,
        "profile version",
        f"{name}@{version}",
        ProfileRow.name == name,
        ProfileRow.version == version,
    )


def load_profile(session: Session, ref: ProfileRef) -> ProfileSpec | None:
    row = session.scalars(
        select(ProfileRow).where(ProfileRow.name == ref.name, ProfileRow.version == ref.version)
    ).one_or_none()
    return ProfileSpec.model_validate(row.spec) if row is not None else None


def latest_versions(session: Session, names: Sequence[str]) -> dict[str, str]:
    """The highest semantic version of each named profile."""
    if not names:
        return {}
    rows = session.execute(
        select(ProfileRow.name, ProfileRow.version).where(ProfileRow.name.in_(set(names)))
    ).all()
    latest: dict[str, str] = {}
    for name, version in rows:
        if name not in latest or semver_key(version) > semver_key(latest[name]):
            latest[name] = version
    return latest


def _source(field: str) -> str:
    for prefix, source in _SOURCES:
        if field == prefix or field.startswith(prefix + "."):
            return source + field[len(prefix) :]
    return field


def _refuse(problems: Sequence[Problem], what: str) -> Invalid:
    first = problems[0]
    return Invalid(
        f"{what} renders an invalid node: "
        + "; ".join(f"{p.field}: {p.message}" for p in problems),
        field=first.field,
        rule="renders_valid_node",
        details=[
            {"field": p.field, "rule": "renders_valid_node", "message": p.message} for p in problems
        ],
    )


def sample_target(
    cluster_name: str, cluster: ClusterSpec, pool_name: str, pool: PoolSpec, profile: ProfileSpec
) -> NodeTarget:
    """The target of a sample host of ``pool`` (its node CIDR's first address); a cluster
    not imported yet gets a placeholder endpoint and CA. Raises :class:`TargetError`."""
    cluster = cluster.model_copy(
        update={
            "api_endpoint": cluster.api_endpoint or "https://cluster.invalid:443",
            "ca_bundle": cluster.ca_bundle or _SAMPLE_CA,
        }
    )
    first = next(pool.node_cidr.hosts(), pool.node_cidr.network_address)
    host = HostSpec(site=pool.site, node_ip=ipaddress.IPv4Address(first))
    return node_target(
        cluster_name=cluster_name,
        cluster=cluster,
        pool_name=pool_name,
        pool=pool,
        host_name="sample-host",
        host=host,
        inventory={},
        profile=profile,
    )


def _node_problems(target: NodeTarget) -> list[Problem]:
    doc = node_config(target)
    doc["spec"]["credentials"] = {"bootstrapToken": {"tokenFile": "/etc/tether/token"}}
    try:
        parse_node_config(doc)
    except NodeConfigError as exc:
        return [Problem(_source(p.field), p.message) for p in exc.problems]
    return []


def check_profile(spec: ProfileSpec) -> None:
    """Refuse a profile version whose defaults or layers cannot render a valid node."""
    problems = check_defaults(spec.variables)
    if not problems:
        sample_pool = PoolSpec.model_validate(
            {
                "cluster": "sample",
                "site": "sample",
                "nodeCIDR": "10.0.0.0/24",
                "podCIDR": "10.1.0.0/16",
                "vpnServer": {"publicIP": "192.0.2.1", "insideIP": "10.0.0.254"},
                "variables": sample_values(spec.variables),
            }
        )
        cluster = ClusterSpec.model_validate(
            {
                "kubernetesVersion": spec.layers.kubernetes.version,
                "vpcCIDR": "10.200.0.0/16",
                "serviceCIDR": "172.20.0.0/16",
            }
        )
        try:
            problems = _node_problems(sample_target("sample", cluster, "sample", sample_pool, spec))
        except TargetError as exc:
            problems = exc.problems
    if problems:
        raise _refuse(problems, f"profile version {spec.version}")


def check_pool(
    cluster_name: str, cluster: ClusterSpec, pool_name: str, pool: PoolSpec, profile: ProfileSpec
) -> None:
    """Refuse a pool whose variable values, labels or taints render an invalid node."""
    try:
        problems = _node_problems(sample_target(cluster_name, cluster, pool_name, pool, profile))
    except TargetError as exc:
        problems = [p for p in exc.problems if not p.field.startswith(("cluster.", "host."))]
    if problems:
        raise _refuse(problems, f"pool {pool_name}")


def _layers(spec: ProfileSpec) -> dict[str, Any]:
    doc = spec.model_dump(mode="json", by_alias=True, exclude={"version"})
    layers = doc.pop("layers")
    return {**layers, **doc}


def diff_versions(session: Session, name: str, old: str, new: str) -> ProfileDiff:
    """Every changed field of profile ``name`` from ``old`` to ``new`` and its action
    (sensitive variables' defaults shown as ``******``)."""
    before, after = (
        ProfileSpec.model_validate(profile_row(session, name, v).spec) for v in (old, new)
    )
    changes = diff(_layers(before), _layers(after))
    secrets = [
        *sensitive_values(before.variables, {}),
        *sensitive_values(after.variables, {}),
    ]
    return ProfileDiff(
        name=name,
        from_version=old,
        to_version=new,
        action=strongest(changes).value if changes else Action.NONE.value,
        changes=[Change.model_validate(c.as_dict(secrets)) for c in changes],
    )
