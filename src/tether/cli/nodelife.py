"""``tether node init | upgrade | uninstall | debug | config check``: the node life cycle.

Exit codes: 0 done, 1 a phase failed (the output names it and why), 2 usage errors
(unknown ``--skip`` phase, ``--force`` without ``--reason``), 7 an invalid NodeConfig.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from tether.agent.runner import enrol_identity
from tether.cli.nodeopts import (
    EXIT_FAILED,
    EXIT_USAGE,
    CaOpt,
    CertOpt,
    KeyOpt,
    fail,
    https,
    load_keyring,
)
from tether.cli.output import Format, OutputOption, console, errors, field, render
from tether.errors import Invalid
from tether.node import render as files
from tether.node.actions import (
    Force,
    HostFacts,
    NodeEnv,
    NotInitialised,
    SystemFacts,
    init,
    installed_node,
    uninstall,
    upgrade,
)
from tether.node.credentials import token_source
from tether.node.debug import DebugTarget, SystemProbes, overall, run_checks
from tether.node.host import HostOps
from tether.node.kubeview import KubeNodeView
from tether.node.nodeconfig import NodeConfig, NodeConfigError, load_node_config
from tether.node.phases import ActionReport, PhaseEvent, UnknownPhase
from tether.node.supervisor import BACKENDS, service_manager
from tether.node.tracker import host_path

EXIT_INVALID = 7

PHASE_COLUMNS = [
    ("PHASE", field("phase")),
    ("STATUS", field("status")),
    ("MESSAGE", field("message")),
]
ConfigOpt = typer.Option(..., "--config", "-c", help="The NodeConfig: file://PATH or a path.")
RootOpt = typer.Option(Path("/"), "--root", help="Act on the host under this root prefix.")
SkipOpt = typer.Option("", "--skip", help="Comma-separated phases to skip.")
ForceOpt = typer.Option(False, "--force", help="Skip the cordoned-and-drained check.")
ReasonOpt = typer.Option(None, "--reason", help="Why --force is needed (logged).")
KubeconfigOpt = typer.Option(
    None, "--kubeconfig", help="Kubeconfig to read the node with (default: the kubelet's)."
)
ServiceManagerOpt = typer.Option(
    "auto",
    "--service-manager",
    help="systemd, supervisor (runs the units' ExecStart where systemd is not PID 1), "
    "or auto: systemd when it runs as PID 1.",
)
SimulateOpt = typer.Option(
    None,
    "--simulate-kubelet",
    hidden=True,
    help="SIMULATED: run a simulated kubelet with this kubeconfig instead of systemd.",
)


def _config(location: str) -> NodeConfig:
    try:
        return load_node_config(location)
    except NodeConfigError as exc:
        for problem in exc.problems:
            errors.print(f"[red]invalid:[/red] {problem.field}: {problem.message}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


def _force(force: bool, reason: str | None) -> Force | None:
    if not force:
        return None
    try:
        return Force(reason or "")
    except Invalid as exc:
        raise fail(exc.message, EXIT_USAGE) from None


def _skips(skip: str) -> list[str]:
    return [s.strip() for s in skip.split(",") if s.strip()]


def _host(
    root: Path, simulate: Path | None, stack: ExitStack, backend: str = "auto"
) -> tuple[HostOps, HostFacts]:
    """The service manager (systemd or the supervisor backend) and this machine's probes,
    or the SIMULATED kubelet host and its facts (closed with ``stack``)."""
    if simulate is None:
        if backend not in BACKENDS:
            raise fail(f"--service-manager must be one of {', '.join(BACKENDS)}", EXIT_USAGE)
        return service_manager(root, backend), SystemFacts()
    from tether.kube.client import KubeClient
    from tether.sim.kubelet_host import SimulatedFacts, SimulatedKubeletHost
    from tether.sim.kubesim import KubeletFleet

    client = stack.enter_context(KubeClient(simulate))
    fleet = stack.enter_context(KubeletFleet(client))
    log = host_path(root, "/var/lib/tether/node/simulated-host.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    return SimulatedKubeletHost(root, fleet, simulate, log), SimulatedFacts()


def _print_event(event: PhaseEvent) -> None:
    colour = {"Failed": "red", "Completed": "green", "Skipped": "yellow"}.get(event.status, "")
    status = f"{event.status:<9}"
    if colour:
        status = f"[{colour}]{status}[/{colour}]"
    console.print(f"{event.phase:<18} {status} {event.message}", highlight=False, soft_wrap=True)


def _run(action: Any, output: Format) -> None:
    on_event = _print_event if output.tabular else (lambda _: None)
    try:
        report: ActionReport = action(on_event)
    except UnknownPhase as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if not output.tabular:
        render(report.as_dict(), output)
    elif report.resumed_after:
        console.print(f"(resumed a run that had completed {report.resumed_after})")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def init_command(
    config: str = ConfigOpt,
    root: Path = RootOpt,
    skip: str = SkipOpt,
    ready_timeout: float = typer.Option(300.0, "--ready-timeout", help="Seconds to wait."),
    service_manager_name: str = ServiceManagerOpt,
    simulate: Path | None = SimulateOpt,
    output: Format = OutputOption,
) -> None:
    """Join this host to its cluster: validation, sysctl, containerd, kubelet config,
    bootstrap kubeconfig, systemd units, start, wait for Ready. Safe to run again."""
    node_config = _config(config)
    with ExitStack() as stack:
        host, facts = _host(root, simulate, stack, service_manager_name)
        env = NodeEnv(
            root=root,
            host=host,
            facts=facts,
            view=KubeNodeView(
                node_config.spec.cluster.api_server_endpoint,
                node_config.spec.cluster.certificate_authority,
                host_path(root, files.KUBELET_KUBECONFIG),
            ),
            ready_timeout=ready_timeout,
        )
        token = token_source(node_config, enrol_identity)
        _run(
            lambda on_event: init(
                node_config, env, token=token, skip=_skips(skip), on_event=on_event
            ),
            output,
        )


def _installed(root: Path, kubeconfig: Path | None, name: str | None) -> tuple[str, KubeNodeView]:
    """The node name and a view of it, from what ``init`` wrote under ``root``."""
    try:
        node = installed_node(root)
    except NotInitialised as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    view = KubeNodeView(
        node.endpoint, node.ca_pem, kubeconfig or host_path(root, files.KUBELET_KUBECONFIG)
    )
    return name or node.name, view


def upgrade_command(
    version: str = typer.Argument(..., help="Kubernetes version to move to: 1.35.1 or 1.35."),
    source: str = typer.Option(..., "--source", help="Mirror directory or https:// base URL."),
    keyring: Path = typer.Option(..., "--keyring", help="Trusted manifest keys (YAML/JSON)."),
    root: Path = RootOpt,
    arch: str | None = typer.Option(None, "--arch", help="amd64 or arm64 (default: this host)."),
    ca: Path | None = CaOpt,
    cert: Path | None = CertOpt,
    key: Path | None = KeyOpt,
    node_name: str | None = typer.Option(None, "--node-name", help="Default: from init."),
    kubeconfig: Path | None = KubeconfigOpt,
    allow_containerd_major: bool = typer.Option(
        False, "--allow-containerd-major", help="Allow a new containerd major version."
    ),
    force: bool = ForceOpt,
    reason: str | None = ReasonOpt,
    skip: str = SkipOpt,
    ready_timeout: float = typer.Option(300.0, "--ready-timeout", help="Seconds to wait."),
    service_manager_name: str = ServiceManagerOpt,
    simulate: Path | None = SimulateOpt,
    output: Format = OutputOption,
) -> None:
    """Upgrade a cordoned, drained node's Kubernetes components to VERSION."""
    forced = _force(force, reason)
    ring = load_keyring(keyring)
    name, view = _installed(root, kubeconfig, node_name)
    with ExitStack() as stack:
        client = stack.enter_context(https(ca, cert, key))
        host, facts = _host(root, simulate, stack, service_manager_name)
        env = NodeEnv(root=root, host=host, facts=facts, view=view, ready_timeout=ready_timeout)
        _run(
            lambda on_event: upgrade(
                name,
                version,
                env,
                source=source,
                keyring=ring,
                arch=arch,
                client=client,
                allow_containerd_major=allow_containerd_major,
                force=forced,
                skip=_skips(skip),
                on_event=on_event,
            ),
            output,
        )


