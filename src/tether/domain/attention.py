"""What needs a person's attention, and how a site's network looks, from what the plane knows.

Pure: the caller passes the hosts and rollouts (as the API shows them) and the clock's
reading. Something **needs attention** when it will not get better by itself:

* a host whose last plan **failed** (``status.plan.state == Failed``): a join, an
  update or a leave its agent could not apply;
* a host **Unhealthy** (failing checks) or **Unreachable** (heartbeats missed);
* a host whose **Node is not Ready** (NotReady or Unknown) while no operation of its
  pool has it down on purpose (a drain, an upgrade, a reboot: those are expected);
* a rollout that **failed**, or that is **stuck**: Progressing, moving no node, and
  waiting (for a spare host, for availability) unchanged for :data:`STUCK_AFTER`.

A site's tunnel and BGP health come from its hosts' agent checks whose name starts with
``tunnel``, ``ipsec`` or ``vpn`` (tunnels) or ``bgp`` (BGP sessions): heartbeats carry
failing checks only, so the plane knows of a failure, or that none is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from pydantic import Field

from tether.domain import resources as r
from tether.domain.base import Model
from tether.domain.models import NetworkHealth, ObjectKind, SiteStatus
from tether.domain.rollout import RolloutState
from tether.domain.states import HostState

__all__ = [
    "NETWORK_CHECKS",
    "STUCK_AFTER",
    "Attention",
    "AttentionItem",
    "needs_attention",
    "site_status",
]

#: A Progressing rollout waiting this long without a change is stuck.
STUCK_AFTER = timedelta(minutes=10)

#: Check name prefixes (lower case) of each kind of site network health.
NETWORK_CHECKS = {"tunnel": ("tunnel", "ipsec", "vpn"), "bgp": ("bgp",)}


class AttentionItem(Model):
    kind: ObjectKind
    name: str
    reason: str
    message: str
    pool: str | None = None
    site: str | None = None
    since: datetime | None = None


class Attention(Model):
    count: int = Field(description="How many items need attention.")
    items: list[AttentionItem]


def _host_items(host: r.Host) -> Iterable[AttentionItem]:
    status = host.status
    where = {"pool": host.spec.pool, "site": host.spec.site}
    if status.plan is not None and status.plan.state == "Failed":
        operation = status.member.operation if status.member is not None else None
        yield AttentionItem(
            kind=ObjectKind.HOST,
            name=host.name,
            reason="PlanFailed",
            message=f"{operation or 'its'} plan failed: {status.plan.message}",
            since=status.plan.applied_at,
            **where,
        )
    if status.state in (HostState.UNHEALTHY, HostState.UNREACHABLE):
        checks = "; ".join(f"{k}: {v}" for k, v in sorted(status.failing_checks.items()))
        message = (
            f"failing checks: {checks}"
            if status.state is HostState.UNHEALTHY and checks
            else f"no heartbeat since {status.last_heartbeat or 'enrolment'}"
            if status.state is HostState.UNREACHABLE
            else "its agent reports failing checks"
        )
        yield AttentionItem(
            kind=ObjectKind.HOST,
            name=host.name,
            reason=f"Host{status.state.value}",
            message=message,
            since=status.last_heartbeat,
            **where,
        )
    node, member = status.node, status.member
    # An operation under way (not failed) takes the Node down on purpose.
    busy = member is not None and member.operation is not None and member.failed is None
    if node is not None and node.ready is not True and not busy:
        yield AttentionItem(
            kind=ObjectKind.HOST,
            name=host.name,
            reason="NodeNotReady",
            message=f"Node {'NotReady' if node.ready is False else 'Unknown'}"
            + (f": {node.reason}" if node.reason else ""),
            since=node.observed_at,
            **where,
        )


def _rollout_item(
    rollout: r.Rollout, now: datetime, stuck_after: timedelta
) -> AttentionItem | None:
    progress = rollout.progress
    if rollout.state == RolloutState.FAILED:
        reason, message = "RolloutFailed", rollout.message or "the rollout failed"
    elif (
        rollout.state == RolloutState.PROGRESSING
        and progress.get("waiting")
        and not progress.get("busy")
        and rollout.updated_at is not None
        and now - rollout.updated_at >= stuck_after
    ):
        minutes = int((now - rollout.updated_at).total_seconds() // 60)
        reason = "RolloutStuck"
        message = (
            f"{progress.get('updated', 0)}/{progress.get('total', 0)} updated; "
            f"{progress['waiting']} for {minutes} min"
        )
    else:
        return None
    return AttentionItem(
        kind=ObjectKind.ROLLOUT,
        name=rollout.name,
        reason=reason,
        message=message,
        pool=rollout.pool,
        since=rollout.updated_at or rollout.finished_at,
    )


def needs_attention(
    hosts: Iterable[r.Host],
    rollouts: Iterable[r.Rollout],
    now: datetime,
    stuck_after: timedelta = STUCK_AFTER,
) -> Attention:
    """Everything that needs attention (module doc), hosts by name, then rollouts."""
    items = [i for h in sorted(hosts, key=lambda h: h.name) for i in _host_items(h)]
    for rollout in sorted(rollouts, key=lambda x: x.name):
        item = _rollout_item(rollout, now, stuck_after)
        if item is not None:
            items.append(item)
    return Attention(count=len(items), items=items)


#: Host states only a heartbeat leads to: a site with hosts in them is heard from.
_HEARD = frozenset({HostState.READY, HostState.IN_USE, HostState.UNHEALTHY})


def _network(kind: str, failing: Mapping[str, Mapping[str, str]], heard: bool) -> NetworkHealth:
    prefixes = NETWORK_CHECKS[kind]
    hosts = {
        host: f"{check}: {message}"
        for host, checks in sorted(failing.items())
        for check, message in sorted(checks.items())
        if check.lower().startswith(prefixes)
    }
    if hosts:
        return NetworkHealth(status="Failing", hosts=hosts)
    return NetworkHealth(status="NoFailuresReported" if heard else "Unknown")


def site_status(
    states: Mapping[str, int], failing: Mapping[str, Mapping[str, str]], pools: Iterable[str]
) -> SiteStatus:
    """A site from its hosts' count by state, their failing checks (host: check: message)
    and its pools: the counts, and its tunnel and BGP health (module doc)."""
    heard = any(states.get(state.value, 0) for state in _HEARD)
    return SiteStatus(
        hosts=dict(sorted((k, v) for k, v in states.items() if v)),
        pools=sorted(pools),
        tunnel=_network("tunnel", failing, heard),
        bgp=_network("bgp", failing, heard),
    )
