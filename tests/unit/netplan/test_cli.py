"""``tether net check`` and ``tether net plan``: exit codes, output formats, files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tether.cli.net import app

Doc = dict[str, Any]
runner = CliRunner()


def _write(tmp_path: Path, doc: Doc, name: str = "net.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_check_a_valid_document_exits_0(tmp_path: Path, doc: Doc) -> None:
    result = runner.invoke(app, ["check", str(_write(tmp_path, doc))])
    assert result.exit_code == 0, result.output
    assert "valid: 0 error(s)" in result.output


def test_check_json_lists_findings_with_four_keys_and_exits_1(tmp_path: Path, doc: Doc) -> None:
    doc["pools"][1]["podCIDR"] = doc["pools"][0]["podCIDR"]
    result = runner.invoke(app, ["check", "-o", "json", str(_write(tmp_path, doc))])
    assert result.exit_code == 1
    findings = json.loads(result.stdout)
    assert findings
    assert all(set(f) == {"rule", "path", "message", "severity"} for f in findings)
    assert ("pool.overlap", "pools[store7].podCIDR") in {(f["rule"], f["path"]) for f in findings}


def test_check_accepts_json_yaml_output_and_stdin(doc: Doc) -> None:
    result = runner.invoke(app, ["check", "-o", "yaml", "-"], input=json.dumps(doc))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == []


def test_check_table_names_rule_and_path(tmp_path: Path, doc: Doc) -> None:
    doc["cluster"]["remoteNodeNetworks"].append("8.8.8.0/24")
    result = runner.invoke(app, ["check", str(_write(tmp_path, doc))])
    assert result.exit_code == 1
    assert "cluster.remote-private" in result.output
    assert "cluster.remoteNodeNetworks[1]" in result.output


def test_unreadable_or_unparseable_files_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster: [unclosed\n")
    assert runner.invoke(app, ["check", str(broken)]).exit_code == 2
    assert runner.invoke(app, ["check"]).exit_code == 2  # usage


def test_plan_writes_every_file_with_secrets_0600_and_prints_no_key(
    tmp_path: Path, doc: Doc
) -> None:
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "dc1" in result.stdout
    assert "store7" in result.stdout
    psks = json.loads((out / "psks.json").read_text())
    assert sorted(psks) == ["dc1-t1", "dc1-t2", "store7-t1", "store7-t2"]
    for key in psks.values():
        assert len(key) == 64
        assert key not in result.output
    secret_files = {
        "psks.json",
        "cloud/swanctl/secrets.conf",
        "pools/dc1/vpn-server/swanctl/secrets.conf",
        "pools/store7/vpn-server/swanctl/secrets.conf",
    }
    for path in out.rglob("*"):
        if path.is_file():
            rel = path.relative_to(out).as_posix()
            mode = stat.S_IMODE(path.stat().st_mode)
            if rel in secret_files:
                assert mode == 0o600, rel
            else:
                assert mode & 0o077 in (0o044, 0o055), rel
                assert not any(key in path.read_text() for key in psks.values()), rel
    assert (out / "pools/dc1/vpn-server/bird.conf").exists()
    assert psks["dc1-t1"] in (out / "cloud/swanctl/secrets.conf").read_text()


def test_plan_again_keeps_keys_and_blocks(tmp_path: Path, doc: Doc) -> None:
    out = tmp_path / "plan"
    src = _write(tmp_path, doc)
    assert runner.invoke(app, ["plan", str(src), "--out", str(out)]).exit_code == 0
    keys = json.loads((out / "psks.json").read_text())
    blocks = json.loads((out / "allocations.json").read_text())["nodes"]
    doc["pools"][0]["nodes"].pop(0)
    doc["pools"][0]["nodes"].append({"name": "dc1-n9", "ip": "10.80.1.19"})
    src = _write(tmp_path, doc)
    result = runner.invoke(app, ["plan", str(src), "--out", str(out), "-o", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads((out / "psks.json").read_text()) == keys
    for name in ("dc1-n2", "store7-n1", "store7-n2"):
        assert report["allocations"][name] == blocks[name]
    assert "psks.json" not in report["files"]
    assert "cloud/swanctl/secrets.conf" in report["secretFiles"]
    assert not any(key in result.output for key in keys.values())


def test_plan_refuses_an_invalid_document_and_writes_nothing(tmp_path: Path, doc: Doc) -> None:
    doc["pools"][1]["nodeCIDR"] = doc["pools"][0]["nodeCIDR"]
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 1
    assert "pool.overlap" in result.output
    assert not out.exists()


def test_plan_with_an_explicit_previous_file(tmp_path: Path, doc: Doc) -> None:
    previous = tmp_path / "old.json"
    previous.write_text(json.dumps({"nodes": {"dc1-n1": "10.85.9.0/24"}}))
    out = tmp_path / "plan"
    args = ["plan", str(_write(tmp_path, doc)), "--out", str(out), "--previous", str(previous)]
    result = runner.invoke(app, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["allocations"]["dc1-n1"] == "10.85.9.0/24"
    missing = runner.invoke(app, [*args[:-1], str(tmp_path / "none.json")])
    assert missing.exit_code == 2


def test_json_is_read_as_json(tmp_path: Path, doc: Doc) -> None:
    """``2.5e1`` is the number 25 in JSON; YAML 1.1 (the old loader) reads a string."""
    text = json.dumps(doc).replace('"podCIDRMaskPerNode": 24', '"podCIDRMaskPerNode": 2.5e1', 1)
    assert "2.5e1" in text
    (tmp_path / "net.json").write_text(text)
    result = runner.invoke(app, ["check", "-o", "json", str(tmp_path / "net.json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_yaml_is_read_with_libyaml(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[str] = []

    class Recording(yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        def __init__(self, stream: str) -> None:
            used.append(stream[:10])
            super().__init__(stream)

    monkeypatch.setattr(yaml, "CSafeLoader", Recording)
    result = runner.invoke(app, ["check", str(_write(tmp_path, doc))])
    assert result.exit_code == 0, result.output
    assert len(used) == 1


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_plan_removes_the_files_of_pools_no_longer_in_the_document(
    tmp_path: Path, doc: Doc
) -> None:
    out = tmp_path / "plan"
    assert (
        runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)]).exit_code == 0
    )
    before = _files(out)
    assert any(f.startswith("pools/store7/") for f in before)
    (out / "pools" / "dc1" / "vpn-server" / "notes.txt").write_text("mine")  # not Tether's
    (out / "pools" / "gone").mkdir()
    (out / "pools" / "gone" / "routes.sh").write_text("not in any manifest")

    doc["pools"] = [p for p in doc["pools"] if p["name"] != "dc1"]
    result = runner.invoke(
        app, ["plan", str(_write(tmp_path, doc)), "--out", str(out), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    removed = set(json.loads(result.stdout)["removedFiles"])
    assert removed == {f for f in before if f.startswith("pools/dc1/")}
    after = _files(out)
    assert not any(f.startswith("pools/dc1/") for f in after - {"pools/dc1/vpn-server/notes.txt"})
    assert {"pools/dc1/vpn-server/notes.txt", "pools/gone/routes.sh"} <= after
    assert not (out / "pools" / "dc1" / "vpn-server" / "swanctl").exists()  # emptied: removed
    assert {f for f in before if f.startswith("pools/store7/")} <= after


def test_plan_never_removes_outside_out_through_a_tampered_manifest(
    tmp_path: Path, doc: Doc
) -> None:
    out = tmp_path / "plan"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    assert (
        runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)]).exit_code == 0
    )
    manifest = out / ".tether-plan-files"
    manifest.write_text(manifest.read_text() + f"../victim.txt\n{victim}\n")
    assert (
        runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)]).exit_code == 0
    )
    assert victim.read_text() == "keep"


def test_the_findings_table_shows_paths_with_pool_names(tmp_path: Path, doc: Doc) -> None:
    del doc["pools"][0]["nodeCIDR"]
    doc["pools"][1]["podCIDR"] = doc["pools"][0]["podCIDR"]
    result = runner.invoke(app, ["check", str(_write(tmp_path, doc))], terminal_width=200)
    assert result.exit_code == 1
    assert "pools[dc1].nodeCIDR" in result.output
    assert "overlaps pools[dc1].podCIDR" in result.output


def test_plan_warnings_show_paths_with_pool_names(tmp_path: Path, doc: Doc) -> None:
    doc["pools"][1]["nodes"] = []
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: pools[store7].nodes: the pool has no nodes" in result.output


def test_plan_checks_the_document_once(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rule runs once per plan: on 10,000 pools a second check cost over a second."""
    from tether.netplan import rules

    runs: list[object] = []
    check_once = rules._check

    def counted(document: Any) -> Any:
        runs.append(document)
        return check_once(document)

    monkeypatch.setattr(rules, "_check", counted)
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(runs) == 1


