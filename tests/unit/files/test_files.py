"""The atomic writer: modes, and the temporary files killed writers leave behind."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tether import files
from tether.files import staged_file, sweep_stale, write_atomic, write_many, write_tree


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


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_write_tree_creates_the_whole_tree_with_its_modes_and_one_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str]] = []
    real_rename = os.rename
    monkeypatch.setattr(
        files.os, "rename", lambda a, b: renames.append((a, b)) or real_rename(a, b)
    )
    monkeypatch.setattr(files.os, "replace", None)  # no file of its own is renamed into place
    with _umask(0o027):
        write_tree(tmp_path / "out", [("a/key", "k", 0o600), ("a/b/run.sh", b"#!", 0o755)])
    root = tmp_path / "out"
    assert [os.path.basename(b) for _, b in renames] == ["out"]
    assert (root / "a" / "key").read_text() == "k"
    assert stat.S_IMODE((root / "a" / "key").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "a" / "b" / "run.sh").stat().st_mode) == 0o755  # past the umask
    assert stat.S_IMODE(root.stat().st_mode) == 0o750  # the umask's, not the staging 0700
    assert os.listdir(tmp_path) == ["out"]


def test_write_tree_makes_nested_new_folders_and_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file three new folders deep (each made by one mkdir, parents first, with the
    umask's mode), and a system that takes 3 bytes per write call."""
    real_write = os.write
    monkeypatch.setattr(files.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    with _umask(0o027):
        write_tree(tmp_path / "out", [("x/y/z/f", "0123456789", 0o644), ("x/g", b"", 0o600)])
    root = tmp_path / "out"
    assert (root / "x/y/z/f").read_text() == "0123456789"
    assert (root / "x/g").read_bytes() == b""
    for folder in ("x", "x/y", "x/y/z"):
        assert stat.S_IMODE((root / folder).stat().st_mode) == 0o750, folder
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_write_tree_refuses_an_existing_root_and_a_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "there").mkdir()
    with pytest.raises(FileExistsError):
        write_tree(tmp_path / "there", [("a", "x", 0o644)])
    calls = iter(range(10))
    real_write = os.write

    def full_on_the_third(fd: int, data: bytes) -> int:
        if next(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", full_on_the_third)
    with pytest.raises(OSError, match="No space"):
        write_tree(tmp_path / "out", [(f"p{i}/f", "x", 0o644) for i in range(5)])
    assert os.listdir(tmp_path) == ["there"]  # no out, no staging directory
    assert next(calls) == 3  # two files were written before the third failed


def test_a_killed_tree_writer_leaves_no_root_and_its_staging_tree_is_swept(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: killed with half the tree written
        written = iter(range(100))
        real_write = os.write

        def write_then_die(fd: int, data: bytes) -> int:
            if next(written) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(fd, data)

        files.os.write = write_then_die  # type: ignore[assignment]
        write_tree(tmp_path / "out", [(f"p{i}/f", "x", 0o644) for i in range(6)])
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    (staging,) = os.listdir(tmp_path)
    assert staging.startswith(f".out.tether-{pid}-")
    assert sorted(os.listdir(tmp_path / staging)) == ["p0", "p1", "p2", "p3"]  # 3 whole, 1 empty
    write_tree(tmp_path / "out", [("f", "whole", 0o644)])  # the next writer sweeps it
    assert os.listdir(tmp_path) == ["out"]
    assert (tmp_path / "out" / "f").read_text() == "whole"
