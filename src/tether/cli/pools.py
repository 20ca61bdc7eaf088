"""Pools that run themselves, from the command line: members, rollouts, profile diffs.

``tether pool add-host|remove-host|rollout``, ``tether rollout ...`` and
``tether profile diff``. Exit codes are the CLI's (docs/cli.md); ``rollout watch`` exits
0 when the rollout completes and 1 when it fails or is aborted.
"""

from __future__ import annotations

import time

import typer

from tether.cli.client import Client, CLIError
from tether.cli.output import Column, Format, OutputOption, console, field, progress, render
from tether.cli.resources import HOST

ROLLOUT_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("POOL", field("pool")),
    ("STATE", field("state")),
    ("FROM", field("fromVersion")),
    ("TO", field("toVersion")),
    ("ACTION", field("action")),
    (
        "PROGRESS",
        lambda r: (
            f"{r['progress'].get('updated', 0)}/{r['progress'].get('total', len(r['nodes']))}"
        ),
    ),
    ("MESSAGE", field("message")),
]
CHANGE_COLUMNS: list[Column] = [
    ("FIELD", field("field")),
    ("ACTION", field("action")),
    ("OLD", field("old")),
    ("NEW", field("new")),
    ("WHY", field("why")),
]
#: Rollout states after which nothing more happens (watch stops).
_ENDED = {"Completed": 0, "Failed": 1, "Aborted": 1, "Superseded": 1}

rollout_app = typer.Typer(
    help="Rollouts of pools to profile versions (need approval).", no_args_is_help=True
)


def register(root: typer.Typer, pool_app: typer.Typer, profile_app: typer.Typer) -> None:
    """Mount these commands on ``tether``, ``tether pool`` and ``tether profile``."""
    pool_app.command("add-host")(add_host)
    pool_app.command("remove-host")(remove_host)
    pool_app.command("rollout")(pool_rollout)
    pool_app.command("status")(pool_status)
    profile_app.command("diff")(profile_diff)
    root.add_typer(rollout_app, name="rollout")


def add_host(pool: str, host: str, output: Format = OutputOption) -> None:
    """Add a Ready host of the pool's site; the pool joins it (plan, then a Ready Node)."""
    body = {"host": host}
    render(
        Client.from_config().request("POST", f"/api/v1/pools/{pool}/hosts", json=body),
        output,
        HOST.columns,
    )


def remove_host(pool: str, host: str, output: Format = OutputOption) -> None:
    """Take a host out: cordon, drain, uninstall, delete its Node; then it is Ready again."""
    render(
        Client.from_config().request("DELETE", f"/api/v1/pools/{pool}/hosts/{host}"),
        output,
        HOST.columns,
    )


def pool_rollout(
    pool: str,
    to: str = typer.Option(..., "--to", help="The profile version to roll the pool to."),
    output: Format = OutputOption,
) -> None:
    """Make a rollout of POOL to a profile version; it waits for approval."""
    made = Client.from_config().request("POST", f"/api/v1/pools/{pool}/rollouts", json={"to": to})
    if not output.tabular:
        render(made, output)
        return
    _show_rollout(made, output)
    console.print(f"approve it with: tether rollout approve {made['name']}", highlight=False)


def pool_status(pool: str, output: Format = OutputOption) -> None:
    """A pool's state, conditions (with reasons), counts and available update."""
    item = Client.from_config().request("GET", f"/api/v1/pools/{pool}")
    if not output.tabular:
        render(item["status"], output)
        return
    status = item["status"]
    console.print(f"pool {pool}: {status['state']}  {status.get('counts', {})}", highlight=False)
    render(
        status.get("conditions", []),
        output,
        [
            ("TYPE", field("type")),
            ("STATUS", field("status")),
            ("REASON", field("reason")),
            ("MESSAGE", field("message")),
        ],
    )
    update = status.get("update")
    if update:
        console.print(
            f"update available: {update['version']} ({update['action']}): "
            f"tether pool rollout {pool} --to {update['version']}",
            highlight=False,
        )


