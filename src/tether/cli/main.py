"""The ``tether`` command: run the plane, log in, and manage resources.

Start-up time matters (``tether --help``, ``tether pool list``): this module and what it
imports at the top stay light, heavy sub-commands load on first use (:mod:`.lazy`), and
commands import what only they need inside their bodies.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tether.cli import bootstrap, pools
from tether.cli import kube as kube_cli
from tether.cli.client import EXIT_CODES, Client, CLIError
from tether.cli.lazy import LazyGroup, light_help
from tether.cli.output import Format, OutputOption, console, errors, field, render
from tether.cli.resources import CLUSTER, HOST, POOL, SITE, Kind, add_verbs, spec_from
from tether.errors import PlaneError
from tether.files import private_dir, write_atomic

if TYPE_CHECKING:
    from tether.settings import Settings

app = typer.Typer(
    name="tether",
    help="Tether: one Kubernetes cluster across the cloud and your sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
)


def _sub(kind: Kind, help: str) -> typer.Typer:
    sub = typer.Typer(help=help, no_args_is_help=True)
    add_verbs(sub, kind)
    app.add_typer(sub, name=kind.name)
    return sub


cluster_app = _sub(CLUSTER, "Clusters whose control plane runs in the cloud.")
site_app = _sub(SITE, "Sites: private networks with their own VPN server.")
pool_app = _sub(POOL, "Hybrid node pools: one site's hosts serving one cluster.")
host_app = _sub(HOST, "Edge hosts.")
profile_app = typer.Typer(help="Cluster profiles (versions are immutable).", no_args_is_help=True)
event_app = typer.Typer(help="Events of every object.", no_args_is_help=True)
admin_app = typer.Typer(help="Administration with direct database access.", no_args_is_help=True)
token_app = typer.Typer(help="People's API tokens (admins).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log (admins).", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
app.add_typer(event_app, name="event")
app.add_typer(admin_app, name="admin")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
kube_cli.register(app, cluster_app, host_app)
bootstrap.register(app, site_app=site_app, host_app=host_app)
pools.register(app, pool_app, profile_app)

PROFILE_COLUMNS = [
    ("NAME", field("name")),
    ("VERSION", field("spec.version")),
    ("IMAGE", field("spec.layers.os.image")),
    ("K8S", field("spec.layers.kubernetes.version")),
    ("DESCRIPTION", field("spec.description")),
]
EVENT_COLUMNS = [
    ("LAST SEEN", field("lastTime")),
    ("TYPE", field("type")),
    ("OBJECT", lambda e: f"{e['objectKind']}/{e['objectName']}"),
    ("REASON", field("reason")),
    ("COUNT", field("count")),
    ("MESSAGE", field("message")),
]
EVENT_WIDE = [("FIRST SEEN", field("firstTime")), ("POOL", field("pool"))]
ATTENTION_COLUMNS = [
    ("KIND", field("kind")),
    ("NAME", field("name")),
    ("POOL", field("pool")),
    ("REASON", field("reason")),
    ("SINCE", field("since")),
    ("MESSAGE", field("message")),
]
TOKEN_COLUMNS = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("ROLE", field("role")),
    ("EXPIRES", field("expiresAt")),
    ("REVOKED", field("revoked")),
]


# The plane ----------------------------------------------------------------------------


def _settings(host: str | None, port: int | None, data_dir: Path | None) -> Settings:
    from tether.settings import load_settings

    settings = load_settings()
    if data_dir is not None:
        settings.paths.data_dir = data_dir
    if host is not None:
        settings.api.host = host
    if port is not None:
        settings.api.port = port
    return settings


HostOpt = typer.Option(None, "--host", help="Listen address (TETHER_API_HOST).")
PortOpt = typer.Option(None, "--port", help="Listen port (TETHER_API_PORT).")
DataOpt = typer.Option(None, "--data-dir", help="Data directory (TETHER_DATA_DIR).")


def _run(settings: Settings) -> None:
    """Serve the people's API and the mTLS agent server, with the controllers beside them."""
    from tether.server import run

    run(settings, controllers=True)


