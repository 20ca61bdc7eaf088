"""CLI for host bootstrap: activations, the trust anchor, the agent, seed images, demo agents.

Hook into ``tether.cli.main`` (see the module's ``register`` function)::

    from tether.cli import bootstrap
    bootstrap.register(app, site_app=..., host_app=host_app)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tether.cli.client import Client, CLIError
from tether.cli.output import Format, OutputOption, field, render
from tether.cli.resources import read_yaml
from tether.files import write_atomic

if TYPE_CHECKING:
    from tether.services.trust import PlaneTrust

activation_app = typer.Typer(
    help="Activations: credentials hosts enrol with.", no_args_is_help=True
)
pki_app = typer.Typer(help="The trust anchor (runs on the plane's host).", no_args_is_help=True)
agent_app = typer.Typer(help="The edge agent (runs on each host).", no_args_is_help=True)

ACTIVATION_COLUMNS = [
    ("ID", field("id")),
    ("SITE", field("site")),
    ("STATE", field("state")),
    ("USED", field("registrations")),
    ("MAX", field("maxRegistrations")),
    ("LEFT", field("remaining")),
    ("EXPIRES", field("expiresAt")),
]
DataOpt = typer.Option(None, "--data-dir", help="Data directory (TETHER_DATA_DIR).")


def _duration(text: str, what: str) -> timedelta:
    from tether.domain.agent import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CLIError(f"{what}: {exc}", 7) from None


# Activations -------------------------------------------------------------------------------


def _create_activation(site: str, expires: str, max_registrations: int) -> dict[str, object]:
    body = {"site": site, "expiresIn": expires, "maxRegistrations": max_registrations}
    result: dict[str, object] = Client.from_config().request(
        "POST", "/api/v1/activations", json=body
    )
    return result


@activation_app.command("create")
def activation_create(
    site: str = typer.Option(..., help="Site the hosts belong to."),
    expires: str = typer.Option("24h", help="Lifetime: 30m, 24h, 7d ... at most 30d."),
    max_registrations: int = typer.Option(1, help="How many hosts may enrol with it."),
    output: Format = OutputOption,
) -> None:
    """Create an activation and print its id and code. The code is shown only now."""
    created = _create_activation(site, expires, max_registrations)
    if output.tabular:
        typer.echo(f"id:      {created['id']}")
        typer.echo(f"code:    {created['code']}")
        typer.echo(f"site:    {created['site']}  expires: {created['expiresAt']}")
        typer.echo(f"uses:    {created['maxRegistrations']}")
        typer.echo("The code is shown once and stored only as a hash: keep it now.", err=True)
    else:
        render(created, output, ACTIVATION_COLUMNS)


@activation_app.command("list")
def activation_list(
    site: str | None = typer.Option(None, help="Only this site."), output: Format = OutputOption
) -> None:
    """Activations with their state and uses left."""
    params = {"site": site} if site else {}
    items = Client.from_config().request("GET", "/api/v1/activations", params=params)["items"]
    render(items, output, ACTIVATION_COLUMNS)


@activation_app.command("get")
def activation_get(activation_id: str, output: Format = OutputOption) -> None:
    render(
        Client.from_config().request("GET", f"/api/v1/activations/{activation_id}"),
        output,
        ACTIVATION_COLUMNS,
    )


@activation_app.command("revoke")
def activation_revoke(activation_id: str, output: Format = OutputOption) -> None:
    """Revoke an activation: no more hosts can enrol with it."""
    render(
        Client.from_config().request("DELETE", f"/api/v1/activations/{activation_id}"),
        output,
        ACTIVATION_COLUMNS,
    )


# The trust anchor (direct access to the data directory) ------------------------------------


def _trust(data_dir: Path | None) -> PlaneTrust:
    from tether.services.trust import PlaneTrust
    from tether.settings import load_settings

    settings = load_settings()
    if data_dir is not None:
        settings.paths.data_dir = data_dir
    return PlaneTrust(settings)


@pki_app.command("status")
def pki_status(data_dir: Path | None = DataOpt) -> None:
    """The active CA, previous CAs in their overlap, the agent server certificate."""
    trust = _trust(data_dir)
    active = trust.anchor.active
    typer.echo(f"CA directory: {trust.ca_dir}")
    typer.echo(
        f"active CA:    {active.fingerprint[:16]}  {active.subject.rfc4514_string()}  "
        f"until {active.not_after:%Y-%m-%d}"
    )
    for prev in trust.anchor.bundle.previous:
        typer.echo(
            f"previous CA:  {prev.authority.fingerprint[:16]}  trusted until "
            f"{prev.overlap_until.isoformat()}"
        )
    server = trust.dir / "server.crt"
    if server.exists():
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(server.read_bytes())
        signer = next((ca for ca in trust.anchor.bundle.authorities() if ca.signed(cert)), None)
        typer.echo(
            f"server cert:  issued by {signer.fingerprint[:16] if signer else 'unknown CA'}, "
            f"until {cert.not_valid_after_utc.isoformat()}"
        )


@pki_app.command("import")
def pki_import(
    cert: Path = typer.Option(..., help="CA certificate (PEM)."),
    key: Path = typer.Option(..., help="CA private key (PEM)."),
    password_file: Path | None = typer.Option(None, help="File holding the key's passphrase."),
    overlap: str = typer.Option("48h", help="If a CA exists: how long it stays trusted."),
    data_dir: Path | None = DataOpt,
) -> None:
    """Use a CA from your own PKI. With a CA already in place this is a rotation."""
    from tether.pki import TrustAnchor
    from tether.pki.authority import CertificateAuthority
    from tether.pki.errors import PKIError
    from tether.pki.store import has_bundle
    from tether.settings import load_settings
    from tether.store.schema import utcnow

    settings = load_settings()
    if data_dir is not None:
        settings.paths.data_dir = data_dir
    password = password_file.read_bytes().strip() if password_file else None
    ca_dir = settings.pki_dir / "ca"
    try:
        if not has_bundle(ca_dir):
            anchor = TrustAnchor.import_files(cert, key, utcnow(), password=password)
            anchor.save(ca_dir)
            typer.echo(f"imported CA {anchor.active.fingerprint[:16]} into {ca_dir}")
            return
        new_ca = CertificateAuthority.from_pem(
            cert.read_bytes(), key.read_bytes(), utcnow(), password=password
        )
        trust = _trust(data_dir)
        fp = trust.rotate(_duration(overlap, "--overlap"), new_ca)
    except (PKIError, OSError) as exc:
        raise CLIError(f"import refused: {exc}", 7) from None
    typer.echo(f"rotated to imported CA {fp[:16]}; the previous CA stays trusted for {overlap}")


@pki_app.command("rotate")
def pki_rotate(
    overlap: str = typer.Option("48h", help="How long the old CA stays trusted."),
    data_dir: Path | None = DataOpt,
) -> None:
    """Generate a new CA; the old one stays trusted for the overlap (see docs/pki.md)."""
    from tether.pki.errors import PKIError

    trust = _trust(data_dir)
    old = trust.anchor.active.fingerprint
    try:
        fp = trust.rotate(_duration(overlap, "--overlap"))
    except PKIError as exc:
        raise CLIError(f"rotation refused: {exc}", 7) from None
    typer.echo(f"new active CA {fp[:16]}; CA {old[:16]} trusted for {overlap} more")
    typer.echo(
        "Next: let hosts renew (one certificate lifetime), then "
        "'tether pki server-cert --reissue'; running planes pick the change up by themselves."
    )


@pki_app.command("server-cert")
def pki_server_cert(
    reissue: bool = typer.Option(False, help="Issue a new one from the active CA now."),
    data_dir: Path | None = DataOpt,
) -> None:
    """Show (or re-issue) the agent server's TLS certificate."""
    files = _trust(data_dir).server_files(reissue=reissue)
    typer.echo(f"{'re-issued' if reissue else 'current'}: {files.cert}")