def uninstall_command(
    root: Path = RootOpt,
    node_name: str | None = typer.Option(None, "--node-name", help="Default: from init."),
    kubeconfig: Path | None = KubeconfigOpt,
    force: bool = ForceOpt,
    reason: str | None = ReasonOpt,
    skip: str = SkipOpt,
    service_manager_name: str = ServiceManagerOpt,
    simulate: Path | None = SimulateOpt,
    output: Format = OutputOption,
) -> None:
    """Stop the kubelet and remove exactly what Tether installed (node cordoned and
    drained first)."""
    forced = _force(force, reason)
    name, view = _installed(root, kubeconfig, node_name)
    with ExitStack() as stack:
        host, facts = _host(root, simulate, stack, service_manager_name)
        env = NodeEnv(root=root, host=host, facts=facts, view=view)
        _run(
            lambda on_event: uninstall(
                name, env, force=forced, skip=_skips(skip), on_event=on_event
            ),
            output,
        )


def debug_command(
    config: str = ConfigOpt,
    root: Path = RootOpt,
    min_mtu: int = typer.Option(1400, "--min-mtu", help="Smallest MTU that carries IPsec."),
    service_manager_name: str = ServiceManagerOpt,
    output: Format = OutputOption,
) -> None:
    """Run ordered checks (time sync, swap, DNS, API endpoint, certificates, node IP, MTU,
    kubelet) and print a remedy for each problem. Exit 1 if any check fails."""
    node_config = _config(config)
    client_cert = host_path(root, files.KUBELET_CLIENT_CERT)
    with tempfile.TemporaryDirectory(prefix="tether-debug-") as tmp:
        # The NodeConfig's CA, so the API endpoint's TLS is checked even before init.
        ca = Path(tmp) / "ca.crt"
        ca.write_text(node_config.spec.cluster.certificate_authority)
        target = DebugTarget(
            api_endpoint=node_config.spec.cluster.api_server_endpoint,
            ca_file=ca,
            cert_files=[p for p in (ca, client_cert) if p.is_file()],
            node_ip=node_config.spec.node.ip,
            node_cidr=node_config.spec.node.node_cidr,
            min_mtu=min_mtu,
        )
        with ExitStack() as stack:
            host, _ = _host(root, None, stack, service_manager_name)
            results = run_checks(target, SystemProbes(host.is_active), datetime.now(UTC))
    rows = [r.as_dict() for r in results]
    if output.tabular:
        for row in rows:
            colour = {"ok": "green", "warn": "yellow", "fail": "red"}.get(str(row["status"]), "")
            status = f"{row['status']!s:<6}"
            if colour:
                status = f"[{colour}]{status}[/{colour}]"
            console.print(
                f"{row['name']:<28} {status} {row['detail']}", highlight=False, soft_wrap=True
            )
            if row.get("remedy"):
                console.print(f"{'':<28} remedy: {row['remedy']}", highlight=False, soft_wrap=True)
    else:
        render(rows, output)
    code = overall(results)
    if code:
        raise typer.Exit(code)


