#!/usr/bin/env python3
"""Install every runtime dependency at the lowest version pyproject.toml allows, then run
the tests that exercise them, so a declared floor is one the code really works with.

Each entry of ``[project].dependencies`` must have a ``>=`` floor (and may have a ``<``
ceiling); ``name>=X`` becomes ``name==X`` (extras kept) and pip resolves what those need.
The virtualenv is kept in ``~/.cache/tether/floors/<digest of the pins and the Python
version>`` and reused while
the floors stay the same; wheels come from pip's cache (``~/.cache/pip``), so a rerun
installs nothing. The test tools (pytest and friends) are not under test: they are
installed at their newest versions. Tether itself runs from ``src`` (``PYTHONPATH``).

Usage: ``scripts/check_floors.py [pytest arguments]`` (default: the selection below).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether" / "floors"
FLOOR = re.compile(
    r"^(?P<name>[A-Za-z0-9_.-]+)(?P<extras>\[[^\]]+\])?>=(?P<floor>[^,;\s]+)(,<[^,;\s]+)?$"
)
#: Not under test; needed to run the tests.
TOOLS = ["pytest", "pytest-timeout", "hypothesis", "schemathesis"]
#: Tests that exercise every runtime dependency: the unit tests (pydantic, cryptography,
#: PyYAML, typer, rich, pycdlib), the people's API on SQLite and PostgreSQL (fastapi,
#: starlette, SQLAlchemy, alembic, psycopg, httpx), and the Kubernetes client against a
#: real API server (lightkube, lightkube-models, httpx2, msgspec). The kill-at-every-step
#: tests only repeat the node tests' library calls, slowly, so they are left out.
SELECTION = [
    "tests/unit",
    "tests/integration/api/test_api.py",
    "tests/integration/kube/test_kube_client.py",
    "-k",
    "not killed_at_every_step",
]


def pins() -> list[str]:
    """``name[extras]==floor`` for every runtime dependency; exits if one has no floor."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out, bad = [], []
    for requirement in project["dependencies"]:
        match = FLOOR.match(requirement.replace(" ", ""))
        if match is None:
            bad.append(requirement)
            continue
        out.append(f"{match['name']}{match['extras'] or ''}=={match['floor']}")
    if bad:
        sys.exit(f"every dependency needs exactly one >= floor; these do not: {bad}")
    return out


def environment(pinned: list[str]) -> Path:
    """The virtualenv with ``pinned`` installed (made once per set of floors)."""
    key = json.dumps([sys.version_info[:2], pinned, TOOLS]).encode()
    where = CACHE / hashlib.sha256(key).hexdigest()[:16]
    python = where / "bin" / "python"
    if (where / ".ready").is_file():
        print(f"floors: reusing {where}", flush=True)
        return python
    print(f"floors: installing into {where}:\n  " + "\n  ".join(pinned), flush=True)
    venv.EnvBuilder(clear=True, with_pip=True).create(where)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *pinned, *TOOLS], check=True)
    (where / ".ready").write_text("\n".join(pinned) + "\n")
    return python


def check_installed(python: Path, pinned: list[str]) -> None:
    """The resolver kept every floor (a pin it could not honour would have failed)."""
    script = (
        "import json, sys\nfrom importlib.metadata import version\n"
        "from packaging.version import Version\n"
        "pins = [a.split('==') for a in sys.argv[1:]]\n"
        "print(json.dumps({n: version(n.split('[')[0]) for n, v in pins"
        " if Version(version(n.split('[')[0])) != Version(v)}))"
    )
    done = subprocess.run(
        [str(python), "-c", script, *pinned], check=True, capture_output=True, text=True
    )
    wrong = json.loads(done.stdout)
    if wrong:
        sys.exit(f"installed versions differ from the floors: {wrong}")


def console_script(python: Path) -> None:
    """The ``tether`` command beside ``python``, as pip makes it from ``[project.scripts]``
    (the CLI tests run the installed command; Tether itself comes from ``PYTHONPATH``)."""
    script = python.parent / "tether"
    script.write_text(
        f"#!{python}\nimport sys\nfrom tether.cli.main import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)


def main(argv: list[str]) -> int:
    pinned = pins()
    python = environment(pinned)
    check_installed(python, pinned)
    console_script(python)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    print("floors: running the tests at the floors", flush=True)
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", *(argv or SELECTION)],
        cwd=ROOT,
        env=env,
        check=False,
    )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
