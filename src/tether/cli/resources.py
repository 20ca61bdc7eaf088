"""Resource verbs (create, get, list, update, delete) built once for every kind.

``create`` and ``update`` take the spec from a YAML/JSON file (``-f``) and/or
``--set path=value`` pairs, where each value is parsed as YAML (``--set
remoteNodeNetworks=[10.80.0.0/16]``, ``--set hybridEnabled=true``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from tether.cli.client import Client, CLIError
from tether.cli.output import Column, Format, OutputOption, render
from tether.cli.output import field as col
from tether.files import parse_yaml_or_json


@dataclass(frozen=True)
class Kind:
    name: str  # singular, as typed on the command line
    path: str  # API collection path
    columns: list[Column]
    filters: list[str] = field(default_factory=list)
    wide: list[Column] = field(default_factory=list)  # extra columns of -o wide


def read_yaml(path: Path, what: str = "YAML or JSON") -> Any:
    """Parse a YAML (or JSON) file; an unreadable or malformed one is a usage error."""
    import yaml

    try:
        return parse_yaml_or_json(path.read_text())
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}", 2) from exc
    except yaml.YAMLError as exc:
        raise CLIError(f"{path} is not valid {what}: {exc}", 2) from exc


def spec_from(file: Path | None, sets: list[str]) -> dict[str, Any]:
    """Build a spec mapping from a file and ``path=value`` overrides."""
    spec: dict[str, Any] = {}
    if file is not None:
        loaded = read_yaml(file)
        if not isinstance(loaded, dict):
            raise CLIError(f"{file} must hold a mapping (the object's spec)", 2)
        # An object as `get -o yaml` prints it (name, spec, status, ...) or a bare spec.
        spec = loaded["spec"] if isinstance(loaded.get("spec"), dict) else loaded
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--set wants path=value, got {item!r}", 2)
        target = spec
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise CLIError(f"--set {key}: {part} is not a mapping", 2)
        target[leaf] = _yaml_value(raw) if raw else ""
    return spec


def _yaml_value(raw: str) -> Any:
    import yaml

    return yaml.safe_load(raw)


def add_verbs(app: typer.Typer, kind: Kind) -> None:
    """Register create/get/list/update/delete for ``kind`` on ``app``."""

    @app.command("create")
    def create(
        name: str = typer.Argument(..., help=f"Name of the new {kind.name}."),
        file: Path | None = typer.Option(None, "--file", "-f", help="Spec as YAML or JSON."),
        sets: list[str] = typer.Option([], "--set", help="path=value, value parsed as YAML."),
        output: Format = OutputOption,
    ) -> None:
        """Create an object from a spec file and/or --set values."""
        body = {"name": name, "spec": spec_from(file, sets)}
        render(
            Client.from_config().request("POST", kind.path, json=body),
            output,
            kind.columns,
            kind.wide,
        )

    @app.command("get")
    def get(name: str, output: Format = OutputOption) -> None:
        """Show one object."""
        render(
            Client.from_config().request("GET", f"{kind.path}/{name}"),
            output,
            kind.columns,
            kind.wide,
        )

    @app.command("list")
    def list_(
        filters: list[str] = typer.Option(
            [], "--filter", help=f"key=value; keys: {', '.join(kind.filters) or 'none'}."
        ),
        limit: int | None = typer.Option(None, help="At most this many objects."),
        output: Format = OutputOption,
    ) -> None:
        """List objects, following pages."""
        params: dict[str, Any] = {}
        for item in filters:
            key, _, value = item.partition("=")
            if key not in kind.filters:
                raise CLIError(f"unknown filter {key!r}; use one of {kind.filters}", 2)
            params[key] = value
        items = Client.from_config().list_all(kind.path, params, limit)
        render(items, output, kind.columns, kind.wide)

    @app.command("update")
    def update(
        name: str,
        file: Path | None = typer.Option(None, "--file", "-f", help="Replacement spec."),
        sets: list[str] = typer.Option([], "--set", help="path=value changes to the spec."),
        output: Format = OutputOption,
    ) -> None:
        """Change an object: read it, apply the file and --set values, write it back."""
        client = Client.from_config()
        current = client.request("GET", f"{kind.path}/{name}")
        spec = spec_from(file, []) if file else current["spec"]
        spec = _merge(spec, spec_from(None, sets))
        body = {"resourceVersion": current["resourceVersion"], "spec": spec}
        render(
            client.request("PUT", f"{kind.path}/{name}", json=body),
            output,
            kind.columns,
            kind.wide,
        )

    @app.command("delete")
    def delete(
        name: str,
        resource_version: int | None = typer.Option(
            None, "--resource-version", help="Refuse if the object changed since then."
        ),
    ) -> None:
        """Delete an object."""
        params = {"resourceVersion": resource_version} if resource_version else {}
        left = Client.from_config().request("DELETE", f"{kind.path}/{name}", params=params)
        if left is None:
            typer.echo(f"{kind.name} {name} deleted")
        else:
            typer.echo(
                f"{kind.name} {name} is {left['status']['state']}: its hosts are drained and "
                "removed first, then it goes (tether event watch --pool NAME follows it)"
            )


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _member(host: dict[str, Any]) -> str:
    member = host.get("status", {}).get("member")
    if not member:
        return ""
    step = member.get("step")
    doing = f" {member['operation']}:{step}" if step else ""
    failed = " FAILED" if member.get("failed") else ""
    return f"{member['phase']}{doing}{failed}"


def _node(host: dict[str, Any]) -> str:
    node = host.get("status", {}).get("node")
    if not node:
        return ""
    ready = {True: "Ready", False: "NotReady"}.get(node.get("ready"), "Unknown")
    return ready + (",SchedulingDisabled" if node.get("unschedulable") else "")


def _conditions(pool: dict[str, Any]) -> str:
    """The pool's conditions that are not as they should be, as ``Type=Reason``."""
    good = {"Ready": "True", "PlansApplied": "True", "UpToDate": "True", "RollingOut": "False"}
    return ",".join(
        f"{c['type']}={c['reason']}"
        for c in pool.get("status", {}).get("conditions", [])
        if good.get(c["type"], "True") != c["status"]
    )


