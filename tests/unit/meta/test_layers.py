"""Every package and top-level module of tether sits in the one layers contract.

import-linter checks only the modules a contract names; a new package left out of the
stack would be free to import anything. This test fails when one is missing.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import tether

ROOT = Path(__file__).resolve().parents[3]


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (stack,) = [c for c in contracts if c["type"] == "layers"]
    return [name.strip() for layer in stack["layers"] for name in layer.split("|")]


def test_every_tether_module_is_in_the_layers_contract() -> None:
    modules = {f"tether.{m.name}" for m in pkgutil.iter_modules(tether.__path__)}
    listed = set(_layers())
    assert modules - listed == set(), "add these to the layers contract in pyproject.toml"
    assert listed - modules == set(), "the layers contract names modules that do not exist"


def test_simulated_package_is_above_all_production_code() -> None:
    layers = _layers()
    assert layers.index("tether.sim") == 1  # only tether.cli is above it
