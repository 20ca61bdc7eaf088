"""``tether --help`` and ``tether pool list`` start fast: they import none of the heavy
parts (no timing asserts).

Each check runs the CLI in a fresh interpreter, as a user's shell does, and looks at
``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tether.cli.client import CLIError
from tether.cli.config import CLIConfig, load, save

#: What ``tether --help`` must not import: the plane's server side, Kubernetes, crypto,
#: HTTP, validation models, the network planner and the node tool, YAML, progress bars.
HEAVY = (
    "yaml",
    "rich.progress",
    "concurrent.futures",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "lightkube",
    "cryptography",
    "httpx",
    "pydantic",
    "tether.netplan",
    "tether.node",
    "tether.agent",
    "tether.kube",
    "tether.store",
    "tether.services",
    "tether.domain",
)
#: What neither ``--help`` nor ``pool list`` uses but Typer's help formatter imports
#: (Rich's Markdown with markdown-it, tracebacks with Pygments), and what httpx would
#: (its own command line with Click, HTTP/2 with ``h2``).
UNUSED = ("markdown_it", "mdurl", "pygments", "rich.markdown", "rich.traceback", "h2", "click")

_RUN = """
import json, sys
sys.argv = ["tether", *json.loads(sys.argv[1])]
from tether.cli.main import main
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def _modules_after(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    output, _, modules = done.stdout.rstrip("\n").rpartition("\n")
    return output + done.stderr, set(json.loads(modules))


def _among(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in names)}


def _heavy(modules: set[str]) -> set[str]:
    return _among(modules, HEAVY)


def test_help_imports_nothing_heavy() -> None:
    output, modules = _modules_after("--help")
    assert "pool" in output and "net" in output and "node" in output
    assert _heavy(modules) == set()
    assert _among(modules, UNUSED) == set()


def test_help_of_a_usage_error_still_formats_with_rich() -> None:
    """The stand-ins for Rich's Markdown and traceback leave Typer's error panel as it was."""
    output, modules = _modules_after("pool", "list", "--bogus")
    assert "No such option: --bogus" in output and "╭─ Error" in output
    assert "typer.rich_utils" in modules
    assert _among(modules, UNUSED) == set()


def test_pool_list_imports_no_validation_models_yaml_or_httpx(tmp_path: Path) -> None:
    """``pool list`` makes an HTTP client and sends its request (here to a closed port:
    exit 6), with no config file read when the environment names server and token. The
    client is the standard library's: httpx was more than a third of the command."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "TETHER_SERVER": f"http://127.0.0.1:{port}",
        "TETHER_TOKEN": "t",
        "TETHER_CONFIG": str(tmp_path / "absent.yaml"),
    }
    output, modules = _modules_after("pool", "list", env=env)
    assert f"cannot reach http://127.0.0.1:{port}" in output
    assert "http.client" in modules
    assert _among(modules, ("pydantic", "yaml", "httpx", "httpcore", *UNUSED)) == set()


def test_the_config_file_is_read_without_validation_models(tmp_path: Path) -> None:
    """A user logged in with ``tether login`` has a config file: reading it costs YAML,
    not pydantic."""
    config = tmp_path / "config.yaml"
    config.write_text("server: http://127.0.0.1:9\ntoken: t\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_SERVER", "TETHER_TOKEN")}
    output, modules = _modules_after("pool", "list", env={**env, "TETHER_CONFIG": str(config)})
    assert "cannot reach http://127.0.0.1:9" in output
    assert "yaml" in modules
    assert _among(modules, ("pydantic",)) == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: http://x\n", "holds exactly 'server' and 'token'"),
        ("server: http://x\ntoken: 7\n", "'server' and 'token' must be strings"),
        ("server: [unclosed\n", "is not YAML"),
    ],
)
def test_a_broken_config_file_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    monkeypatch.setenv("TETHER_CONFIG", str(config))
    with pytest.raises(CLIError) as raised:
        load()
    assert str(config) in raised.value.message and message in raised.value.message


def test_the_config_file_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_CONFIG", str(tmp_path / "c" / "config.yaml"))
    path = save(CLIConfig(server="http://h:1", token="secret"))
    assert path.read_text() == "server: http://h:1\ntoken: secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load() == CLIConfig(server="http://h:1", token="secret")


@pytest.mark.parametrize(
    ("args", "shown", "loaded"),
    [
        (("net", "--help"), "check", "tether.netplan"),
        (("node", "--help"), "uninstall", "tether.node.actions"),
        (("artifacts", "--help"), "publish", "tether.node.mirror"),
        (("image", "--help"), "build", "tether.cli.image"),
    ],
)
def test_lazy_commands_load_when_used(args: tuple[str, ...], shown: str, loaded: str) -> None:
    output, modules = _modules_after(*args)
    assert shown in output
    assert loaded in modules