def profile_diff(name: str, old: str, new: str, output: Format = OutputOption) -> None:
    """Every field that changes between two versions of a profile, and the action it needs."""
    diff = Client.from_config().request(
        "GET", f"/api/v1/profiles/{name}/diff", params={"from": old, "to": new}
    )
    if not output.tabular:
        render(diff, output)
        return
    render(diff["changes"], output, CHANGE_COLUMNS)
    console.print(
        f"{name} {old} -> {new}: {len(diff['changes'])} change(s); a rollout would "
        f"{diff['action']}",
        highlight=False,
    )


def _show_rollout(item: dict[str, object], fmt: Format) -> None:
    render(item, fmt, ROLLOUT_COLUMNS)
    changes = item.get("changes") or []
    if changes:
        render(changes, fmt, CHANGE_COLUMNS)
    nodes = item.get("nodes") or {}
    if isinstance(nodes, dict) and nodes:
        render(
            [{"node": k, "action": v} for k, v in nodes.items()],
            fmt,
            [("NODE", field("node")), ("ACTION", field("action"))],
        )


@rollout_app.command("list")
def rollout_list(
    pool: str | None = typer.Option(None, help="Only this pool's rollouts."),
    state: str | None = typer.Option(None, help="Only rollouts in this state."),
    output: Format = OutputOption,
) -> None:
    items = Client.from_config().list_all("/api/v1/rollouts", {"pool": pool, "state": state}, None)
    render(items, output, ROLLOUT_COLUMNS)


@rollout_app.command("get")
def rollout_get(name: str, output: Format = OutputOption) -> None:
    item = Client.from_config().request("GET", f"/api/v1/rollouts/{name}")
    if output.tabular:
        _show_rollout(item, output)
    else:
        render(item, output)


def _verb(verb: str, help: str) -> None:
    def command(name: str, output: Format = OutputOption) -> None:
        item = Client.from_config().request("POST", f"/api/v1/rollouts/{name}/{verb}")
        render(item, output, ROLLOUT_COLUMNS)

    command.__doc__ = help
    rollout_app.command(verb)(command)


_verb("approve", "Approve a rollout: the pool moves to its version under its update strategy.")
_verb("pause", "Pause a rollout: nodes being updated finish, no new node starts.")
_verb("resume", "Resume a paused rollout, or a failed one (its failed nodes are retried).")
_verb("abort", "Abort a rollout: nodes being updated finish, nothing else changes.")
_verb("rollback", "Roll the pool back to the version this rollout started from (approved).")


@rollout_app.command("watch")
def rollout_watch(
    name: str,
    interval: float = typer.Option(1.0, help="Seconds between looks."),
    timeout: float | None = typer.Option(None, help="Give up after this many seconds."),
) -> None:
    """Follow a rollout with a progress bar until it ends (exit 0: completed)."""
    client = Client.from_config()
    started = time.monotonic()
    with progress(name) as bar:
        while True:
            item = client.request("GET", f"/api/v1/rollouts/{name}")
            done = item["progress"].get("updated", 0)
            total = item["progress"].get("total") or len(item["nodes"]) or None
            busy = item["progress"].get("busy") or {}
            doing = ", ".join(f"{h}: {s}" for h, s in list(busy.items())[:3])
            waiting = item["progress"].get("waiting") or ""
            state = item["state"]
            bar.update(
                completed=done, total=total, description=f"{name} {state}", note=doing or waiting
            )
            if state in _ENDED:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise CLIError(f"rollout {name} is still {state} after {timeout:g}s", 1)
            time.sleep(interval)
    console.print(f"rollout {name}: {state} {item['message']}".rstrip(), highlight=False)
    if _ENDED[state]:
        raise typer.Exit(_ENDED[state])
