"""Writing files that may hold secrets: one way, used everywhere.

Keys, tokens, kubeconfigs, activation codes and generated configs are written with
:func:`write_atomic`: a temporary file created 0600 in the target directory (so the
content is never readable by others, not even for an instant), given its final mode,
fsynced, renamed over the target, and the directory fsynced. A crash leaves either the
old file or the new one, never half of either.

A writer killed before its rename leaves its temporary file behind. Each temporary
file's name carries the writer's process id (``.<name>.tether-<pid>-<random>.tmp``), so
the next write into the same directory removes those of writers that are gone
(:func:`sweep_stale`) and never touches one a live process is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

__all__ = [
    "fsync_dir",
    "implicit_resolvers",
    "parse_yaml_or_json",
    "private_dir",
    "private_file",
    "staged_file",
    "sweep_stale",
    "sync_filesystem",
    "write_atomic",
    "write_many",
    "write_tree",
]


def _tighten(path: Path, mode: int) -> None:
    """Take away what ``mode`` does not grant, if we own ``path`` (a no-op otherwise)."""
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(stat.S_IMODE(info.st_mode) & mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (parents too) 0700 whatever the umask, and take group and other
    access away from it if it exists: the plane's data directory holds its database,
    keys and tokens."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty 0600 whatever the umask, or make an existing one 0600 (a
    database file before the database opens it: SQLite gives its ``-wal`` and ``-shm``
    files the database file's mode).

    An existing file is never opened: closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's included."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600))
    _tighten(path, 0o600)
    return path


#: A temporary file of :func:`staged_file`: ``.<name>.tether-<pid>-<mkstemp's 8 chars>.tmp``.
_TEMP: Final = re.compile(r"^\..+\.tether-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp$")


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def sweep_stale(directory: Path) -> list[Path]:
    """Remove the temporary files in ``directory`` that writers which are no longer
    running left behind (killed between creating and renaming them); the removed paths.

    A pid reused by a new process keeps its dead predecessor's file until that process
    ends too: harmless, and never a file a live writer needs."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another sweeper was faster
            if entry.is_dir(follow_symlinks=False):  # a staging tree of write_tree
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def _replacing(tmp: str | Path, path: str | Path) -> Iterator[None]:
    """Rename ``tmp`` over ``path`` when the block ends normally; remove it otherwise."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_file(
    path: Path, mode: int, *, dir_mode: int | None = 0o700, sync: bool = True
) -> Iterator[Path]:
    """A temporary file next to ``path`` (created 0600) for the ``with`` block to fill;
    on a normal exit it gets ``mode``, is fsynced and renamed over ``path``, and the
    directory is fsynced. On an exception it is removed and ``path`` is left as it was.

    Stale temporary files of dead writers in the directory are swept first. A missing
    parent directory is created with ``dir_mode`` (``None``: the default umask).
    ``sync=False`` leaves out both fsyncs, for a writer of many files that syncs once
    at the end (:func:`sync_filesystem`): two fsyncs per file made writing a 47,000-file network
    plan take minutes."""
    if dir_mode is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    sweep_stale(path.parent)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.tether-{os.getpid()}-", suffix=".tmp"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    with _replacing(tmp, path):
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    if sync:
        fsync_dir(path.parent)


def write_atomic(
    path: Path,
    data: bytes | str,
    mode: int = 0o600,
    *,
    dir_mode: int | None = 0o700,
    sync: bool = True,
) -> None:
    """Write ``data`` to ``path`` with ``mode``, atomically (see the module docstring).

    A missing parent directory is created with ``dir_mode`` (``None``: the default umask);
    ``sync``: see :func:`staged_file`.
    """
    payload = data.encode() if isinstance(data, str) else data
    with staged_file(path, mode, dir_mode=dir_mode, sync=sync) as tmp:
        tmp.write_bytes(payload)


#: Numbers the temporary files of :func:`write_many` in this process (``next`` on it is
#: atomic, so two threads never take the same name).
_serial = itertools.count()


def _write_staged(path: str, payload: bytes, mode: int) -> None:
    """:func:`write_atomic` without syncing, in plain ``os`` calls: a temporary file
    named as :data:`_TEMP` (so :func:`sweep_stale` knows it) created 0600, filled, given
    ``mode`` and renamed over ``path``."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tether-{os.getpid()}-{next(_serial) % 16**8:08x}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:  # left by a dead process that had this pid: not a live writer
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    with _replacing(tmp, path):
        try:
            _write_all(fd, payload)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _write_all(fd: int, payload: bytes) -> None:
    """Write all of ``payload`` to ``fd``: one ``write`` for a regular file, more only
    if the system takes less at a time."""
    done = os.write(fd, payload)
    if done < len(payload):
        view = memoryview(payload)[done:]
        while view:
            view = view[os.write(fd, view) :]