config_app = typer.Typer(help="Check a NodeConfig.", no_args_is_help=True)


@config_app.command("check")
def config_check_command(config: str = ConfigOpt, output: Format = OutputOption) -> None:
    """Validate a NodeConfig without touching the host: exit 0 if valid, 7 if not."""
    node_config = _config(config)
    summary = {
        "valid": True,
        "cluster": node_config.spec.cluster.name,
        "node": node_config.spec.node.name,
        "nodeIP": str(node_config.spec.node.ip),
        "credentials": node_config.spec.credentials.kind,
    }
    if output.tabular:
        console.print(
            f"NodeConfig valid: node {summary['node']} ({summary['nodeIP']}) joins cluster "
            f"{summary['cluster']} with {summary['credentials']} credentials",
            highlight=False,
            soft_wrap=True,
        )
    else:
        render(summary, output)


def attach(app: typer.Typer) -> None:
    """Add the life-cycle commands to ``tether node``."""
    app.command("init")(init_command)
    app.command("upgrade")(upgrade_command)
    app.command("uninstall")(uninstall_command)
    app.command("debug")(debug_command)
    app.add_typer(config_app, name="config")


def node_app() -> typer.Typer:
    """``tether node``: install (:mod:`tether.cli.node`) and the life-cycle phases."""
    from tether.cli import node

    if not any(info.name == "config" for info in node.app.registered_groups):
        attach(node.app)
    return node.app
