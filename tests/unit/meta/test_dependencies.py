"""pyproject.toml declares every distribution src/tether imports, each with a floor.

A module that is importable here only because something else pulled it in (lightkube's
HTTP library, FastAPI's Starlette) can vanish or change under a new release of that
something; declaring it, with the lowest version the code works with, is what lets
scripts/check_floors.py prove the floors by installing exactly them.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FLOOR = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(\[[^\]]+\])?>=[^,;\s]+(,<[^,;\s]+)?$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normal(re.split(r"[\[<>=!~;]", d)[0]): d for d in project["dependencies"]}


def _imported() -> dict[str, set[str]]:
    """Top-level third-party modules imported by src/tether, and the files importing them."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "src" / "tether").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "tether" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_distribution_is_declared() -> None:
    providers = packages_distributions()
    declared = _declared()
    missing = {
        module: sorted(d for d in providers.get(module, [module]) if _normal(d) not in declared)
        for module in _imported()
    }
    assert {m: d for m, d in missing.items() if d} == {}, "declare these in pyproject.toml"


def test_every_dependency_has_a_floor() -> None:
    assert [d for d in _declared().values() if not FLOOR.match(d.replace(" ", ""))] == []


def test_the_kubernetes_client_dependencies_are_declared() -> None:
    # lightkube >= 1.0 (lightkube.core.decoders, httpx2), its models (networking/v1
    # ServiceCIDR), and the two libraries tether.kube.client uses directly
    assert {"lightkube", "lightkube-models", "httpx2", "msgspec"} <= set(_declared())