def write_many(root: Path, files: Iterable[tuple[str, bytes | str, int]]) -> None:
    """Write each ``(relative path, data, mode)`` of ``files`` under ``root``, each
    atomically like :func:`write_atomic` (never half-written) but none synced: the
    caller syncs once at the end (:func:`sync_filesystem`). Missing folders are created with the
    default umask, and each existing folder is swept of dead writers' temporary files
    once.

    For tens of thousands of files (a 10,000-pool network plan writes 60,000): no
    ``Path`` objects, and no sweep, ``mkdir`` or ``mkstemp`` per file."""
    base = os.fspath(root)
    ready: set[str] = set()
    for rel, data, mode in files:
        path = os.path.join(base, rel)
        folder = os.path.dirname(path)
        if folder not in ready:
            if os.path.isdir(folder):
                sweep_stale(Path(folder))
            else:
                os.makedirs(folder, exist_ok=True)  # new: no one's temporary files in it
            ready.add(folder)
        _write_staged(path, data.encode() if isinstance(data, str) else data, mode)


def write_tree(
    root: Path,
    files: Iterable[tuple[str, bytes | str, int]],
    *,
    beside: Iterable[tuple[str, bytes | str, int]] | None = None,
) -> None:
    """Create the directory ``root`` holding exactly ``files`` (``(relative path, data,
    mode)``, the path ``/``-separated), all or nothing: ``root`` must not exist yet.

    The tree is written into a staging directory next to ``root`` (named like a
    temporary file of :func:`staged_file`, created 0700, so no file in it is readable by
    others before it is complete whatever its mode), synced with
    :func:`sync_filesystem`, given the umask's directory mode and renamed to ``root``
    in one step, and the parent directory is fsynced. A crash leaves either no
    ``root`` or the whole tree, never part of it; a dead writer's staging directory is
    removed by the next :func:`sweep_stale` of the parent.

    Each file costs an ``open``, a ``write`` and a ``close`` (and an ``fchmod`` only
    when the umask would take a bit of ``mode`` away), no temporary name or rename
    of its own: a 10,000-pool network plan is 60,000 files.

    ``beside``: more files of the tree, written into the same staging directory at the
    same time by a child process forked for it (:class:`_ForkedWriter`), so a generator
    that renders them runs on another core; it is iterated in the child only. The tree
    is synced and renamed once both are done; if either fails, nothing is left and the
    error is raised here (the child's own exception, when it can be sent back). Fork
    only from a process without other threads.
    """
    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent)
    if os.path.lexists(root):
        raise FileExistsError(errno.EEXIST, "already exists", str(root))
    staging = tempfile.mkdtemp(
        dir=parent, prefix=f".{root.name}.tether-{os.getpid()}-", suffix=".tmp"
    )
    umask = os.umask(0)
    os.umask(umask)
    child: _ForkedWriter | None = None
    try:
        if beside is not None:
            child = _ForkedWriter(staging, beside, umask)
        _write_files(staging, files, umask)
        if child is not None:
            child.wait()
            child = None
        sync_filesystem(Path(staging))
        os.chmod(staging, 0o777 & ~umask)
        os.rename(staging, root)
    except BaseException:
        if child is not None:
            child.kill()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(parent)


