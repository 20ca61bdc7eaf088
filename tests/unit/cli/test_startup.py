"""``tether --help`` starts fast: it imports none of the heavy parts (no timing asserts).

Each check runs the CLI in a fresh interpreter, as a user's shell does, and looks at
``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: What ``tether --help`` must not import: the plane's server side, Kubernetes, crypto,
#: HTTP, validation models, the network planner and the node tool, YAML, progress bars.
HEAVY = (
    "yaml",
    "rich.progress",
    "concurrent.futures",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "lightkube",
    "cryptography",
    "httpx",
    "pydantic",
    "tether.netplan",
    "tether.node",
    "tether.agent",
    "tether.kube",
    "tether.store",
    "tether.services",
    "tether.domain",
)

_RUN = """
import json, sys
sys.argv = ["tether", *json.loads(sys.argv[1])]
from tether.cli.main import main
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def _modules_after(*args: str) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    output, _, modules = done.stdout.rstrip("\n").rpartition("\n")
    return output, set(json.loads(modules))


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def test_help_imports_nothing_heavy() -> None:
    output, modules = _modules_after("--help")
    assert "pool" in output and "net" in output and "node" in output
    assert _heavy(modules) == set()


@pytest.mark.parametrize(
    ("args", "shown", "loaded"),
    [
        (("net", "--help"), "check", "tether.netplan"),
        (("node", "--help"), "uninstall", "tether.node.actions"),
        (("artifacts", "--help"), "publish", "tether.node.mirror"),
        (("image", "--help"), "build", "tether.cli.image"),
    ],
)
def test_lazy_commands_load_when_used(args: tuple[str, ...], shown: str, loaded: str) -> None:
    output, modules = _modules_after(*args)
    assert shown in output
    assert loaded in modules