@app.command()
def serve(
    host: str | None = HostOpt, port: int | None = PortOpt, data_dir: Path | None = DataOpt
) -> None:
    """Run the management plane (API) on the configured database."""
    _run(_settings(host, port, data_dir))


@app.command()
def demo(
    host: str | None = HostOpt, port: int | None = PortOpt, data_dir: Path | None = DataOpt
) -> None:
    """Run the plane on embedded defaults with demo objects; Ctrl-C stops it."""
    try:
        with ExitStack() as stack:
            _demo(stack, _settings(host, port, data_dir))
    except KeyboardInterrupt:
        pass  # Ctrl-C before the plane ran; everything started is stopped
    typer.echo("Tether demo stopped; its data stays for the next run.")


def _demo(stack: ExitStack, settings: Settings) -> None:
    from tether.cli import config
    from tether.domain.resources import Role, TokenCreate
    from tether.services import tokens
    from tether.sim import demo as demo_objects
    from tether.sim import demo_kube
    from tether.store.db import Database, migrate

    private_dir(settings.paths.data_dir)
    db = Database.connect(settings.database_url)
    stack.callback(db.dispose)
    migrate(db.engine)
    token_file = settings.paths.data_dir / "demo-admin-token"
    with db.session() as session:
        created = demo_objects.load(session)
        if not token_file.exists():
            issued = tokens.issue(
                session,
                TokenCreate(name="demo-admin", role=Role.ADMIN),
                default_ttl_days=settings.auth.token_ttl_days,
            )
            write_atomic(token_file, issued.token + "\n", 0o600)
    token = token_file.read_text().strip()
    url = f"http://{settings.api.host}:{settings.api.port}"
    typer.echo(
        f"Tether demo: {'loaded demo objects' if created else 'reusing'} {settings.database_url}"
    )
    typer.echo(f"Dashboard: {url}/  (sign in with the admin token)")
    typer.echo(f"API:       {url}/api/v1  (OpenAPI: {url}/api/v1/docs)")
    typer.echo(f"Admin token (also in {token_file}):\n  {token}")
    if config.load() is None:
        path = config.save(config.CLIConfig(server=url, token=token))
        typer.echo(f"CLI logged in ({path}); try: tether pool list")
    else:
        typer.echo(f"To use the CLI: tether login --server {url} --token {token}")
    cp = demo_kube.control_plane()
    keyring = None
    if cp is not None:
        stack.callback(cp.stop)
        demo_kube.import_cluster(db, settings, cp)
        keyring = demo_kube.publish_artifacts(settings)
        typer.echo(
            f"Kubernetes: local control plane {cp.url} imported as cluster demo; each pool "
            "picks its hosts and joins them (SIMULATED kubelets and artifacts)"
        )
        typer.echo(f"Kubeconfig: {cp.kubeconfig}  (kubectl --kubeconfig {cp.kubeconfig} get nodes)")
    else:
        typer.echo(
            "Kubernetes: not built (scripts/build-kube.sh, or the first make test); the demo "
            "runs without a cluster, so hosts join pools but no Nodes"
        )
    agents: list[subprocess.Popen[bytes]] = []
    stack.callback(_stop_agents, agents)
    for site in demo_objects.SITES:
        agents += bootstrap.demo_agents(
            settings,
            count=demo_objects.AGENTS_PER_SITE,
            site=site,
            simulate_kubelet=cp.kubeconfig if cp is not None else None,
            keyring=keyring,
            addresses=partial(_demo_addresses, site),
        )
    typer.echo(
        f"Agents:    {len(agents)} local agents enrolling over mTLS on port {settings.agent.port}"
        f" (state and logs: {settings.paths.data_dir / 'demo-agents'})"
    )
    typer.echo(
        "Try:       tether pool status dc1-pool; then roll out the profile's next version:\n"
        "           tether pool rollout dc1-pool --to 1.1.0 && tether rollout approve "
        "dc1-pool-1 && tether rollout watch dc1-pool-1"
    )
    typer.echo("Ctrl-C stops the plane and the agents; data stays for the next run.")

    def say(line: str) -> None:
        errors.print(line, style="bold red", highlight=False, markup=False)

    watch = demo_objects.FailureWatch(db, say, f"{url}/").start()
    stack.callback(watch.stop)
    _run(settings)


