"""The atomic writer: modes, and the temporary files killed writers leave behind."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from tether import files
from tether.files import staged_file, sweep_stale, write_atomic, write_many


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_write_is_private_until_it_has_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "d" / "secret"
    modes: list[int] = []
    with staged_file(target, 0o640) as tmp:
        modes.append(stat.S_IMODE(tmp.stat().st_mode))
        tmp.write_bytes(b"s3cret")
    assert modes == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert target.read_bytes() == b"s3cret"
    assert os.listdir(target.parent) == ["secret"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config"
    write_atomic(target, "old")

    def half_written() -> None:
        with staged_file(target, 0o600) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        half_written()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["config"]


def test_a_killed_writers_temporary_file_is_swept_by_the_next_write(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: killed between writing and renaming
        with staged_file(tmp_path / "tracker.json", 0o600) as tmp:
            tmp.write_text("new")
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    left = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(left) == 1 and f".tether-{pid}-" in left[0]

    write_atomic(tmp_path / "other.json", "{}")  # any write into the directory sweeps
    assert sorted(os.listdir(tmp_path)) == ["other.json"]


def test_live_writers_temporary_files_are_kept(tmp_path: Path) -> None:
    dead, mine, init = _dead_pid(), os.getpid(), 1
    names = {p: f".a.json.tether-{p}-abcd_123.tmp" for p in (dead, mine, init)}
    for name in [*names.values(), ".a.json.x1y2z3w4.tmp", "notes.tmp"]:
        (tmp_path / name).write_text("partial")
    removed = sweep_stale(tmp_path)
    assert removed == [tmp_path / names[dead]]
    # this process (another thread may be writing), a live process's, and files whose
    # names are not the writer's are all kept
    assert sorted(os.listdir(tmp_path)) == sorted(
        [names[mine], names[init], ".a.json.x1y2z3w4.tmp", "notes.tmp"]
    )


def test_write_many_replaces_files_with_their_modes_and_sweeps_dead_writers(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old").write_text("old")
    stale = tmp_path / "a" / f".x.tether-{_dead_pid()}-0000abcd.tmp"
    stale.write_text("partial")
    write_many(tmp_path, [("a/old", "new", 0o640), ("a/b/c.sh", b"#!/bin/sh\n", 0o755)])
    assert (tmp_path / "a" / "old").read_text() == "new"
    assert stat.S_IMODE((tmp_path / "a" / "old").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "a" / "b" / "c.sh").stat().st_mode) == 0o755
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "old"]  # the dead writer's swept


def test_write_many_leaves_the_old_file_and_no_temporary_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keep").write_text("old")

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        write_many(tmp_path, [("keep", "new", 0o644)])
    assert (tmp_path / "keep").read_text() == "old"
    assert os.listdir(tmp_path) == ["keep"]
