"""``tether net plan`` writes the same bytes as before it was made fast.

The golden tree under ``golden/plan`` (and the table in ``golden/plan-stdout.txt``) was
written by the plan writer as it was before the fast paths of :mod:`yamltext`, the plain
table of :mod:`tether.cli.output` and the direct file writes: every file of a plan, its
mode and the command's table must stay byte for byte what they were. The document mixes
what the fast paths must get right: names YAML reads as booleans, numbers or null (they
must stay quoted), BGP and static pools, a pool behind a separate main router, pinned and
allocated pod blocks, a per-node mask outside Calico's block sizes. Regenerate the golden
files only for an intended change of output: ``TETHER_REGENERATE_GOLDEN=1 pytest ...``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from tether.cli.net import app

GOLDEN = Path(__file__).parent / "golden"
#: Fixed keys, so the secrets files are reproducible (plan keeps the keys of OUT/psks.json).
PSKS = {
    **{
        f"{p}-t{n}": f"{i:02x}{n:02x}" * 16
        for i, p in enumerate(("dc1", "yes", "0x1f"))
        for n in (1, 2)
    },
    **{f"{p}-t{n}": f'not hex {p} \\ " {n}' for p in ("store7", "null") for n in (1, 2)},
}


def golden_doc(example: dict[str, Any]) -> dict[str, Any]:
    """The example document's cluster (see conftest) with other pools."""

    def pool(name: str, i: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "site": f"site-{name}",
            "nodeCIDR": f"10.80.{i}.0/24",
            "podCIDR": f"10.85.{i * 16}.0/20",
            "podCIDRMaskPerNode": 24,
            "vpnServer": {
                "publicIP": f"203.0.113.{i}",
                "insideIP": f"10.80.{i}.1",
                "asn": 64600 + i,
            },
            "nodes": [{"name": f"{name}-n{j}", "ip": f"10.80.{i}.{10 + j}"} for j in range(2)],
            **extra,
        }

    return {
        **example,
        "cluster": {
            **example["cluster"],
            "name": "golden",
            "vpnEndpoint": {"publicIP": "198.51.100.10", "secondaryPublicIP": "198.51.100.11"},
        },
        "pools": [
            pool("dc1", 1, routing="bgp"),
            pool(
                "store7",
                2,
                routing="static",
                mainRouterIP="10.80.2.254",
                vpnServer={
                    "publicIP": "203.0.113.2",
                    "insideIP": "10.80.2.1",
                    "isMainRouter": False,
                },
            ),
            pool(
                "yes",
                3,
                routing="bgp",
                podCIDRMaskPerNode=26,
                nodeASN=65001,
                nodes=[
                    {"name": "null", "ip": "10.80.3.10"},
                    {"name": "1e3", "ip": "10.80.3.11", "podCIDR": "10.85.48.64/26"},
                    {"name": "on.off", "ip": "10.80.3.12"},
                ],
            ),
            pool("0x1f", 4, routing="bgp", podCIDRMaskPerNode=18, podCIDR="10.85.128.0/17"),
            pool("null", 5, routing="static", nodes=[]),
        ],
    }


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        path.relative_to(root).as_posix(): (stat.S_IMODE(path.stat().st_mode), path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_a_plan_is_byte_for_byte_the_golden_tree(tmp_path: Path, doc: dict[str, Any]) -> None:
    source = tmp_path / "net.json"
    source.write_text(json.dumps(golden_doc(doc)))
    out = tmp_path / "plan"
    out.mkdir()
    (out / "psks.json").write_text(json.dumps(PSKS))
    result = CliRunner().invoke(app, ["plan", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stdout = result.stdout.replace(str(out), "OUT")
    tree = _tree(out)
    if os.environ.get("TETHER_REGENERATE_GOLDEN"):
        (GOLDEN / "plan-stdout.txt").write_text(stdout)
        (GOLDEN / "plan-modes.json").write_text(
            json.dumps({rel: oct(mode) for rel, (mode, _) in tree.items()}, indent=1) + "\n"
        )
        for rel, (_, content) in tree.items():
            (GOLDEN / "plan" / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / "plan" / rel).write_bytes(content)
    golden = {rel: content for rel, (_, content) in _tree(GOLDEN / "plan").items()}
    assert {rel: content for rel, (_, content) in tree.items()} == golden
    modes = json.loads((GOLDEN / "plan-modes.json").read_text())
    assert {rel: oct(mode) for rel, (mode, _) in tree.items()} == modes
    assert stdout == (GOLDEN / "plan-stdout.txt").read_text()
    assert (
        yaml.safe_load((out / "pools/yes/calico-bgp.yaml").read_text().split("---\n")[1])[
            "metadata"
        ]["labels"]["tether.io/pool"]
        == "yes"
    )