def _write_files(staging: str, files: Iterable[tuple[str, bytes | str, int]], umask: int) -> None:
    """Write ``files`` (see :func:`write_tree`) into the new tree ``staging``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    made = {""}  # the folders of the tree that exist, relative to it
    for rel, data, mode in files:
        folder = rel.rpartition("/")[0]
        if folder not in made:
            _make_folder(staging, folder, made)
        fd = os.open(f"{staging}/{rel}", flags, mode)
        try:
            _write_all(fd, data.encode() if isinstance(data, str) else data)
            if mode & umask:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _make_folder(root: str, folder: str, made: set[str]) -> None:
    """Create ``folder`` (relative to ``root``, ``/``-separated) and those of its parents
    not in ``made``, the folders that exist; add them to ``made``. A plain ``mkdir``
    each: ``os.makedirs`` first asks whether each exists (a 10,000-pool plan has 32,500).
    A folder the other writer of the tree made first (see :func:`write_tree`'s
    ``beside``) is taken as it is."""
    parent = folder.rpartition("/")[0]
    if parent not in made:
        _make_folder(root, parent, made)
    try:
        os.mkdir(f"{root}/{folder}")
    except FileExistsError:
        if not os.path.isdir(f"{root}/{folder}"):
            raise
    made.add(folder)


class _ForkedWriter:
    """A child process writing files into a staging tree beside its parent
    (:func:`write_tree`'s ``beside``).

    The child ends with ``os._exit``: never the parent's clean-up, ``atexit`` handlers
    or buffered output. It exits 0 once every file is written; on an error it sends the
    exception (pickled, with its traceback as a note) through a pipe and exits 1. It is
    killed with its parent (``PR_SET_PDEATHSIG``), so a killed command leaves no writer
    behind that would go on filling a staging tree the next writer sweeps."""

    def __init__(self, staging: str, files: Iterable[tuple[str, bytes | str, int]], umask: int):
        parent = os.getpid()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its work is checked by the parent
            status = 1
            try:
                os.close(read_end)
                _die_with(parent)
                _write_files(staging, files, umask)
                status = 0
            except BaseException as error:  # every error goes to the parent
                _send_error(write_end, error)
            finally:
                os._exit(status)
        os.close(write_end)
        self.pid, self._pipe = pid, read_end

    def wait(self) -> None:
        """Wait for the child; raise its error if it failed."""
        chunks = []
        with open(self._pipe, "rb") as pipe:  # read first: a long report fills the pipe
            while chunk := pipe.read():
                chunks.append(chunk)
        _, status = os.waitpid(self.pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not chunks:
            return
        if chunks:
            import pickle

            try:
                error = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child's
            except Exception:  # a report that does not unpickle
                error = None
            if isinstance(error, BaseException):
                raise error
        raise ChildProcessError(
            f"the process writing half the tree ({self.pid}) "
            + (
                f"was killed by signal {os.WTERMSIG(status)}"
                if os.WIFSIGNALED(status)
                else f"exited with status {os.waitstatus_to_exitcode(status)}"
            )
        )

    def kill(self) -> None:
        """Stop the child and reap it (the parent failed)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self._pipe)


def _die_with(parent: int) -> None:
    """Have the kernel kill this (child) process when its parent ends; exit at once if
    the parent already has."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _send_error(fd: int, error: BaseException) -> None:
    """Send ``error`` (pickled) through ``fd`` to the parent; a description of it as a
    ``RuntimeError`` if it does not pickle."""
    import pickle
    import traceback

    note = "in the process writing half the tree:\n" + "".join(traceback.format_exception(error))
    try:
        error.add_note(note)
        data = pickle.dumps(error)
    except Exception:  # an exception that does not pickle
        data = pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}\n{note}"))
    with open(fd, "wb") as pipe:
        pipe.write(data)


def sync_filesystem(path: Path) -> None:
    """Write the filesystem holding ``path`` to disk: ``syncfs(2)``, where the C
    library has it, rather than ``os.sync()``, which flushes every filesystem of the
    machine and waits for other programs' writes too."""
    import ctypes  # only writers of many files need it

    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity: let YAML decide