def _stop_agents(agents: list[subprocess.Popen[bytes]]) -> None:
    for proc in agents:
        proc.terminate()
    for proc in agents:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _demo_addresses(site: str, n: int) -> list[str]:
    from tether.sim import demo as demo_objects

    return [demo_objects.node_address(site, n)]


@app.command()
def login(
    server: str = typer.Option(..., help="The plane's URL, e.g. http://127.0.0.1:8443."),
    token: str = typer.Option(..., prompt=True, hide_input=True, help="Your API token."),
) -> None:
    """Check the token against the server and save both to the CLI config (0600)."""
    from tether.cli import config

    who = Client(server, token).request("GET", "/api/v1/whoami")
    path = config.save(config.CLIConfig(server=server, token=token))
    typer.echo(f"logged in to {server} as {who['name']} ({who['role']}); saved to {path}")


@admin_app.command("bootstrap")
def admin_bootstrap(
    force: bool = typer.Option(False, help="Mint another admin token even if one exists."),
    data_dir: Path | None = DataOpt,
) -> None:
    """Create the first admin token directly in the database and print it once."""
    from tether.services import tokens
    from tether.store.db import Database, migrate

    settings = _settings(None, None, data_dir)
    db = Database.connect(settings.database_url)
    migrate(db.engine)
    with db.session() as session:
        issued = tokens.bootstrap_admin(
            session, default_ttl_days=settings.auth.token_ttl_days, force=force
        )
    db.dispose()
    typer.echo(issued.token)


# Tokens and audit -----------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: str,
    role: str = typer.Option("viewer", help="viewer, operator or admin."),
    ttl_days: int | None = typer.Option(None, help="Lifetime in days."),
    output: Format = OutputOption,
) -> None:
    """Mint a token; its secret is printed once."""
    body = {"name": name, "role": role, "ttlDays": ttl_days}
    issued = Client.from_config().request("POST", "/api/v1/tokens", json=body)
    render(issued, output, [*TOKEN_COLUMNS, ("TOKEN", field("token"))])


@token_app.command("list")
def token_list(output: Format = OutputOption) -> None:
    render(Client.from_config().request("GET", "/api/v1/tokens")["items"], output, TOKEN_COLUMNS)


@token_app.command("revoke")
def token_revoke(token_id: str, output: Format = OutputOption) -> None:
    render(
        Client.from_config().request("DELETE", f"/api/v1/tokens/{token_id}"), output, TOKEN_COLUMNS
    )


@audit_app.command("list")
def audit_list(
    actor: str | None = None, limit: int | None = 100, output: Format = OutputOption
) -> None:
    items = Client.from_config().list_all("/api/v1/audit", {"actor": actor}, limit)
    columns = [
        ("TIME", field("time")),
        ("ACTOR", field("actor")),
        ("ACTION", field("action")),
        ("TARGET", field("target")),
        ("STATUS", field("statusCode")),
        ("RESULT", field("result")),
    ]
    render(items, output, columns)


@cluster_app.command("network")
def cluster_network(
    name: str, output: Format = typer.Option(Format.YAML, "--output", "-o")
) -> None:
    """Print the cluster and its pools as a HybridNetwork document (for tether net ...)."""
    render(Client.from_config().request("GET", f"/api/v1/clusters/{name}/network"), output)


# Profiles -------------------------------------------------------------------------------


@profile_app.command("create")
def profile_create(
    name: str,
    file: Path | None = typer.Option(None, "--file", "-f", help="Spec with version and layers."),
    sets: list[str] = typer.Option([], "--set", help="path=value, value parsed as YAML."),
    output: Format = OutputOption,
) -> None:
    """Publish a new version of a profile."""
    body = {"name": name, "spec": spec_from(file, sets)}
    render(
        Client.from_config().request("POST", "/api/v1/profiles", json=body), output, PROFILE_COLUMNS
    )


@profile_app.command("get")
def profile_get(name: str, version: str, output: Format = OutputOption) -> None:
    item = Client.from_config().request("GET", f"/api/v1/profiles/{name}/{version}")
    render(item, output, PROFILE_COLUMNS)


