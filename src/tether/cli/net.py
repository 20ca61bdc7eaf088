"""``tether net``: check a HybridNetwork document, plan it, try it on a testbed.

Exit codes: 0 ok, 1 the document has errors (or the testbed failed), 2 usage errors,
an unreadable file or a machine that cannot run the testbed.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any

import typer
import yaml
from rich.markup import escape

from tether.cli.lazy import help_of
from tether.cli.output import (
    Format,
    OutputOption,
    console,
    errors,
    field,
    progress,
    render,
    table,
)
from tether.files import (
    parse_yaml_or_json,
    sync_filesystem,
    write_atomic,
    write_many,
    write_tree,
)
from tether.netplan import (
    Finding,
    Plan,
    Recipe,
    Resolved,
    check_data,
    check_document,
    has_errors,
    load_document,
    parse_allocations,
    plan_checked,
    psk_ids,
)
from tether.netplan.addresses import collector_paused
from tether.netplan.render import jsontext

app = typer.Typer(help=help_of("net"), no_args_is_help=True)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

#: Where ``plan`` keeps the tunnels' pre-shared keys between runs (mode 0600).
PSK_STORE = "psks.json"
#: Every file ``plan`` wrote into --out, one relative path a line: the next run removes
#: those it does not write again (a pool left the document), and nothing else.
MANIFEST = ".tether-plan-files"

FINDING_COLUMNS = [
    ("SEVERITY", field("severity")),
    ("RULE", field("rule")),
    ("PATH", field("path")),
    ("MESSAGE", field("message")),
]
SUMMARY_COLUMNS = [
    ("POOL", field("pool")),
    ("SITE", field("site")),
    ("ROUTING", field("routing")),
    ("NODES", field("nodes")),
    ("NODE CIDR", field("nodeCIDR")),
    ("POD CIDR", field("podCIDR")),
    ("POD BLOCKS", field("podBlocks")),
    ("VPN SERVER", field("vpnServer")),
]
PROBE_COLUMNS = [
    ("POOL", field("pool")),
    ("NODE", field("node")),
    ("KIND", field("kind")),
    ("ADDRESS", field("address")),
    ("RESULT", lambda p: "reachable" if p["ok"] else "UNREACHABLE"),
]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def read_document(path: str) -> Any:
    """Read a YAML or JSON document from ``path`` (``-`` for standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(f"cannot read {path}: {error}") from error
    try:
        return parse_yaml_or_json(text)
    except yaml.YAMLError as error:
        raise _fail(f"{path} is neither YAML nor JSON: {error}") from error


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, Any]]) -> None:
    """A table whose cells wrap instead of being cut (addresses must stay whole).

    Cells are plain text, never Rich markup: ``pools[dc1]`` would read as a style tag."""
    table(
        [header for header, _ in columns],
        [["-" if (v := get(row)) is None else str(v) for _, get in columns] for row in rows],
        markup=False,
        fold=True,
    )


def _show_findings(findings: list[Finding], fmt: Format) -> None:
    data = [f.as_dict() for f in findings]
    if not fmt.tabular:
        render(data, fmt)
        return
    if findings:
        _table(data, FINDING_COLUMNS)
    n_err = sum(1 for f in findings if f.is_error)
    verdict = "[red]invalid[/red]" if n_err else "[green]valid[/green]"
    console.print(f"{verdict}: {n_err} error(s), {len(findings) - n_err} warning(s)")


def _load_checked(path: str, fmt: Format) -> tuple[Resolved, list[Finding]]:
    """Read and check ``path``; exit 1 (after showing the findings) when it has errors.

    The parsed view is returned with the findings, for planning without checking again."""
    data = read_document(path)
    doc, findings = load_document(data)
    if doc is None:
        _show_findings(check_data(data), fmt)
        raise typer.Exit(EXIT_INVALID)
    resolved, findings = check_document(doc)
    if has_errors(findings):
        _show_findings(findings, fmt)
        raise typer.Exit(EXIT_INVALID)
    return resolved, findings


@app.command("check")
def check_command(
    file: str = typer.Argument(..., help="HybridNetwork document (YAML or JSON; - for stdin)."),
    output: Format = OutputOption,
) -> None:
    """Check a HybridNetwork document: every rule, all findings at once."""
    with collector_paused():  # one burst of objects, as for plan_command
        findings = check_data(read_document(file))
    _show_findings(findings, output)
    raise typer.Exit(EXIT_INVALID if has_errors(findings) else EXIT_OK)


# Plan ----------------------------------------------------------------------------------