@pki_app.command("prune")
def pki_prune(data_dir: Path | None = DataOpt) -> None:
    """Delete previous CAs whose overlap has ended (their keys too)."""
    typer.echo(f"pruned {_trust(data_dir).prune()} CA(s)")


@pki_app.command("crl")
def pki_crl(out: Path | None = typer.Option(None, help="Write here instead of stdout.")) -> None:
    """The CRL bundle from the plane (PEM)."""
    response = Client.from_config().send("GET", "/api/v1/pki/crl")
    if out:
        out.write_bytes(response.content)
    else:
        sys.stdout.write(response.text)


# The agent -----------------------------------------------------------------------------------

ConfigOpt = typer.Option(Path("/etc/tether/agent.yaml"), "--config", help="Agent config file.")


@agent_app.command("run")
def agent_run(config: Path = ConfigOpt, log_level: str = typer.Option("INFO")) -> None:
    """Run the agent: enrol once, then heartbeat, renew and apply desired state."""
    from tether.agent import main as agent_main

    agent_main.setup_logging(log_level)
    raise typer.Exit(agent_main.run(config))


@agent_app.command("reset")
def agent_reset(config: Path = ConfigOpt) -> None:
    """Forget this host's enrolment so the agent enrols again on its next start."""
    from tether.agent import main as agent_main

    raise typer.Exit(agent_main.reset(config))