def parse_yaml_or_json(text: str) -> Any:
    """Parse a document a person wrote, YAML or JSON, fast.

    JSON (a subset of YAML) goes to the JSON parser; YAML, or text the JSON parser
    refuses, to libyaml (``yaml.CSafeLoader``) where PyYAML was built with it, else the
    pure-Python ``SafeLoader``. The JSON parser is many times faster than either on a
    10,000-pool network document, and reads JSON as JSON: YAML 1.1 would turn ``1e3``
    into a string. Raises ``yaml.YAMLError``.
    """
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            # YAML flow style that is not JSON, or JSON nested too deep for Python's
            # stack: the YAML parser says what is wrong (libyaml stops at 1,000 levels).
            pass
    import yaml  # only documents need it; tether.files stays cheap to import

    if getattr(yaml, "__with_libyaml__", False):
        try:
            return _load_plain_yaml(text)
        except _TooDeep as error:
            raise yaml.YAMLError(str(error)) from None
        except (_NotPlain, yaml.YAMLError):
            pass  # CSafeLoader gives the value, or words the error
        loader: type[Any] = yaml.CSafeLoader
    else:
        loader = yaml.SafeLoader
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, chosen above
    except RecursionError:  # the pure-Python composer recurses once per level, in Python
        raise yaml.YAMLError(
            "exceeded maximum nesting depth: collections nested deeper than PyYAML's "
            "pure-Python reader can follow (this PyYAML was built without libyaml)"
        ) from None


#: ``(tag, pattern)`` pairs of a YAML resolver, tried in order on a plain scalar.
ResolverPairs = tuple[tuple[str, re.Pattern[str]], ...]


def implicit_resolvers(table: dict[Any, list[Any]]) -> dict[str | None, ResolverPairs]:
    """A PyYAML resolver's ``yaml_implicit_resolvers`` as ``Resolver.resolve`` uses it on
    a plain scalar: for each first character (``""`` for the empty scalar) the pairs it
    tries, that character's and then the wildcard ones; ``None`` maps to the wildcard
    ones alone, for a first character without its own. The first pattern that matches
    gives the scalar's tag; none is a string. Built once, not per scalar: a 10,000-pool
    document or plan has hundreds of thousands of them."""
    wildcard = tuple(table.get(None, []))
    pairs = {first: (*resolvers, *wildcard) for first, resolvers in table.items()}
    pairs[None] = wildcard
    return pairs


class _NotPlain(Exception):
    """The document uses something :func:`_load_plain_yaml` leaves to PyYAML."""


#: Collections nested deeper than this are refused. The libyaml 0.2.5 in PyYAML 6.0's
#: wheels has no limit of its own, and ``CSafeLoader`` composes a document by C
#: recursion: 100,000 nested ``[`` crashed the process with a segmentation fault. The
#: libyaml of later wheels stops at the same depth itself.
YAML_MAX_DEPTH: Final = 1000


class _TooDeep(Exception):
    """The document nests collections deeper than :data:`YAML_MAX_DEPTH`."""

    def __init__(self) -> None:
        super().__init__(
            f"exceeded maximum nesting depth: collections nested more than {YAML_MAX_DEPTH} "
            "levels deep"
        )


