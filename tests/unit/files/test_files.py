"""The atomic writer: modes, and the temporary files killed writers leave behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


# write_tree's ``beside``: half the tree written by a forked child ------------------------


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children this test forks."""
    pids: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


def _all_reaped(pids: list[int]) -> bool:
    """Whether each of ``pids`` was forked and is no child of this process any more,
    running or a zombie (other tests' children, such as servers, may still run)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return bool(pids)


def _tree(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and folder under ``root``: its content (``None`` for a folder), mode."""
    return {
        p.relative_to(root).as_posix(): (
            None if p.is_dir() else p.read_bytes(),
            stat.S_IMODE(p.stat().st_mode),
        )
        for p in root.rglob("*")
    }


def test_write_tree_beside_writes_half_the_tree_in_a_child_and_the_same_tree(
    forks: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same tree as one writer makes (contents, modes, folders both halves share),
    one rename, and no child left behind; ``beside`` is iterated in the child."""
    ours = [("a/key", "k", 0o600), ("a/b/run.sh", b"#!", 0o755), ("top", "t", 0o644)]
    theirs = [(f"a/b/c{i}/f", f"{i}", 0o644) for i in range(50)] + [("z/secret", "s", 0o600)]
    with _umask(0o027):
        write_tree(tmp_path / "one", ours + theirs)
        renames: list[str] = []
        real_rename = os.rename
        monkeypatch.setattr(files.os, "rename", lambda a, b: renames.append(b) or real_rename(a, b))
        pids: list[int] = []
        write_tree(
            tmp_path / "two",
            ours,
            beside=((rel, f"{data}", mode) for rel, data, mode in theirs if not pids.append(0)),
        )
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")
    assert stat.S_IMODE((tmp_path / "two").stat().st_mode) == 0o750
    assert [str(b) for b in renames] == [str(tmp_path / "two")]
    assert pids == []  # the generator ran in the child, not here
    assert sorted(os.listdir(tmp_path)) == ["one", "two"]
    assert _all_reaped(forks)


def test_write_tree_beside_runs_on_another_process(forks: list[int], tmp_path: Path) -> None:
    write_tree(
        tmp_path / "out",
        [("here", str(os.getpid()), 0o644)],
        beside=((name, str(os.getpid()), 0o644) for name in ["there"]),
    )
    here, there = ((tmp_path / "out" / n).read_text() for n in ("here", "there"))
    assert here == str(os.getpid()) and there != here
    assert _all_reaped(forks)


def _fail_after(n: int, error: BaseException) -> Iterator[tuple[str, str, int]]:
    for i in range(n):
        yield f"p{i}/f", "x", 0o644
    raise error


def test_a_failing_child_fails_write_tree_with_its_error_and_leaves_nothing(
    forks: list[int],
    tmp_path: Path,
) -> None:
    with pytest.raises(OSError, match="No space left") as raised:
        write_tree(
            tmp_path / "out",
            [(f"q{i}/f", "x", 0o644) for i in range(5)],
            beside=_fail_after(3, OSError(28, "No space left on device", "p3/f")),
        )
    assert raised.value.errno == 28 and raised.value.filename == "p3/f"
    assert any("process writing half the tree" in note for note in raised.value.__notes__)
    assert os.listdir(tmp_path) == []  # no out, no staging directory
    assert _all_reaped(forks)


class _Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no pickling")


def test_a_childs_error_that_does_not_pickle_is_described(forks: list[int], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="_Unpicklable: odd"):
        write_tree(tmp_path / "out", [], beside=_fail_after(1, _Unpicklable("odd")))
    assert os.listdir(tmp_path) == []
    assert _all_reaped(forks)


def _kill_self_after(n: int) -> Iterator[tuple[str, str, int]]:
    for i in range(n):
        yield f"p{i}/f", "x", 0o644
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_child_fails_write_tree_and_leaves_nothing(
    forks: list[int], tmp_path: Path
) -> None:
    with pytest.raises(ChildProcessError, match=f"killed by signal {int(signal.SIGKILL)}"):
        write_tree(tmp_path / "out", [("a", "x", 0o644)], beside=_kill_self_after(2))
    assert os.listdir(tmp_path) == []
    assert _all_reaped(forks)


def _slow() -> Iterator[tuple[str, str, int]]:
    yield "p/f", "x", 0o644
    time.sleep(600)  # killed long before
    yield "p/g", "x", 0o644


def test_a_failing_parent_kills_and_reaps_its_child_and_leaves_nothing(
    forks: list[int], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="rendering failed"):
        write_tree(tmp_path / "out", _fail_after(2, ValueError("rendering failed")), beside=_slow())
    assert os.listdir(tmp_path) == []
    assert _all_reaped(forks)


def test_a_killed_tree_writer_takes_its_child_along(tmp_path: Path) -> None:
    """The parent killed while its child writes: the child dies with it, and the staging
    tree it leaves is swept by the next writer."""
    ready = tmp_path / "ready"
    script = f"""
import os, signal, time
from pathlib import Path
from tether.files import write_tree

def slow():
    yield "c/f", str(os.getpid()), 0o644
    Path({str(ready)!r} + ".tmp").write_text(str(os.getpid()))
    os.replace({str(ready)!r} + ".tmp", {str(ready)!r})  # whole when the parent sees it
    time.sleep(600)
    yield "c/g", "x", 0o644

def ours():
    yield "p/f", "x", 0o644
    while not Path({str(ready)!r}).exists():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
    yield "p/g", "x", 0o644

write_tree(Path({str(tmp_path / "tree" / "out")!r}), ours(), beside=slow())
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    assert done.returncode == -signal.SIGKILL
    child = int(ready.read_text())
    for _ in range(500):  # the kernel kills the orphan at once; it may take a moment
        if not Path(f"/proc/{child}").exists() or _zombie_or_gone(child):
            break
        time.sleep(0.01)
    assert _zombie_or_gone(child)
    (staging,) = os.listdir(tmp_path / "tree")
    assert staging.startswith(".out.tether-")
    write_tree(tmp_path / "tree" / "out", [("f", "whole", 0o644)])  # sweeps it
    assert os.listdir(tmp_path / "tree") == ["out"]


def _zombie_or_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
