"""CLI tables: whole when not on a terminal, ``-o wide`` with the extra columns."""

from __future__ import annotations

import pytest

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
