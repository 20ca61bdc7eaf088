"""``tether image build``: the subprocess steps of :mod:`tether.domain.imageplan`.

Root only (debootstrap, chroot, file ownership). The steps, each announced on the
progress callback:

1. the agent's wheels: ``pip wheel --no-deps`` of this source tree (or a given wheel),
   and ``pip download --only-binary`` of its dependencies for the image's Python, so the
   image installs them with ``--no-index``; with ``--artifacts``, the node artifacts of
   the profile's Kubernetes version mirrored and verified (:func:`preseed`);
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
from tether.errors import HostError
from tether.files import write_atomic
from tether.node.artifacts import Keyring
from tether.node.install import https_client
from tether.node.mirror import SyncedFile, sync

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


def preseed(
    version: str, *, source: str, keyring_file: Path, arch: str, into: Path, progress: Progress
) -> imageplan.Preseed:
    """Mirror ``version``'s node artifacts for ``arch`` from ``source`` (a directory or
    https URL) into ``into``/mirror, each verified against the signed manifest and
    ``keyring_file``, and copy the keyring next to it; what the image's manifest records.
    Raises :class:`BuildError` saying what is wrong (nothing usable is left in ``into``)."""

    def note(item: SyncedFile, total: int) -> None:
        progress(f"artifacts: {item.name} {item.version} {item.status} ({total} files)")

    mirror = into / "mirror"
    try:
        keyring = Keyring.from_file(keyring_file)
        with https_client() as client:
            report = sync(
                version,
                source=source,
                to=mirror,
                keyring=keyring,
                arch=arch,
                client=client,
                on_file=note,
            )
    except HostError as exc:
        shutil.rmtree(mirror, ignore_errors=True)
        raise BuildError(f"artifacts: {exc}") from None
    shutil.copyfile(keyring_file, into / "keyring.yaml")
    files = {
        path.relative_to(mirror).as_posix(): sha256_file(path)
        for path in sorted(mirror.rglob("*"))
        if path.is_file()
    }
    return imageplan.Preseed(
        kubernetes_version=report.version,
        arch=report.arch,
        source=source,
        files=files,
        keyring_sha256=sha256_file(keyring_file),
    )


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


def _customise(
    root: Path,
    inputs: imageplan.ImageInputs,
    build: str,
    wheels: Path,
    progress: Progress,
    artifacts: Path | None,
) -> None:
    for item in imageplan.files(inputs, build=build):
        target = root / item.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, item.content.encode(), item.mode, dir_mode=None)
    if artifacts is not None:
        progress(f"customise: the pre-seeded artifacts in {imageplan.PRESEED_DIR}")
        shutil.copytree(artifacts / "mirror", root / imageplan.PRESEED_DIR.lstrip("/"))
        ring = root / imageplan.PRESEED_KEYRING.lstrip("/")
        ring.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifacts / "keyring.yaml", ring)
        ring.chmod(0o644)
    inside = root / imageplan.WHEELS_IN_ROOT.lstrip("/")
    shutil.copytree(wheels, inside, dirs_exist_ok=True)
    for argv in imageplan.chroot_commands(inputs):
        progress(f"customise: {' '.join(argv[:3])}")
        _run("chroot", ["chroot", root, *argv], progress, env=_ENV)
    shutil.rmtree(inside)


def build(
    inputs: imageplan.ImageInputs,
    out: Path,
    wheels: Path,
    progress: Progress,
    artifacts: Path | None = None,
) -> dict[str, object]:
    """Build the image into ``out`` (disk.img, kernel, initrd, manifest.json); the manifest.
    ``artifacts``: what :func:`preseed` put there (``inputs.preseed`` records it)."""
    out.mkdir(parents=True, exist_ok=True)
    base = _base(inputs, progress)
    build_id = uuid.uuid4().hex  # names this build inside the image and in the manifest
    root = out / "rootfs.work"
    shutil.rmtree(root, ignore_errors=True)
    try:
        progress("customise: copying the base")
        _run("copy", ["cp", "-a", "--reflink=auto", base, root], progress)
        (root / ".complete").unlink()
        _customise(root, inputs, build_id, wheels, progress, artifacts)
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
        build=build_id,
        disk_sha256=sha256_file(disk),
        kernel=f"vmlinuz ({kernel.name})",
        initrd=f"initrd.img ({initrd.name})",
        versions=_tool_versions(),
    )
    write_atomic(out / "manifest.json", (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
    return doc
