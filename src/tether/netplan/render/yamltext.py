"""YAML text for generated manifests (libyaml's emitter when available)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)


def dump_all(docs: Iterable[Any], header: str = "") -> str:
    return header + "---\n" + "---\n".join(dump(doc) for doc in docs)