@agent_app.command("inventory")
def agent_inventory() -> None:
    """Print the inventory the agent reports."""
    from tether.agent import inventory

    typer.echo(json.dumps(inventory.collect().model_dump(mode="json", by_alias=True), indent=2))


# Sites: seed images ----------------------------------------------------------------------------


def site_seed(
    site: str = typer.Option(..., help="The site the hosts belong to."),
    activation: str | None = typer.Option(None, help="Activation id (else one is created)."),
    code: str | None = typer.Option(None, help="Its code (with --activation)."),
    expires: str = typer.Option("7d", help="Lifetime of a created activation."),
    max_registrations: int = typer.Option(10, help="Uses of a created activation."),
    out: Path = typer.Option(..., help="Directory for user-data, meta-data and seed.iso."),
    agent_url: str | None = typer.Option(None, help="Agent server URL (default: the plane's)."),
    address: str | None = typer.Option(
        None, help="Static address with prefix, like 10.0.0.5/24 (one host); default DHCP."
    ),
    gateway: str | None = typer.Option(None, help="Default gateway (with --address)."),
    dns: list[str] = typer.Option([], help="DNS server (with --address; repeat for more)."),
    interface: str = typer.Option(
        "eth0", help="Interface to configure (Tether images name the first NIC eth0)."
    ),
    install: str | None = typer.Option(
        None,
        help="Shell command that installs the agent into /opt/tether, for an OS not built "
        "by `tether image build` (default: the image carries the agent).",
    ),
) -> None:
    """Write a cloud-init NoCloud seed (files and an ISO labelled cidata) for a site."""
    from tether.services import seed

    if (activation is None) != (code is None):
        raise CLIError("give both --activation and --code, or neither (to create one)", 2)
    if address is None and (gateway is not None or dns):
        raise CLIError("--gateway and --dns need --address (with DHCP the network gives them)", 2)
    static = None if address is None else seed.StaticAddress(address, gateway, tuple(dns))
    problems = seed.interface_problems(interface)
    problems += [] if static is None else seed.static_address_problems(static)
    if problems:
        raise CLIError("; ".join(f"--{option}: {rule}" for option, rule in problems), 2)
    if activation is None:
        created = _create_activation(site, expires, max_registrations)
        activation, code = str(created["id"]), str(created["code"])
        typer.echo(f"created activation {activation} ({max_registrations} uses, {expires})")
    assert code is not None
    info = Client.from_config().request("GET", "/api/v1/pki/bootstrap")
    files = seed.seed_files(
        agent_url=agent_url or info["agentURL"],
        ca_bundle=info["caBundle"],
        activation_id=activation,
        code=code,
        site=site,
        static=static,
        interface=interface,
        install=install,
    )
    for path in seed.write_seed(out, files):
        typer.echo(f"wrote {path}")
    typer.echo("user-data and seed.iso hold the activation code: keep them like a password.")


# Hosts -----------------------------------------------------------------------------------------


def host_reset_enrolment(name: str, output: Format = OutputOption) -> None:
    """Reset a host (not in a pool), revoke its certificates and let it enrol again."""
    from tether.cli.resources import HOST

    render(
        Client.from_config().request("POST", f"/api/v1/hosts/{name}/reset-enrolment"),
        output,
        HOST.columns,
    )


def host_revoke_certificates(name: str) -> None:
    """Revoke a host's certificates now (its key may have leaked)."""
    result = Client.from_config().request("POST", f"/api/v1/hosts/{name}/revoke-certificates")
    typer.echo(f"revoked {result['revoked']} certificate(s) of {name}")


def host_set_desired(
    name: str, file: Path = typer.Option(..., "--file", "-f", help="YAML or JSON document.")
) -> None:
    """Store a host's desired-state document; its agent applies it."""
    document = read_yaml(file)
    result = Client.from_config().request(
        "PUT", f"/api/v1/hosts/{name}/desired", json={"document": document}
    )
    typer.echo(f"desired state of {name}: {result['hash'][:12]}")


