"""CLI tables: whole when not on a terminal, ``-o wide`` with the extra columns."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cli import output
from tether.cli.output import Format, field, render

LONG = "evicting default/web-0: " + "x" * 250
ROWS = [{"name": "dc1-pool", "message": LONG, "extra": {"a": 1, "b": 2}}]
COLUMNS = [("NAME", field("name")), ("MESSAGE", field("message"))]
WIDE = [("EXTRA", field("extra"))]


@pytest.fixture(autouse=True)
def piped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI as a script runs it: stdout a pipe, no COLUMNS in the environment."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(output, "console", output._console())


def test_a_table_is_printed_whole_when_stdout_is_no_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not output.console.is_terminal
    render(ROWS, Format.TABLE, COLUMNS, WIDE)
    printed = capsys.readouterr().out
    assert LONG in printed
    assert "EXTRA" not in printed  # wide columns only with -o wide
    assert all(line == line.rstrip() for line in printed.splitlines())


def test_wide_adds_the_extra_columns(capsys: pytest.CaptureFixture[str]) -> None:
    render(ROWS, Format.WIDE, COLUMNS, WIDE)
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "MESSAGE", "EXTRA"]
    assert row.split()[-1] == "a=1,b=2" and LONG in row


def test_wide_and_table_are_tables_json_and_yaml_are_documents() -> None:
    assert [f.value for f in Format if f.tabular] == ["table", "wide"]


def _rich_text(headers: list[str], rows: list[list[str]]) -> str:
    """What rich itself prints for the table without a terminal (the old way)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, width=output.FULL_WIDTH, color_system=None).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


CELLS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda n: st.tuples(
            st.lists(
                CELLS.filter(lambda h: h and "[" not in h and ":" not in h), min_size=n, max_size=n
            ),
            st.lists(st.lists(CELLS, min_size=n, max_size=n), max_size=6),
        )
    )
)
def test_a_plain_table_is_what_rich_prints(table: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = table
    assert output._plain_table(headers, rows, markup=False) == _rich_text(headers, rows)


def test_cells_rich_could_print_differently_are_left_to_rich() -> None:
    for cell in ("[bold]x", ":smile:", "wide ☃", "tab\there", "two\nlines"):
        assert output._plain_table(["H"], [[cell]], markup="[" in cell or ":" in cell) is None
    assert output._plain_table(["[H]"], [["x"]], markup=False) is None