def _plan(host: dict[str, Any]) -> str:
    plan = host.get("status", {}).get("plan")
    if not plan:
        return ""
    if plan["state"] == "Failed":
        return f"Failed: {plan.get('message', '')}"
    return str(plan["state"])


META: list[Column] = [("NAME", col("name")), ("VERSION", col("resourceVersion"))]

CLUSTER = Kind(
    "cluster",
    "/api/v1/clusters",
    [
        ("NAME", col("name")),
        ("K8S", col("spec.kubernetesVersion")),
        ("VPC", col("spec.vpcCIDR")),
        ("SERVICES", col("spec.serviceCIDR")),
        ("NODE NETS", col("spec.remoteNodeNetworks")),
        ("POD NETS", col("spec.remotePodNetworks")),
        ("HYBRID", col("spec.hybridEnabled")),
    ],
)
SITE = Kind(
    "site",
    "/api/v1/sites",
    [
        ("NAME", col("name")),
        ("LOCATION", col("spec.location")),
        ("HOSTS", col("status.hosts")),
        ("POOLS", col("status.pools")),
        ("TUNNEL", col("status.tunnel.status")),
        ("BGP", col("status.bgp.status")),
    ],
    wide=[("DESCRIPTION", col("spec.description"))],
)
POOL = Kind(
    "pool",
    "/api/v1/pools",
    [
        ("NAME", col("name")),
        ("CLUSTER", col("spec.cluster")),
        ("SITE", col("spec.site")),
        ("STATE", col("status.state")),
        ("HOSTS", col("status.counts.hosts")),
        ("READY", col("status.counts.ready")),
        ("NODE CIDR", col("spec.nodeCIDR")),
        ("PROFILE", col("spec.profile.version")),
        ("UPDATE", col("status.updateAvailable")),
        ("ROLLOUT", col("status.rollout")),
    ],
    ["cluster", "site", "state"],
    [
        ("POD CIDR", col("spec.podCIDR")),
        ("ROUTING", col("spec.routing")),
        ("PROFILE NAME", col("spec.profile.name")),
        ("NOT OK", _conditions),
    ],
)
HOST = Kind(
    "host",
    "/api/v1/hosts",
    [
        ("NAME", col("name")),
        ("ID", col("id")),
        ("SITE", col("spec.site")),
        ("POOL", col("spec.pool")),
        ("STATE", col("status.state")),
        ("HEALTH", col("status.health")),
        ("MEMBER", _member),
        ("PLAN", _plan),
        ("LAST HEARTBEAT", col("status.lastHeartbeat")),
    ],
    ["site", "pool", "state"],
    [
        ("NODE", _node),
        ("KUBELET", col("status.node.kubeletVersion")),
        ("NODE IP", col("spec.nodeIP")),
        ("ROLE", col("spec.role")),
        ("FAILING CHECKS", col("status.failingChecks")),
    ],
)
