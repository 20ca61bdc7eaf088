"""CLI commands of the Kubernetes integration.

``tether cluster import NAME --kubeconfig FILE`` reads the kubeconfig on *your* machine,
keeps only the chosen context, inlines every file it references (CA, client
certificate and key, token file) and runs ``exec`` credential plugins locally, then sends
the self-contained result to the plane (``POST /api/v1/clusters/{name}/import``). So
the CLI works against a remote plane, and the plane never reads files or runs commands
on a caller's behalf.

Also: ``cluster hybrid enable|disable``, ``host bootstrap-token``, ``host cordon``,
``host uncordon``, ``host drain``, and ``controllers run``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import typer

from tether.cli.client import Client, CLIError
from tether.cli.output import Bar, Format, OutputOption, field, progress, render
from tether.cli.resources import read_yaml, spec_from

__all__ = ["flatten_kubeconfig", "register"]

_FILE_FIELDS = {
    "certificate-authority": "certificate-authority-data",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
}


def _named(entries: Any, name: str, what: str) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            if isinstance(body, dict):
                return dict(body)
    raise CLIError(f"the kubeconfig has no {what} named {name!r}", 2)


def _inline(section: dict[str, Any], base: Path) -> None:
    for key, data_key in _FILE_FIELDS.items():
        ref = section.pop(key, None)
        if ref and not section.get(data_key):
            path = Path(os.path.expanduser(str(ref)))
            path = path if path.is_absolute() else base / path
            try:
                section[data_key] = base64.b64encode(path.read_bytes()).decode()
            except OSError as exc:
                raise CLIError(f"cannot read {path} ({key}): {exc.strerror}", 2) from exc


def _exec_token(spec: dict[str, Any]) -> str:
    """Run a kubeconfig ``exec`` credential plugin here and return its bearer token."""
    command = spec.get("command")
    if not command:
        raise CLIError("the kubeconfig's exec plugin names no command", 2)
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[str(item["name"])] = str(item["value"])
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
    )
    try:
        done = subprocess.run(
            [str(command), *(str(a) for a in spec.get("args") or [])],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CLIError(f"the kubeconfig's exec plugin {command} failed: {exc}", 2) from exc
    try:
        token = json.loads(done.stdout)["status"]["token"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"the exec plugin {command} returned no token", 2) from exc
    return str(token)


def flatten_kubeconfig(path: Path, context: str | None = None) -> str:
    """One context of *path*, self-contained (module doc), as YAML text."""
    doc = read_yaml(path, "YAML")
    if not isinstance(doc, dict):
        raise CLIError(f"{path} is not a kubeconfig", 2)
    name = context or doc.get("current-context")
    if not name:
        raise CLIError(f"{path} has no current-context; pass --context", 2)
    ctx = _named(doc.get("contexts"), str(name), "context")
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster")
    user = _named(doc.get("users"), str(ctx.get("user")), "user")
    base = path.resolve().parent
    _inline(cluster, base)
    _inline(user, base)
    token_file = user.pop("tokenFile", None)
    if token_file and not user.get("token"):
        user["token"] = (base / os.path.expanduser(str(token_file))).read_text().strip()
    exec_spec = user.pop("exec", None)
    if isinstance(exec_spec, dict):
        user["token"] = _exec_token(exec_spec)
    if "auth-provider" in user:
        raise CLIError("auth-provider kubeconfigs are not supported; use a token or exec", 2)
    flat = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": str(name), "context": {"cluster": "c", "user": "u"}}],
        "current-context": str(name),
    }
    import yaml

    return yaml.safe_dump(flat, sort_keys=False)


IMPORT_COLUMNS = [
    ("CLUSTER", field("cluster.name")),
    ("CREATED", field("created")),
    ("VERSION", field("serverVersion")),
    ("ENDPOINT", field("cluster.spec.apiEndpoint")),
    ("CREDENTIALS EXPIRE", field("credentialsExpireAt")),
    ("WARNINGS", field("warnings")),
]


def _print_report(report: dict[str, Any], output: Format) -> None:
    if not output.tabular:
        render(report, output)
        return
    verb = "would change" if report["dryRun"] else "changed"
    state = "enabled" if report["enabled"] else "disabled"
    typer.echo(f"hybrid mode {state} on {report['cluster']}; {len(report['changes'])} {verb}")
    for line in report["changes"]:
        typer.echo(f"  {line}")
    for line in report["failed"]:
        typer.echo(f"  FAILED: {line}", err=True)
    if report["hybridNodes"]:
        typer.echo("hybrid nodes: " + ", ".join(report["hybridNodes"]))


#: Tells how many pods a drain evicts (the DrainStarted event's message).
_TO_EVICT = re.compile(r"^(\d+) pod\(s\) to evict")


def _host_events(client: Client, name: str) -> list[dict[str, Any]]:
    """The host's 100 newest events, oldest first."""
    page = client.request(
        "GET",
        "/api/v1/events",
        params={"kind": "Host", "name": name, "order": "newest", "limit": 100},
    )
    return list(reversed(page["items"]))


