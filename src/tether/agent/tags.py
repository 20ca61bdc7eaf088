"""Host tags: static from the config, from a YAML/JSON file, or from a script printing JSON.

Later sources win on equal keys (static < file < script). A script runs with a
timeout, no shell and no stdin; a script that fails, times out or prints something
other than a JSON object of strings is reported, and its tags are left out rather
than stopping enrolment.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import yaml

from tether.errors import Permanent

log = logging.getLogger(__name__)


class TagError(Permanent):
    pass


def _check(data: object, source: str) -> dict[str, str]:
    if not isinstance(data, dict):
        raise TagError(f"{source}: tags must be an object of key: value strings")
    result: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key or len(key) > 253:
            raise TagError(f"{source}: tag key {key!r} must be a string of 1..253 characters")
        if isinstance(value, bool | int | float):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str) or len(value) > 256:
            raise TagError(f"{source}: tag {key!r} must be a string of at most 256 characters")
        result[key] = value
    return result


def from_file(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TagError(f"tags file {path}: {exc}") from exc
    return _check(data or {}, f"tags file {path}")


def from_script(command: list[str], timeout: float) -> dict[str, str]:
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise TagError(f"tags script {command[0]} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise TagError(f"tags script {command[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        raise TagError(
            f"tags script {command[0]} exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()[:200]}"
        )
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise TagError(f"tags script {command[0]} did not print JSON: {exc}") from exc
    return _check(data, f"tags script {command[0]}")


def collect(
    static: dict[str, str],
    file: Path | None,
    script: list[str] | None,
    timeout: float,
) -> tuple[dict[str, str], list[str]]:
    """All tags, and the problems met (each source that failed is skipped)."""
    tags = dict(static)
    problems: list[str] = []
    if file is not None:
        try:
            tags.update(from_file(file))
        except TagError as exc:
            problems.append(str(exc))
    if script:
        try:
            tags.update(from_script(script, timeout))
        except TagError as exc:
            problems.append(str(exc))
    for problem in problems:
        log.warning("%s", problem)
    return tags, problems
