"""Health checks run before each heartbeat: built-in ones and commands with a timeout."""

from __future__ import annotations

import shutil
import subprocess

from tether.agent.config import CheckConfig

DISK_FULL = 0.95


def run_check(check: CheckConfig) -> str | None:
    """``None`` if the check passes, else a short reason."""
    if check.builtin == "disk":
        try:
            usage = shutil.disk_usage("/")
        except OSError as exc:
            return f"cannot stat /: {exc.strerror}"
        used = usage.used / usage.total if usage.total else 0.0
        return None if used < DISK_FULL else f"/ is {used:.0%} full"
    if check.builtin is not None:
        return f"unknown built-in check {check.builtin!r}"
    if not check.command:
        return "check has neither builtin nor command"
    try:
        done = subprocess.run(
            check.command,
            capture_output=True,
            timeout=check.timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {check.timeout:g}s"
    except OSError as exc:
        return f"cannot run {check.command[0]}: {exc.strerror}"
    if done.returncode == 0:
        return None
    detail = (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()
    return f"exit {done.returncode}" + (f": {detail[-1][:200]}" if detail else "")


def run_all(checks: list[CheckConfig]) -> dict[str, str]:
    """Failing checks by name (empty: healthy)."""
    failing = {}
    for check in checks:
        reason = run_check(check)
        if reason is not None:
            failing[check.name] = reason[:256]
    return failing