def _key(event: dict[str, Any]) -> tuple[int, int]:
    """An event seen again with a higher count happened again."""
    return event["id"], event["count"]


def _show_drain_step(bar: Bar, event: dict[str, Any]) -> None:
    bar.log(f"{event['reason']}: {event['message']}")
    if event["reason"] == "DrainStarted" and (match := _TO_EVICT.match(event["message"])):
        bar.update(total=int(match.group(1)), completed=0)
    elif event["reason"] == "Evicted":
        bar.update(advance=1, note=event["message"])


def register(app: typer.Typer, cluster_app: typer.Typer, host_app: typer.Typer) -> None:
    """Add the Kubernetes commands to the ``tether`` command tree."""
    hybrid_app = typer.Typer(help="Hybrid mode: labels and CNI affinity.", no_args_is_help=True)
    cluster_app.add_typer(hybrid_app, name="hybrid")
    controllers_app = typer.Typer(help="Run the plane's controllers.", no_args_is_help=True)
    app.add_typer(controllers_app, name="controllers")

    @cluster_app.command("import")
    def import_(
        name: str,
        kubeconfig: Path = typer.Option(..., "--kubeconfig", help="Kubeconfig of the cluster."),
        context: str | None = typer.Option(None, help="Context (default: current)."),
        vpc_cidr: str | None = typer.Option(None, "--vpc-cidr", help="The VPC's CIDR."),
        service_cidr: str | None = typer.Option(
            None, "--service-cidr", help="Default: the cluster's ServiceCIDR."
        ),
        sets: list[str] = typer.Option([], "--set", help="Other spec fields, path=value."),
        token_ttl_days: int = typer.Option(365, help="Lifetime of Tether's credentials."),
        output: Format = OutputOption,
    ) -> None:
        """Import a cluster: version check, Tether's objects, Tether's own credentials."""
        spec = spec_from(None, sets)
        if vpc_cidr:
            spec["vpcCIDR"] = vpc_cidr
        if service_cidr:
            spec["serviceCIDR"] = service_cidr
        body = {
            "kubeconfig": flatten_kubeconfig(kubeconfig, context),
            "spec": spec,
            "tokenTtlSeconds": token_ttl_days * 86400,
        }
        result = Client.from_config().request("POST", f"/api/v1/clusters/{name}/import", json=body)
        render(result, output, IMPORT_COLUMNS)

    def _hybrid(name: str, enable: bool, eks_labels: bool, dry_run: bool, output: Format) -> None:
        verb = "enable" if enable else "disable"
        report = Client.from_config().request(
            "POST",
            f"/api/v1/clusters/{name}/hybrid/{verb}",
            json={"eksLabels": eks_labels, "dryRun": dry_run},
        )
        _print_report(report, output)
        if report["failed"]:
            raise typer.Exit(1)

    @hybrid_app.command("enable")
    def hybrid_enable(
        name: str,
        eks_labels: bool = typer.Option(False, "--eks-labels", help="Also EKS's label."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan only."),
        output: Format = OutputOption,
    ) -> None:
        """Label hybrid nodes, pin the CNI to them and keep cloud-only DaemonSets off."""
        _hybrid(name, True, eks_labels, dry_run, output)

    @hybrid_app.command("disable")
    def hybrid_disable(
        name: str,
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan only."),
        output: Format = OutputOption,
    ) -> None:
        """Take off exactly what enabling added."""
        _hybrid(name, False, False, dry_run, output)

    @host_app.command("bootstrap-token")
    def bootstrap_token(
        name: str,
        ttl: int = typer.Option(3600, help="Lifetime in seconds (60..86400)."),
        output: Format = OutputOption,
    ) -> None:
        """Mint a short-lived join token for a host in a pool (printed once)."""
        grant = Client.from_config().request(
            "POST", f"/api/v1/hosts/{name}/bootstrap-token", json={"ttlSeconds": ttl}
        )
        columns = [
            ("HOST", field("host")),
            ("CLUSTER", field("cluster")),
            ("EXPIRES", field("expiration")),
            ("TOKEN", field("token")),
        ]
        render(grant, output, columns)

    @host_app.command("cordon")
    def cordon(name: str) -> None:
        """Mark the host's node unschedulable."""
        Client.from_config().request("POST", f"/api/v1/hosts/{name}/cordon")
        typer.echo(f"node {name} cordoned")

    @host_app.command("uncordon")
    def uncordon(name: str) -> None:
        """Make the host's node schedulable again."""
        Client.from_config().request("POST", f"/api/v1/hosts/{name}/uncordon")
        typer.echo(f"node {name} uncordoned")

    @host_app.command("drain")
    def drain(
        name: str,
        timeout: float = typer.Option(300, help="Give up after this many seconds."),
        delete_emptydir_data: bool = typer.Option(
            False, "--delete-emptydir-data", help="Evict pods with emptyDir volumes."
        ),
        force: bool = typer.Option(False, help="Evict pods no controller manages."),
        output: Format = OutputOption,
    ) -> None:
        """Cordon and drain the host's node (PodDisruptionBudgets are honoured), with a
        progress bar of the pods evicted."""
        client = Client.from_config()
        seen = {_key(e) for e in _host_events(client, name)}
        body = {
            "timeoutSeconds": timeout,
            "deleteEmptyDirData": delete_emptydir_data,
            "force": force,
        }
        from concurrent.futures import ThreadPoolExecutor, wait

        drainer = Client.from_config(timeout + 30)  # a client (a connection) per thread
        with ThreadPoolExecutor(1) as pool, progress(f"draining {name}") as bar:
            done = pool.submit(drainer.request, "POST", f"/api/v1/hosts/{name}/drain", json=body)
            while True:
                finished = bool(wait([done], timeout=0.5).done)
                for event in _host_events(client, name):
                    if _key(event) not in seen:
                        seen.add(_key(event))
                        _show_drain_step(bar, event)
                if finished:
                    break
            report = done.result()
        columns = [
            ("NODE", field("node")),
            ("EVICTED", field("evicted")),
            ("RETRIES", field("evictionRetries")),
            ("SECONDS", field("seconds")),
        ]
        render(report, output, columns)

    @controllers_app.command("run")
    def controllers_run(
        data_dir: Path | None = typer.Option(None, "--data-dir", help="TETHER_DATA_DIR."),
        deny_foreign_csrs: bool = typer.Option(
            False, help="Also deny kubelet CSRs of nodes that are not Tether hosts."
        ),
    ) -> None:
        """Run the pool reconciler, and the nodes controller and CSR approver of every
        imported cluster (direct database access, like 'tether admin bootstrap'); Ctrl-C
        stops. 'tether serve' runs them too; several copies share the work safely."""
        import threading

        from tether import logs
        from tether.controllers.manager import ControllerManager
        from tether.processes import stop_on_signals
        from tether.settings import load_settings
        from tether.store.db import Database, migrate

        settings = load_settings()
        logs.configure(settings.log.format, settings.log.level)
        if data_dir is not None:
            settings.paths.data_dir = data_dir
        db = Database.connect(settings.database_url)
        migrate(db.engine)
        manager = ControllerManager(
            db,
            settings.paths.data_dir,
            deny_foreign_csrs=deny_foreign_csrs,
            rescan_seconds=settings.controllers.rescan_seconds,
            resync_seconds=settings.controllers.node_resync_seconds,
            pool_resync_seconds=settings.controllers.pool_resync_seconds,
        )
        done = threading.Event()
        stop_on_signals(done)
        manager.start()
        typer.echo(f"controllers running for clusters imported under {settings.paths.data_dir}")
        try:
            done.wait()
        finally:
            manager.stop()
            db.dispose()