def test_plan_runs_with_the_collector_paused_and_restores_it_when_writing_fails(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused for the whole command (writing too, after planning), and on again after
    a command that fails."""
    import gc

    from tether.cli import net

    seen: list[bool] = []

    def write_plan(*args: Any) -> Any:
        seen.append(gc.isenabled())
        raise OSError("disk full")

    monkeypatch.setattr(net, "write_plan", write_plan)
    assert gc.isenabled()
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 2
    assert "disk full" in result.output
    assert seen == [False] and gc.isenabled()


def test_check_runs_with_the_collector_paused_and_restores_it(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10,000-pool YAML document took 5.7 s to check with the collector walking the
    parsed document again and again, 2.6 s without."""
    import gc

    from tether.cli import net

    seen: list[bool] = []
    check_data = net.check_data

    def checked(data: Any) -> Any:
        seen.append(gc.isenabled())
        return check_data(data)

    monkeypatch.setattr(net, "check_data", checked)
    assert gc.isenabled()
    result = runner.invoke(app, ["check", str(_write(tmp_path, doc))])
    assert result.exit_code == 0, result.output
    assert seen == [False] and gc.isenabled()


def _no_machine_wide_sync(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``os.sync()`` fails the test; the paths ``syncfs`` was asked to flush are recorded."""
    from tether import files

    synced: list[str] = []
    real = files.sync_filesystem

    def sync() -> None:
        raise AssertionError("os.sync() flushes the whole machine")

    def syncfs(path: Path) -> None:
        synced.append(str(path))
        real(path)

    monkeypatch.setattr("os.sync", sync)
    monkeypatch.setattr("tether.cli.net.sync_filesystem", syncfs, raising=False)
    monkeypatch.setattr(files, "sync_filesystem", syncfs)
    return synced


def test_a_first_plan_is_one_tree_renamed_into_place_and_syncs_only_its_filesystem(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No temporary file and rename per file: 60,000 of each on 10,000 pools."""
    synced = _no_machine_wide_sync(monkeypatch)
    renames: list[str] = []
    real_rename, real_replace = os.rename, os.replace

    def rename(a: Any, b: Any) -> None:
        renames.append(str(b))
        real_rename(a, b)

    def replace(a: Any, b: Any) -> None:
        renames.append(str(b))
        real_replace(a, b)

    monkeypatch.setattr("os.rename", rename)
    monkeypatch.setattr("os.replace", replace)
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert renames == [str(out)]
    assert len(synced) == 1 and synced[0].startswith(str(tmp_path / ".plan.tether-"))
    assert (out / ".tether-plan-files").read_text().splitlines() == sorted(
        _files(out)
        - {
            "psks.json",
            ".tether-plan-files",
        }
    )
    assert sorted(os.listdir(tmp_path)) == ["net.yaml", "plan"]

    renames.clear()
    again = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert synced[1:] == [str(out)]  # into an existing plan: file by file, one syncfs


def test_a_plan_killed_halfway_leaves_no_out_and_the_next_plan_sweeps_it(
    tmp_path: Path, doc: Doc
) -> None:
    src = _write(tmp_path, doc)
    out = tmp_path / "plan"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_HALFWAY, str(src), str(out)], check=False, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()  # not a plan with some of its files
    staging = [n for n in os.listdir(tmp_path) if n.startswith(".plan.tether-")]
    assert len(staging) == 1 and os.listdir(tmp_path / staging[0])  # the half-written tree
    result = runner.invoke(app, ["plan", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ["net.yaml", "plan"]


#: ``tether net plan SRC --out OUT`` killed by SIGKILL on its fifth file write.
_KILLED_HALFWAY = """
import os, signal, sys
from tether import files
from tether.cli.main import main

writes, real_write = [], os.write

def write(fd, data):
    writes.append(fd)
    if len(writes) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(fd, data)

files.os.write = write
sys.argv = ["tether", "net", "plan", sys.argv[1], "--out", sys.argv[2]]
main()
"""


def _plan_tree(
    tmp_path: Path, src: Path, fork_min_files: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[bool, dict[str, tuple[bytes, int]]]:
    """Plan ``src`` into a new folder with the keys 0, 1, 2...; whether a writer was
    forked, and every file's bytes and mode."""
    from tether.cli import net

    keys = iter(range(100))
    monkeypatch.setattr(net.secrets, "token_hex", lambda n: f"{next(keys):0{2 * n}x}")
    monkeypatch.setattr(net, "FORK_MIN_FILES", fork_min_files)
    forked: list[bool] = []
    real = net.write_tree

    def write_tree(*args: Any, beside: Any = None) -> None:
        forked.append(beside is not None)
        real(*args, beside=beside)

    monkeypatch.setattr(net, "write_tree", write_tree)
    out = tmp_path / f"plan-{fork_min_files}"
    result = runner.invoke(app, ["plan", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = {
        p.relative_to(out).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in out.rglob("*")
        if p.is_file()
    }
    return forked == [True], files


def test_a_big_first_plan_forks_a_writer_for_the_pools_and_writes_the_same_tree(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the pools' files rendered and written by a forked process (any plan, for the
    test): the same files, bytes and modes as one process writes."""
    src = _write(tmp_path, doc)
    forked, one = _plan_tree(tmp_path, src, 10**9, monkeypatch)
    assert not forked
    forked, two = _plan_tree(tmp_path, src, 0, monkeypatch)
    assert forked
    assert two == one
    assert any(rel.startswith("pools/") for rel in two)


def test_a_failing_forked_writer_fails_the_plan_and_leaves_no_out(
    tmp_path: Path, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.cli import net

    monkeypatch.setattr(net, "FORK_MIN_FILES", 0)
    real = net._rendered

    def rendered(recipes: Any, mode: Any) -> Any:
        for path, text, file_mode in real(recipes, mode):
            if path.startswith("pools/") and path.endswith("bird.conf"):
                raise OSError(28, "No space left on device", path)
            yield path, text, file_mode

    monkeypatch.setattr(net, "_rendered", rendered)
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(_write(tmp_path, doc)), "--out", str(out)])
    assert result.exit_code == 2
    assert "cannot write the plan" in result.output and "No space left" in result.output
    assert sorted(os.listdir(tmp_path)) == ["net.yaml"]
