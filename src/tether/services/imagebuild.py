"""``tether image build``: the subprocess steps of :mod:`tether.domain.imageplan`.

Root only (debootstrap, chroot, file ownership). The steps, each announced on the
progress callback:

1. the agent's wheels: ``pip wheel --no-deps`` of this source tree (or a given wheel),
   and ``pip download --only-binary`` of its dependencies for the image's Python, so the
   image installs them with ``--no-index``;
2. the debootstrap base, cached under ``~/.cache/tether/images/base/<key>`` by what
   debootstrap is given (it takes minutes; the key changes with the packages);
3. a copy of the base, customised (files, then commands under ``chroot``);
4. the kernel and initrd copied out, the root packed into a raw ext4 disk by
   ``mkfs.ext4 -d`` (no loop mount), its sha256, and ``manifest.json``.

A failed step raises :class:`BuildError` with the step's output tail; the working copy of
the root is removed either way, and a half-made base never lands in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import tether
from tether.domain import imageplan
from tether.files import write_atomic

Progress = Callable[[str], None]
CACHE = Path(os.environ.get("TETHER_IMAGE_CACHE", Path.home() / ".cache/tether/images"))
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


class BuildError(Exception):
    """A step failed: its name and the last lines it printed."""


def _run(step: str, argv: Sequence[str | Path], progress: Progress, **kw: object) -> None:
    """Run ``argv``, passing each output line to ``progress``; raise with the tail on failure."""
    tail: list[str] = []
    with subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,  # type: ignore[call-overload]
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-19:], line.rstrip()]
            progress(f"  {step}: {line.rstrip()}")
    if proc.returncode != 0:
        raise BuildError(f"{step} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def source_tree() -> Path | None:
    """This repository's root when tether runs from a source checkout, else None."""
    root = Path(tether.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_wheels(out: Path, release: str, progress: Progress, wheel: Path | None = None) -> None:
    """The tether wheel and its dependencies' wheels for ``release``'s Python, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    if wheel is None:
        tree = source_tree()
        if tree is None:
            raise BuildError("no source tree: give --wheel with a tether wheel")
        _run("wheel", [*pip, "wheel", "--no-deps", "-q", "-w", out, tree], progress)
        wheel = next(out.glob("tether-*.whl"))
    elif wheel.parent != out:
        shutil.copy2(wheel, out / wheel.name)
    target = ["--only-binary=:all:", "--implementation", "cp"]
    target += ["--python-version", imageplan.PYTHON[release]]
    target += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]
    _run("wheel", [*pip, "download", "-q", *target, "-d", out, out / wheel.name], progress)


def _base(inputs: imageplan.ImageInputs, progress: Progress) -> Path:
    """The cached debootstrap root for ``inputs`` (made when missing)."""
    base = CACHE / "base" / imageplan.base_key(inputs)
    if (base / ".complete").exists():
        progress(f"base: cached at {base}")
        return base
    shutil.rmtree(base, ignore_errors=True)
    partial = base.with_name(base.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    progress(f"base: debootstrap {inputs.release} (minbase, {len(inputs.packages)} packages)")
    argv: list[str | Path] = ["debootstrap", "--variant=minbase", f"--arch={inputs.arch}"]
    argv += [f"--include={','.join(inputs.packages)}", inputs.release, partial, inputs.mirror]
    _run("debootstrap", argv, progress, env=_ENV)
    # The base's apt lists and .debs are not needed in any image.
    shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
    (partial / ".complete").touch()
    partial.rename(base)
    return base


def _tool_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "tether": tether.__version__}
    tools = {"debootstrap": ["debootstrap", "--version"], "mke2fs": ["mke2fs", "-V"]}
    for name, argv in tools.items():
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        versions[name] = (done.stdout + done.stderr).strip().splitlines()[0]
    return versions


def _customise(root: Path, inputs: imageplan.ImageInputs, wheels: Path, progress: Progress) -> None:
    for item in imageplan.files(inputs):
        target = root / item.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, item.content.encode(), item.mode, dir_mode=None)
    inside = root / imageplan.WHEELS_IN_ROOT.lstrip("/")
    shutil.copytree(wheels, inside, dirs_exist_ok=True)
    for argv in imageplan.chroot_commands(inputs):
        progress(f"customise: {' '.join(argv[:3])}")
        _run("chroot", ["chroot", root, *argv], progress, env=_ENV)
    shutil.rmtree(inside)


def build(
    inputs: imageplan.ImageInputs, out: Path, wheels: Path, progress: Progress
) -> dict[str, object]:
    """Build the image into ``out`` (disk.img, kernel, initrd, manifest.json); the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    base = _base(inputs, progress)
    root = out / "rootfs.work"
    shutil.rmtree(root, ignore_errors=True)
    try:
        progress("customise: copying the base")
        _run("copy", ["cp", "-a", "--reflink=auto", base, root], progress)
        (root / ".complete").unlink()
        _customise(root, inputs, wheels, progress)
        kernel = max((root / "boot").glob("vmlinuz-*"))
        initrd = max((root / "boot").glob("initrd.img-*"))
        shutil.copyfile(kernel, out / "vmlinuz")
        shutil.copyfile(initrd, out / "initrd.img")
        progress(f"disk: mkfs.ext4 -d ({inputs.disk_size})")
        fs_uuid = uuid.uuid5(uuid.NAMESPACE_URL, imageplan.base_key(inputs))
        disk = out / "disk.img"
        disk.unlink(missing_ok=True)
        mkfs: list[str | Path] = ["mkfs.ext4", "-q", "-F", "-L", "tether-root"]
        mkfs += ["-U", str(fs_uuid), "-d", root, disk, inputs.disk_size]
        _run("mkfs", mkfs, progress, env=_ENV)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    progress("disk: sha256")
    doc = imageplan.manifest(
        inputs,
        disk_sha256=sha256_file(disk),
        kernel=f"vmlinuz ({kernel.name})",
        initrd=f"initrd.img ({initrd.name})",
        versions=_tool_versions(),
    )
    write_atomic(out / "manifest.json", (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
    return doc
