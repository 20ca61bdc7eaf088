"""Node plans from the plane: the ``node`` part of a host's desired-state document.

::

    {"node": {"action": "join", "version": "1.34.2", "nodeConfig": {...NodeConfig...}}}

``action`` is ``install`` (artifacts of ``version``), ``init`` (join with
``nodeConfig``), ``join`` (install, then init), ``upgrade`` (to ``version``, then init
when it carries a ``nodeConfig``, as the plane's rollouts send it),
``reboot`` (once per ``step``), ``uninstall`` or ``reimage`` (install OS ``image`` from
scratch: the agent reports the plan applied, then reboots the host into the site's
installer, :meth:`tether.agent.runner.Agent.follow_desired`; the new image's first boot
enrols again with the seed). ``step`` names the plane's rollout step
that sent the plan: a new step makes a new document even when the action repeats.
``skip``, ``forceReason`` and ``allowContainerdMajor`` mean what the CLI flags mean. A
NodeConfig without ``credentials`` gets the agent's own identity (x509), so a plan never
carries a secret.

The agent runs a plan with :func:`execute`, the same code ``tether node`` runs; every
phase becomes a host event. Run again after a kill, a plan converges on the same end
state (see :mod:`tether.node.phases`). The result says whether running the same plan
again may help (``retryable``), decided by :func:`tether.errors.is_permanent` for the
failure that stopped it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, ValidationError, model_validator

from tether.domain.base import Model
from tether.errors import HostError, Invalid, PlaneError, describe, is_permanent
from tether.node import render
from tether.node.actions import (
    Force,
    HostFacts,
    NodeEnv,
    init,
    installed_node,
    reboot,
    uninstall,
    upgrade,
)
from tether.node.artifacts import Keyring
from tether.node.credentials import token_source
from tether.node.host import HostOps
from tether.node.install import install
from tether.node.kubeview import KubeNodeView
from tether.node.nodeconfig import parse_node_config
from tether.node.phases import ActionReport, PhaseEvent
from tether.node.tracker import host_path

__all__ = ["NodePlan", "PlanContext", "execute", "failure", "parse_plan"]

Action = Literal["install", "init", "join", "upgrade", "uninstall", "reboot", "reimage"]


class NodePlan(Model):
    action: Action
    version: str | None = None
    node_config: dict[str, Any] | None = None
    skip: list[str] = Field(default_factory=list)
    force_reason: str | None = None
    allow_containerd_major: bool = False
    step: str | None = Field(default=None, max_length=256)
    image: str | None = Field(default=None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _needs(self) -> NodePlan:
        if self.action in ("install", "join", "upgrade") and not self.version:
            raise ValueError(f"action {self.action} needs a version")
        if self.action == "reimage" and self.image is None:
            raise ValueError("action reimage needs an image")
        if self.action in ("init", "join") and self.node_config is None:
            raise ValueError(f"action {self.action} needs a nodeConfig")
        return self


def parse_plan(data: Any) -> NodePlan:
    """Validate the ``node`` part of a desired-state document."""
    try:
        return NodePlan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "node"
        message = first["msg"].removeprefix("Value error, ")
        raise Invalid(f"node.{where}: {message}", field=f"node.{where}") from None


@dataclass
class PlanContext:
    """What the agent gives a plan: its identity, the host and where artifacts come from."""

    name: str
    root: Path
    host: HostOps
    server: str
    ca: Path
    cert: Path
    key: Path
    source: str
    client: httpx.Client
    keyring: Keyring | None
    ready_timeout: float = 300.0
    facts: HostFacts | None = None  # None: the real host's


def _node_config(plan: NodePlan, ctx: PlanContext) -> dict[str, Any]:
    doc = dict(plan.node_config or {})
    spec = dict(doc.get("spec") or {})
    node = spec.get("node")
    if isinstance(node, dict) and node.get("name") not in (None, ctx.name):
        raise Invalid(
            f"the plan's nodeConfig names node {node.get('name')!r}, but this host is {ctx.name!r}",
            field="node.nodeConfig.spec.node.name",
        )
    if "credentials" not in spec:
        spec["credentials"] = {
            "x509": {
                "planeEndpoint": ctx.server,
                "caPath": str(ctx.ca),
                "certificatePath": str(ctx.cert),
                "privateKeyPath": str(ctx.key),
            }
        }
    doc["spec"] = spec
    return doc


def _keyring(ctx: PlanContext) -> Keyring:
    if ctx.keyring is None:
        raise Invalid(
            "this agent has no keyring to verify artifact manifests: set node.keyring in its "
            "config",
            field="node.keyring",
        )
    return ctx.keyring


def _install_report(version: str, ctx: PlanContext) -> ActionReport:
    report = install(
        version,
        root=ctx.root,
        source=ctx.source,
        keyring=_keyring(ctx),
        client=ctx.client,
    )
    return ActionReport(
        action="install",
        phases=[
            {
                "phase": "install",
                "status": "Completed",
                "changed": report.installed,
                "message": report.summary(),
            }
        ],
    )


def _env(ctx: PlanContext, endpoint: str, ca_pem: str) -> NodeEnv:
    view = KubeNodeView(endpoint, ca_pem, host_path(ctx.root, render.KUBELET_KUBECONFIG))
    env = NodeEnv(root=ctx.root, host=ctx.host, view=view, ready_timeout=ctx.ready_timeout)
    if ctx.facts is not None:
        env.facts = ctx.facts
    return env


def _run(
    plan: NodePlan, ctx: PlanContext, on_event: Callable[[PhaseEvent], None]
) -> list[ActionReport]:
    force = Force(plan.force_reason) if plan.force_reason is not None else None
    if plan.action in ("install", "join"):
        assert plan.version is not None
        on_event(PhaseEvent("install", "install", "Started", f"Kubernetes {plan.version}"))
        report = _install_report(plan.version, ctx)
        on_event(PhaseEvent("install", "install", "Completed", report.phases[0]["message"]))
        if plan.action == "install":
            return [report]
        reports = [report]
    else:
        reports = []
    if plan.action == "reimage":
        return [_reimage(plan, on_event)]
    if plan.action in ("init", "join"):
        return [*reports, _init(plan, ctx, on_event)]
    node = installed_node(ctx.root)
    env = _env(ctx, node.endpoint, node.ca_pem)
    if plan.action == "reboot":
        return [reboot(plan.step or "reboot", env, on_event=on_event)]
    if plan.action == "upgrade":
        assert plan.version is not None
        report = upgrade(
            ctx.name,
            plan.version,
            env,
            source=ctx.source,
            keyring=_keyring(ctx),
            client=ctx.client,
            allow_containerd_major=plan.allow_containerd_major,
            force=force,
            skip=plan.skip,
            on_event=on_event,
        )
        failed = any(p["status"] == "Failed" for p in report.phases)
        if plan.node_config is None or failed:
            return [report]
        # The plane's upgrade carries the node's config (as nodeadm's upgrade does): the
        # new version's node is then configured as a join would, in the same plan.
        return [report, _init(plan, ctx, on_event)]
    return [uninstall(ctx.name, env, force=force, skip=plan.skip, on_event=on_event)]


def _reimage(plan: NodePlan, on_event: Callable[[PhaseEvent], None]) -> ActionReport:
    """Nothing is changed on this host: the agent reboots it once the plan is reported."""
    message = f"re-image to {plan.image}: the host reboots into its installer now"
    on_event(PhaseEvent("reimage", "request", "Completed", message))
    phase = {"phase": "request", "status": "Completed", "changed": [], "message": message}
    return ActionReport(action="reimage", phases=[phase])


def _init(plan: NodePlan, ctx: PlanContext, on_event: Callable[[PhaseEvent], None]) -> ActionReport:
    config = parse_node_config(_node_config(plan, ctx))
    env = _env(
        ctx, config.spec.cluster.api_server_endpoint, config.spec.cluster.certificate_authority
    )
    return init(config, env, token=token_source(config), skip=plan.skip, on_event=on_event)


def failure(exc: BaseException, action: str | None = None) -> dict[str, Any]:
    """The applied result of a plan that failed before or outside its phases."""
    result: dict[str, Any] = {"ok": False, "message": describe(exc)}
    if action is not None:
        result |= {"action": action, "phases": []}
    result["retryable"] = not is_permanent(exc)
    return result


def execute(
    plan: NodePlan, ctx: PlanContext, on_event: Callable[[PhaseEvent], None]
) -> dict[str, Any]:
    """Run ``plan``; the result the agent reports as applied (``ok``, ``message``,
    ``phases``, and ``retryable`` when it failed). Never raises for a plan that cannot be
    carried out: the result says why."""
    try:
        reports = _run(plan, ctx, on_event)
    except (HostError, PlaneError, OSError) as exc:
        on_event(PhaseEvent(plan.action, "plan", "Failed", describe(exc)))
        return failure(exc, plan.action)
    phases = [p for r in reports for p in r.phases]
    failed = next((p for p in phases if p["status"] == "Failed"), None)
    resumed = next((r.resumed_after for r in reports if r.resumed_after), None)
    message = (
        f"{failed['phase']} failed: {failed.get('message', '')}"
        if failed
        else f"{plan.action} done"
    )
    result: dict[str, Any] = {
        "ok": failed is None,
        "action": plan.action,
        "message": message,
        "phases": [{"phase": p["phase"], "status": p["status"]} for p in phases],
    }
    if resumed:
        result["resumedAfter"] = resumed
    if failed is not None:
        result["retryable"] = not failed.get("permanent", False)
    return result