def _load_plain_yaml(text: str) -> Any:
    """What ``yaml.load(text, Loader=yaml.CSafeLoader)`` returns, built straight from
    libyaml's events: about three times faster on a 10,000-pool network document
    (``CSafeLoader`` builds a node graph first and constructs each value through
    generic machinery). Plain scalars are typed by ``CSafeLoader``'s own implicit
    resolvers and constructors, so the result is the same value by value (a property
    test compares them). Raises :class:`_NotPlain` for anything but one document of
    untagged mappings, sequences and scalars without anchors, aliases, merge keys or
    non-scalar keys, or for a plain scalar its constructor refuses (``CSafeLoader``
    parses the whole stream before it constructs a value, so a later syntax error comes
    first there), and passes libyaml's errors on: the caller then asks ``CSafeLoader``
    for the value or the error. Such a document is parsed twice, which costs more than
    ``CSafeLoader`` alone when the hand-over comes late in a big one. Nesting deeper
    than :data:`YAML_MAX_DEPTH` raises :class:`_TooDeep`, whether the document is built
    here or would be handed over (the rest of its events are read for that)."""
    import yaml
    from yaml import events

    parser = yaml.CSafeLoader(text)  # its constructors are ``CSafeLoader``'s own
    resolvers = implicit_resolvers(parser.yaml_implicit_resolvers)
    wildcard = resolvers[None]
    constructors = parser.yaml_constructors
    plain_tags = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "timestamp")}
    typed: dict[str, Any] = {}  # plain scalar text -> its value, for those not strings

    def resolve(value: str) -> Any:
        for tag, regexp in resolvers.get(value[:1], wildcard):
            if regexp.match(value):
                if tag not in plain_tags:
                    raise _NotPlain(tag)  # merge keys, "=", "!": PyYAML's business
                try:
                    typed[value] = constructors[tag](parser, yaml.ScalarNode(tag, value))
                except Exception as error:  # 2026-13-45, 0b_: which error comes first
                    raise _NotPlain(tag) from error  # (a later syntax error?) is PyYAML's
                return typed[value]
        return value

    get = parser.get_event
    scalar, alias, mapping_start = events.ScalarEvent, events.AliasEvent, events.MappingStartEvent
    collection_end = {events.MappingEndEvent, events.SequenceEndEvent}
    no_key: Any = object()  # a mapping's frame waiting for its next key
    frames: list[list[Any]] = []  # [container, key or no_key (mappings), is_mapping]
    value: Any = None
    event: Any = None  # the stubs' type has none of the fields
    try:
        get()  # the stream's start
        if isinstance(get(), events.StreamEndEvent):
            return None  # an empty stream
        while True:
            event = get()
            kind = type(event)
            if kind in collection_end:
                value = frames.pop()[0]
                if frames and frames[-1][2] and frames[-1][1] is no_key:
                    raise _NotPlain("a key that is a mapping or a sequence")
            elif kind is alias or event.anchor is not None or event.tag is not None:
                raise _NotPlain("an alias, an anchor or a tag")
            elif kind is scalar:
                value = event.value
                if event.implicit[0]:  # plain, not quoted or a block scalar
                    value = typed[value] if value in typed else resolve(value)
            else:  # a mapping or a sequence starts
                frames.append([{}, no_key, True] if kind is mapping_start else [[], None, False])
                if len(frames) > YAML_MAX_DEPTH:
                    raise _TooDeep
                continue
            if not frames:
                break
            frame = frames[-1]
            if not frame[2]:
                frame[0].append(value)
            elif frame[1] is no_key:
                frame[1] = value
            else:
                frame[0][frame[1]] = value
                frame[1] = no_key
        get()  # the document's end
        if not isinstance(get(), events.StreamEndEvent):
            raise _NotPlain("more than one document")
        return value
    except _NotPlain:
        # CSafeLoader reads it next: not if it nests too deep for its C recursion.
        _check_depth(get, len(frames) + isinstance(event, events.CollectionStartEvent))
        raise
    finally:
        parser.dispose()


def _check_depth(get: Callable[[], Any], depth: int) -> None:
    """Read the rest of a stream's events from ``get``, ``depth`` collections deep now;
    raise :class:`_TooDeep` if they nest deeper than :data:`YAML_MAX_DEPTH`."""
    from yaml import events

    while not isinstance(event := get(), events.StreamEndEvent):
        if isinstance(event, events.CollectionStartEvent):
            depth += 1
            if depth > YAML_MAX_DEPTH:
                raise _TooDeep
        elif isinstance(event, events.CollectionEndEvent):
            depth -= 1
