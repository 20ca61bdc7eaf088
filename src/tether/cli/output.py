"""Rendering for ``-o table|wide|json|yaml``.

Tables fit the terminal when there is one. Without a terminal (a pipe, a file, CI) they
are printed whole, never cut to 80 columns: a script that greps the output must see every
character. ``-o wide`` prints them whole on a terminal too (lines wrap there), with the
kind's extra columns.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, RenderableType

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# yaml, rich's tables and progress bars are imported where used: start-up time
# (``tether --help``, ``tether pool list``) is what a command imports.

#: Columns wide enough for any line Tether prints (rich needs a number).
FULL_WIDTH = 100_000


def _console(stderr: bool = False) -> Console:
    """A console that fits a terminal, and is as wide as the output elsewhere (unless
    ``COLUMNS`` says otherwise)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(stderr=stderr, width=FULL_WIDTH)


console = _console()
errors = _console(stderr=True)


class Format(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"

    @property
    def tabular(self) -> bool:
        """A table (``table`` or ``wide``), not a document."""
        return self in (Format.TABLE, Format.WIDE)


OutputOption = typer.Option(
    Format.TABLE, "--output", "-o", help="table, wide (every column, never cut), json or yaml."
)

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
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def show(renderable: RenderableType, whole: bool = False) -> None:
    """Print to stdout: fitted to the terminal, or (``whole``, or no terminal) at full
    width with trailing blanks removed."""
    if console.is_terminal and not whole:
        console.print(renderable)
        return
    buffer = io.StringIO()
    Console(
        file=buffer,
        width=FULL_WIDTH,
        force_terminal=console.is_terminal,
        color_system="auto" if console.is_terminal else None,
        no_color=console.no_color,
    ).print(renderable)
    typer.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


def _plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markup: bool) -> str | None:
    """The text rich prints for a table without a terminal (``box=None``, one space of
    padding each side, trailing blanks removed), or ``None`` when rich could print it
    differently: a cell with markup or an emoji code (``[bold]``, ``:x:``), with anything
    but printable ASCII (wide characters, tabs, line breaks), or a table too wide.

    Rich lays out a 10,000-row table in seconds; this takes milliseconds."""
    cells = [list(headers), *(list(row) for row in rows)]
    for number, row in enumerate(cells):
        for cell in row:
            if not (cell.isascii() and cell.isprintable()) or (
                (markup or number == 0) and ("[" in cell or ":" in cell)
            ):
                return None  # (headers are always rich markup)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if sum(widths) + 2 * len(widths) > FULL_WIDTH:
        return None
    return "\n".join(
        "".join(f" {cell:<{width}} " for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    markup: bool = True,
    fold: bool = False,
    whole: bool = False,
) -> None:
    """Print a table of strings (see :func:`show`). ``markup``: the cells may hold rich
    markup; ``fold``: on a terminal, cells wrap instead of being cut."""
    if not console.is_terminal:
        text = _plain_table(headers, rows, markup)
        if text is not None:
            typer.echo(text)
            return
    from rich.table import Table
    from rich.text import Text

    grid = Table(show_header=True, header_style="bold", box=None)
    for header in headers:
        grid.add_column(header, overflow="fold" if fold else "ellipsis")
    for row in rows:
        grid.add_row(*(row if markup else (Text(cell) for cell in row)))
    show(grid, whole=whole)


def render(
    data: Any, fmt: Format, columns: Sequence[Column] = (), wide: Sequence[Column] = ()
) -> None:
    """Print ``data`` (an object or a list) as ``fmt``; ``wide`` are the extra columns of
    ``-o wide``."""
    if fmt is Format.JSON:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
    elif fmt is Format.YAML:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        rows = data if isinstance(data, list) else [data]
        shown = [*columns, *wide] if fmt is Format.WIDE else list(columns)
        table(
            [header for header, _ in shown],
            [[_cell(get(row)) for _, get in shown] for row in rows],
            whole=fmt is Format.WIDE,
        )


class Bar:
    """A progress bar on stderr (see :func:`progress`)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        advance: float | None = None,
        note: str | None = None,
        description: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {} if note is None else {"note": note}
        self._progress.update(
            self._task,
            completed=completed,
            total=total,
            advance=advance,
            description=description,
            **fields,
        )

    def log(self, message: str) -> None:
        """A line above the bar."""
        self._progress.console.print(message, style="dim", highlight=False, markup=False)


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Bar]:
    """A progress bar for long work, on stderr so that stdout stays the command's answer.

    On a terminal it redraws in place; elsewhere rich prints it once, when it ends."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=errors, transient=False) as bar:
        yield Bar(bar, bar.add_task(description, total=total, note=""))
