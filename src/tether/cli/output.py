"""Rendering for ``-o table|json|yaml``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OutputOption = typer.Option(Format.TABLE, "--output", "-o", help="table, json or yaml.")

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def field(path: str) -> Callable[[dict[str, Any]], Any]:
    """A getter for a dotted path into a JSON object (``spec.site``)."""

    def get(obj: dict[str, Any]) -> Any:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return get


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def render(data: Any, fmt: Format, columns: Sequence[Column] = ()) -> None:
    if fmt is Format.JSON:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
    elif fmt is Format.YAML:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        rows = data if isinstance(data, list) else [data]
        table = Table(show_header=True, header_style="bold", box=None)
        for header, _ in columns:
            table.add_column(header)
        for row in rows:
            table.add_row(*(_cell(get(row)) for _, get in columns))
        console.print(table)
