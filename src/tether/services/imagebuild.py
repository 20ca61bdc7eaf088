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
   ``mkfs.ext4 -d`` (no loop mount), its sha256, and ``manifest.json``;
5. with ``inputs.installer``, before the manifest: ``installer.iso`` by ``grub-mkrescue``
   (BIOS) from the kernel, the initrd, the disk gzipped and the files of
   :func:`~tether.domain.imageplan.iso_files`.

A failed step raises :class:`BuildError` with the step's output tail; the working copy of
the root is removed either way, and a half-made base never lands in the cache.
"""

from __future__ import annotations

import gzip
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


def missing_iso_tools() -> list[str]:
    """What this host lacks to build the installer ISO (each with its Debian package)."""
    present = {
        tool
        for tool in imageplan.ISO_TOOLS
        if (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))
    }
    return imageplan.missing_iso_tools(present)


def _tool_versions(installer: bool) -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "tether": tether.__version__}
    tools = {"debootstrap": ["debootstrap", "--version"], "mke2fs": ["mke2fs", "-V"]}
    if installer:
        tools |= {
            "grub-mkrescue": ["grub-mkrescue", "--version"],
            "xorriso": ["xorriso", "-version"],
        }
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


def _iso(inputs: imageplan.ImageInputs, out: Path, disk_sha256: str, progress: Progress) -> str:
    """``out``/installer.iso from the kernel, initrd and disk in ``out``; its sha256."""
    work = out / "iso.work"
    shutil.rmtree(work, ignore_errors=True)
    iso = out / imageplan.ISO_FILE
    try:
        (work / "tether").mkdir(parents=True)
        shutil.copyfile(out / "vmlinuz", work / imageplan.ISO_KERNEL)
        shutil.copyfile(out / "initrd.img", work / imageplan.ISO_INITRD)
        progress("iso: gzip the disk")
        disk = out / "disk.img"
        with (
            disk.open("rb") as src,
            gzip.GzipFile(work / imageplan.ISO_DISK, "wb", 1, mtime=0) as gz,
        ):
            shutil.copyfileobj(src, gz, 1 << 20)
        image = imageplan.image_ref(inputs.release, disk_sha256)
        for item in imageplan.iso_files(inputs, image=image, image_bytes=disk.stat().st_size):
            target = work / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item.content)
        progress("iso: grub-mkrescue (BIOS)")
        iso.unlink(missing_ok=True)
        _run("grub-mkrescue", imageplan.mkrescue_argv(str(work), str(iso)), progress, env=_ENV)
    except BaseException:
        iso.unlink(missing_ok=True)  # no half-made ISO
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress("iso: sha256")
    return sha256_file(iso)


def build(
    inputs: imageplan.ImageInputs,
    out: Path,
    wheels: Path,
    progress: Progress,
    artifacts: Path | None = None,
) -> dict[str, object]:
    """Build the image into ``out`` (disk.img, kernel, initrd, manifest.json, and with
    ``inputs.installer`` installer.iso); the manifest.
    ``artifacts``: what :func:`preseed` put there (``inputs.preseed`` records it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / imageplan.ISO_FILE).unlink(missing_ok=True)  # none stale next to a new disk
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
        disk = out / "disk.img"
        disk.unlink(missing_ok=True)
        mkfs: list[str | Path] = ["mkfs.ext4", "-q", "-F", "-L", "tether-root"]
        mkfs += ["-U", imageplan.fs_uuid(inputs), "-d", root, disk, inputs.disk_size]
        _run("mkfs", mkfs, progress, env=_ENV)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    progress("disk: sha256")
    disk_sha256 = sha256_file(disk)
    iso_sha256 = _iso(inputs, out, disk_sha256, progress) if inputs.installer else None
    doc = imageplan.manifest(
        inputs,
        build=build_id,
        disk_sha256=disk_sha256,
        kernel=f"vmlinuz ({kernel.name})",
        initrd=f"initrd.img ({initrd.name})",
        versions=_tool_versions(inputs.installer),
        iso_sha256=iso_sha256,
    )
    write_atomic(out / "manifest.json", (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
    return doc