@profile_app.command("list")
def profile_list(name: str | None = None, output: Format = OutputOption) -> None:
    items = Client.from_config().list_all("/api/v1/profiles", {"name": name}, None)
    render(items, output, PROFILE_COLUMNS)


@profile_app.command("delete")
def profile_delete(name: str, version: str) -> None:
    Client.from_config().request("DELETE", f"/api/v1/profiles/{name}/{version}")
    typer.echo(f"profile {name}@{version} deleted")


# Hosts: life-cycle verbs ------------------------------------------------------------------


def _set_pool(name: str, pool: str | None, output: Format) -> None:
    client = Client.from_config()
    host = client.request("GET", f"/api/v1/hosts/{name}")
    body = {"resourceVersion": host["resourceVersion"], "spec": {**host["spec"], "pool": pool}}
    render(client.request("PUT", f"/api/v1/hosts/{name}", json=body), output, HOST.columns)


@host_app.command("assign")
def host_assign(
    name: str, pool: str = typer.Option(..., help="Pool to join."), output: Format = OutputOption
) -> None:
    """Assign a Ready host to a pool of its site."""
    _set_pool(name, pool, output)


@host_app.command("release")
def host_release(name: str, output: Format = OutputOption) -> None:
    """Take a host out of its pool."""
    _set_pool(name, None, output)


@host_app.command("reset")
def host_reset(name: str, output: Format = OutputOption) -> None:
    """Return an unassigned host to Registered."""
    render(
        Client.from_config().request("POST", f"/api/v1/hosts/{name}/reset"), output, HOST.columns
    )


# Events ---------------------------------------------------------------------------------


@event_app.command("list")
def event_list(
    kind: str | None = typer.Option(None, help="Cluster, Site, Pool, Host, Profile, Rollout."),
    name: str | None = typer.Option(None, help="Object name."),
    type: str | None = typer.Option(None, help="Normal or Warning."),
    pool: str | None = typer.Option(None, help="A pool's events and its hosts' and rollouts'."),
    limit: int = typer.Option(200, min=1, max=1000, help="The newest this many events."),
    output: Format = OutputOption,
) -> None:
    """The newest events (a repeat counts as new), oldest of them first, like a log's tail."""
    params = {"kind": kind, "name": name, "type": type, "pool": pool}
    page = Client.from_config().request(
        "GET",
        "/api/v1/events",
        params={**{k: v for k, v in params.items() if v}, "order": "newest", "limit": limit},
    )
    render(page["items"][::-1], output, EVENT_COLUMNS, EVENT_WIDE)


@app.command("attention")
def attention(output: Format = OutputOption) -> None:
    """What needs a person: failed plans, Unhealthy or Unreachable hosts, Nodes not Ready,
    failed or stuck rollouts (the dashboard's count). Exit 0 either way."""
    found = Client.from_config().request("GET", "/api/v1/attention")
    if not output.tabular:
        render(found, output)
        return
    if found["count"]:
        render(found["items"], output, ATTENTION_COLUMNS)
    console.print(f"{found['count']} need attention", highlight=False)


@event_app.command("watch")
def event_watch(
    kind: str | None = typer.Option(None, help="Cluster, Site, Pool, Host, Profile, Rollout."),
    name: str | None = typer.Option(None, help="Object name."),
    pool: str | None = typer.Option(None, help="A pool's events and its hosts' and rollouts'."),
    timeout: float | None = typer.Option(None, help="Stop after this many seconds."),
) -> None:
    """Stream events as they happen (server-sent events), one JSON object per line."""
    params: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "pool": pool,
        "timeoutSeconds": timeout,
    }
    params = {k: v for k, v in params.items() if v is not None}
    for line in Client.from_config().stream_lines("/api/v1/events/stream", params):
        if line.startswith("data: "):
            typer.echo(json.dumps(json.loads(line[6:])))


def main() -> None:
    light_help()
    try:
        app()
    except CLIError as exc:
        errors.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        sys.exit(exc.exit_code)
    except PlaneError as exc:  # raised by commands that work on the database directly
        errors.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        sys.exit(EXIT_CODES.get(exc.status, 1))
