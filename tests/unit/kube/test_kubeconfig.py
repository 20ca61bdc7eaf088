"""Kubeconfigs: what the plane accepts over the API, and how the CLI flattens one."""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.cli.client import CLIError
from tether.cli.kube import flatten_kubeconfig
from tether.errors import Invalid
from tether.services.kubeconn import (
    check_name,
    imported_clusters,
    kubeconfig_path,
    parse_kubeconfig,
    write_private,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
B64 = base64.b64encode(PEM.encode()).decode()


def config(cluster: dict[str, Any], user: dict[str, Any], name: str = "ctx") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "c", "user": "u"}}],
            "current-context": name,
        }
    )


def test_token_kubeconfig_is_resolved() -> None:
    resolved = parse_kubeconfig(
        config(
            {"server": "https://k.example:6443", "certificate-authority-data": B64}, {"token": "t"}
        )
    )
    assert resolved.server == "https://k.example:6443"
    assert resolved.ca_pem == PEM
    assert dict(resolved.user) == {"token": "t"}
    assert resolved.as_dict()["current-context"] == "ctx"


@pytest.mark.parametrize(
    ("cluster", "user", "words"),
    [
        (
            {"server": "https://k", "certificate-authority": "/etc/kubernetes/pki/ca.crt"},
            {"token": "t"},
            "names a file",
        ),
        (
            {"server": "https://k"},
            {"client-certificate": "/root/.kube/c.crt", "client-key-data": B64},
            "names a file",
        ),
        ({"server": "https://k"}, {"tokenFile": "/var/run/secrets/token"}, "names a file"),
        (
            {"server": "https://k"},
            {"exec": {"command": "aws", "args": ["eks", "get-token"]}},
            "run commands",
        ),
        ({"server": "https://k"}, {"auth-provider": {"name": "oidc"}}, "run commands"),
        ({"server": "https://k", "insecure-skip-tls-verify": True}, {"token": "t"}, "insecure"),
        ({"server": "http://k"}, {"token": "t"}, "https"),
        (
            {"server": "https://k", "certificate-authority-data": "bm90IHBlbQ=="},
            {"token": "t"},
            "PEM",
        ),
        ({"server": "https://k"}, {}, "no token"),
        ({"server": "https://k"}, {"client-certificate-data": B64}, "go together"),
    ],
)
def test_unsafe_or_incomplete_kubeconfigs_are_refused(
    cluster: dict[str, Any], user: dict[str, Any], words: str
) -> None:
    with pytest.raises(Invalid) as info:
        parse_kubeconfig(config(cluster, user))
    assert info.value.field == "kubeconfig"
    assert words in info.value.message


def test_missing_context_and_garbage_are_refused() -> None:
    with pytest.raises(Invalid):
        parse_kubeconfig(config({"server": "https://k"}, {"token": "t"}), context="nope")
    with pytest.raises(Invalid):
        parse_kubeconfig("- just\n- a list\n")
    with pytest.raises(Invalid):
        parse_kubeconfig("{unclosed")


def test_cluster_names_must_be_dns_labels() -> None:
    assert check_name("prod-1") == "prod-1"
    for bad in ("../etc", "Prod", "a/b", "", "x" * 64):
        with pytest.raises(Invalid):
            check_name(bad)


def test_write_private_is_0600_in_a_0700_dir(tmp_path: Path) -> None:
    path = kubeconfig_path(tmp_path, "prod")
    write_private(path, "secret")
    assert path.read_text() == "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert imported_clusters(tmp_path) == ["prod"]


def test_cli_flattens_files_and_runs_exec_locally(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text(PEM)
    (tmp_path / "tok").write_text("from-file\n")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        "'kind': 'ExecCredential', 'status': {'token': 'from-exec'}}))\n"
    )
    kubeconfig = tmp_path / "config"
    doc = {
        "clusters": [
            {"name": "a", "cluster": {"server": "https://a", "certificate-authority": "ca.crt"}},
            {"name": "b", "cluster": {"server": "https://b"}},
        ],
        "users": [
            {"name": "file", "user": {"tokenFile": str(tmp_path / "tok")}},
            {
                "name": "exec",
                "user": {
                    "exec": {
                        "command": sys.executable,
                        "args": [str(plugin)],
                        "apiVersion": "client.authentication.k8s.io/v1",
                    }
                },
            },
        ],
        "contexts": [
            {"name": "one", "context": {"cluster": "a", "user": "file"}},
            {"name": "two", "context": {"cluster": "a", "user": "exec"}},
        ],
        "current-context": "one",
    }
    kubeconfig.write_text(json.dumps(doc))
    one = parse_kubeconfig(flatten_kubeconfig(kubeconfig))
    assert (one.server, one.ca_pem, dict(one.user)) == ("https://a", PEM, {"token": "from-file"})
    two = yaml.safe_load(flatten_kubeconfig(kubeconfig, "two"))
    assert two["users"][0]["user"] == {"token": "from-exec"}
    assert len(two["clusters"]) == 1  # only the chosen context travels
    with pytest.raises(CLIError):
        flatten_kubeconfig(kubeconfig, "three")