def host_get_desired(name: str, output: Format = OutputOption) -> None:
    """A host's desired state and what its agent last applied."""
    columns = [
        ("HOST", field("host")),
        ("HASH", lambda d: d["hash"][:12]),
        ("APPLIED", lambda d: (d.get("appliedHash") or "")[:12]),
        ("IN SYNC", field("inSync")),
    ]
    render(Client.from_config().request("GET", f"/api/v1/hosts/{name}/desired"), output, columns)


# Demo: real agents as local processes ------------------------------------------------------------


def demo_agents(
    settings: object,
    *,
    count: int = 3,
    site: str = "dc1",
    directory: Path | None = None,
    heartbeat_seconds: float = 5.0,
    simulate_kubelet: Path | None = None,
    keyring: Path | None = None,
    addresses: Callable[[int], list[str]] = lambda _: [],
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` real agents (``tether agent run`` processes) enrolling at ``site``.

    Creates an activation for ``2 * count`` enrolments (one re-image each) straight in the
    database, writes one config per agent under ``<data dir>/demo-agents/`` and starts the
    processes; the caller stops them (``terminate()``). Agents that enrolled before keep
    their identity.

    With ``simulate_kubelet`` (a kubeconfig) they run as the SIMULATED agent
    (:mod:`tether.sim.agent`): node plans act under ``<agent dir>/root`` and start a
    simulated kubelet; ``keyring`` verifies the plane's artifact manifest; ``addresses(n)``
    are the SIMULATED interface addresses agent ``n`` reports (its node IP).
    """
    import yaml

    from tether.domain.agent import ActivationCreate
    from tether.processes import die_with_parent
    from tether.services import activations
    from tether.services.trust import PlaneTrust
    from tether.settings import Settings
    from tether.store.db import Database, migrate

    assert isinstance(settings, Settings)
    base = directory or settings.paths.data_dir / "demo-agents"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database.connect(settings.database_url)
    migrate(db.engine)
    PlaneTrust(settings).server_files()
    with db.session() as session:
        issued = activations.create(
            session,
            # Twice the hosts: each may enrol again after a (SIMULATED) re-image.
            ActivationCreate(site=site, expires_in="24h", max_registrations=2 * count),
            actor="tether demo",
        )
    db.dispose()
    code_path = base / f"activation-code-{site}"  # one per site: demos start several
    write_atomic(code_path, issued.code + "\n", 0o600)
    processes = []
    for n in range(1, count + 1):
        name = f"{site}-agent{n}"
        cfg = {
            "server": f"https://127.0.0.1:{settings.agent.port}",
            "caFile": str(settings.pki_dir / "ca" / "active" / "ca.crt"),
            "stateDir": str(base / name),
            "name": name,
            "activation": {"id": issued.id, "codeFile": str(code_path)},
            "tags": {"static": {"demo": "true", "tether.io/site": site}},
            "heartbeatSeconds": heartbeat_seconds,
        }
        argv = ["-m", "tether.agent", "run", "--config"]
        if simulate_kubelet is not None:
            cfg["node"] = {"root": str(base / name / "root"), "keyring": str(keyring)}
            argv = ["-m", "tether.sim.agent", "--kubeconfig", str(simulate_kubelet)]
            argv += [f"--address={a}" for a in addresses(n)] + ["--config"]
        path = base / f"{name}.yaml"
        write_atomic(path, yaml.safe_dump(cfg), 0o600)
        log = (base / f"{name}.log").open("ab")
        processes.append(
            subprocess.Popen(
                [sys.executable, *argv, str(path)],
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,  # a killed demo leaves no agents behind
            )
        )
    time.sleep(0.1)
    return processes


def register(app: typer.Typer, *, site_app: typer.Typer, host_app: typer.Typer) -> None:
    """Add these commands to the ``tether`` CLI."""
    app.add_typer(activation_app, name="activation")
    app.add_typer(pki_app, name="pki")
    app.add_typer(agent_app, name="agent")
    site_app.command("seed")(site_seed)
    host_app.command("reset-enrolment")(host_reset_enrolment)
    host_app.command("revoke-certificates")(host_revoke_certificates)
    host_app.command("set-desired")(host_set_desired)
    host_app.command("get-desired")(host_get_desired)


__all__ = ["demo_agents", "register"]