def _load_psks(store: Path) -> dict[str, str]:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise _fail(f"cannot read the key store {store}: {error}") from error
    if not isinstance(data, Mapping):
        raise _fail(f"the key store {store} is not a JSON object")
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str) and v}


#: A first plan of at least this many pool files renders and writes most of them in a
#: forked second process while this one does the cluster's files (:func:`write_plan`);
#: a small plan is not worth a fork.
FORK_MIN_FILES = 3000
#: This process writes one in this many of the pools' files too: 10,000 pools on tmpfs,
#: with the child writing all 60,000 it took about 1.65 s and this process about 1.05 s
#: for the cluster's; with a fifth of them here, about 1.2 to 1.4 s each.
PARENT_SHARE = 5


def write_plan(result: Plan, out: Path, psks: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Write every file of ``result`` under ``out`` (secrets 0600, scripts 0755) and
    remove what the previous plan wrote there and this one does not; the written and
    the removed paths.

    A first plan (no ``out`` yet) is written as one tree and renamed into place
    (:func:`write_tree`): a crash leaves no ``out`` or the whole plan. A big one has
    most of its pools' files rendered and written by a forked process
    (:data:`FORK_MIN_FILES`) while this one renders and writes the cluster's. Into an
    existing ``out`` files are replaced one by one (never half-written), beside
    whatever else lives there. Either way only the output's filesystem is synced, once,
    not each file: a 10,000-pool plan is 60,000 files."""
    recipes = result.recipes()
    secret = result.secret_files()
    written = sorted(path for path, _, _ in recipes)

    def mode(rel: str) -> int:
        return 0o600 if rel in secret else 0o755 if rel.endswith(".sh") else 0o644

    store = (PSK_STORE, jsontext.dumps_plain(dict(psks)) + "\n", 0o600)
    manifest = (MANIFEST, "".join(f"{rel}\n" for rel in written), 0o644)
    if not os.path.lexists(out):
        pools: list[Recipe] = []
        cluster: list[Recipe] = []
        for recipe in recipes:
            (pools if recipe[0].startswith("pools/") else cluster).append(recipe)
        if len(pools) < FORK_MIN_FILES:
            write_tree(out, [*_rendered(recipes, mode), store, manifest])
        else:
            # Both lists are rendered as they are written, at the same time: here the
            # cluster's files and the first fifth of the pools', the rest in the child.
            share = len(pools) // PARENT_SHARE
            write_tree(
                out,
                chain(_rendered(cluster + pools[:share], mode), [store, manifest]),
                beside=_rendered(pools[share:], mode),
            )
        return written, []
    write_many(out, list(_rendered(recipes, mode)))  # a rendering error writes nothing
    write_atomic(out / store[0], store[1], store[2], dir_mode=None, sync=False)
    removed = _remove_stale(out, _read_manifest(out), set(written))
    write_atomic(out / manifest[0], manifest[1], manifest[2], sync=False)
    sync_filesystem(out)
    return written, removed


def _rendered(
    recipes: Iterable[Recipe], mode: Callable[[str], int]
) -> Iterator[tuple[str, str, int]]:
    """Each file of ``recipes`` rendered, as ``(path, text, mode)``, one at a time."""
    for path, make, args in recipes:
        yield path, make(*args), mode(path)


def _read_manifest(out: Path) -> list[str]:
    try:
        return (out / MANIFEST).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []  # a first plan, or one written before the manifest: nothing is removed


def _remove_stale(out: Path, previous: list[str], current: set[str]) -> list[str]:
    """Remove the files of ``previous`` (the last manifest) not in ``current``, and the
    folders that leaves empty. Only plain relative paths inside ``out`` are touched,
    never through a symbolic link; a folder holding anything else stays."""
    removed = []
    for rel in sorted(set(previous) - current):
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            continue
        folders = [out.joinpath(*parts[:i]) for i in range(1, len(parts))]
        if any(folder.is_symlink() for folder in folders):
            continue
        try:
            out.joinpath(*parts).unlink()
        except FileNotFoundError:
            continue
        removed.append(rel)
        for folder in reversed(folders):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: something else lives there
    return removed


@app.command("plan")
def plan_command(
    file: str = typer.Argument(..., help="HybridNetwork document (YAML or JSON; - for stdin)."),
    out: Path = typer.Option(..., "--out", help="Directory to write the plan into."),
    previous: Path | None = typer.Option(
        None,
        "--previous",
        help="allocations.json of an earlier plan (default: the one in --out, if any).",
    ),
    output: Format = OutputOption,
) -> None:
    """Plan the network: allocations, routes, VPN, BGP and CNI configs, written to --out.

    Pre-shared keys are generated once, kept in OUT/psks.json (mode 0600) and reused
    next time; node pod CIDRs from OUT/allocations.json are kept.
    """
    # The document, the plan and its files are one burst of objects that live until the
    # command ends and hold no garbage cycles. Checking, planning and rendering pause the
    # collector, but each time it ran again its first passes walked everything built
    # meanwhile, twice or more: 1.0 s of CPU for 10,000 pools.
    with collector_paused():
        _plan(file, out, previous, output)


def _plan(file: str, out: Path, previous: Path | None, output: Format) -> None:
    """``plan_command``'s work (see there)."""
    resolved, findings = _load_checked(file, output)
    doc = resolved.doc
    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} exists and is not a directory")
    prev_path = previous if previous is not None else out / "allocations.json"
    prev: dict[str, str] = {}
    if prev_path.exists():
        try:
            prev = parse_allocations(json.loads(prev_path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise _fail(f"cannot read {prev_path}: {error}") from error
    elif previous is not None:
        raise _fail(f"--previous {previous} does not exist")

    stored = _load_psks(out / PSK_STORE)
    psks = {i: stored.get(i) or secrets.token_hex(32) for i in psk_ids(doc)}
    result = plan_checked(resolved, findings, psks, prev)
    try:
        written, removed = write_plan(result, out, psks)
    except OSError as error:
        raise _fail(f"cannot write the plan into {out}: {error}") from error

    secret = sorted(result.secret_files())
    if output.tabular:
        _table(result.summary(), SUMMARY_COLUMNS)
        for warning in result.warnings:
            errors.print(f"[yellow]warning:[/yellow] {escape(warning.text)}", highlight=False)
        moved = sum(1 for p in result.pools for n in p.nodes if n.source.value == "allocated")
        console.print(
            f"wrote {len(written)} files to {out} ({len(secret)} with keys, mode 0600; "
            f"keys kept in {out / PSK_STORE}); {moved} node pod CIDR(s) newly allocated; "
            f"removed {len(removed)} file(s) an earlier plan wrote that this one does not",
            highlight=False,
        )
    else:
        render(
            {
                "out": str(out),
                "summary": result.summary(),
                "files": written,
                "removedFiles": removed,
                "secretFiles": secret,
                "allocations": result.allocations(),
                "warnings": [w.as_dict() for w in result.warnings],
            },
            output,
        )


# Testbed -------------------------------------------------------------------------------


@app.command("testbed")
def try_command(
    file: str = typer.Argument(..., help="HybridNetwork document (YAML or JSON; - for stdin)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for tunnels and BGP."),
    output: Format = OutputOption,
) -> None:
    """Try a plan for real in network namespaces (root): strongSwan, BIRD, pings.

    Builds the VPC, each site's VPN server (and main router) and each node as network
    namespaces, loads the generated configs, pings every node and pod address from the
    VPC, and removes everything again. Nothing leaves this machine.
    """
    from tether.nettest import TestbedError, missing_requirements, run_testbed
    from tether.nettest.topology import TopologyError

    doc = _load_checked(file, output)[0].doc
    missing = missing_requirements()
    if missing:
        raise _fail("this machine cannot run the testbed; missing: " + "; ".join(missing))

    pings = 2 * sum(len(pool.nodes) for pool in doc.pools)  # each node and its pod address
    try:
        with progress("building the testbed", total=pings) as bar:

            def log(message: str) -> None:
                if output.tabular:
                    bar.log(message)
                if message.startswith("ping "):
                    bar.update(advance=1, description="pinging from the VPC", note=message)
                else:
                    bar.update(note=message)

            report = run_testbed(doc, log=log, timeout=timeout)
    except TopologyError as error:
        raise _fail(str(error), EXIT_INVALID) from error
    except TestbedError as error:
        raise _fail(str(error), EXIT_INVALID) from error
    if output.tabular:
        _table([p.as_dict() for p in report.probes], PROBE_COLUMNS)
        reached = sum(1 for p in report.probes if p.ok)
        verdict = "[green]ok[/green]" if report.ok else "[red]FAILED[/red]"
        console.print(
            f"{verdict}: {reached}/{len(report.probes)} addresses reachable from the VPC "
            f"in {report.seconds:.1f}s; testbed {report.prefix} removed",
            highlight=False,
        )
    else:
        render(report.as_dict(), output)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)
