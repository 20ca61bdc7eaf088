"""The NodeConfig document (tether node config check) and the files generated from it,
pinned by golden files. Regenerate after an intended change with
``TETHER_UPDATE_GOLDEN=1 pytest tests/unit/node/test_nodeconfig.py`` and review the diff."""

from __future__ import annotations

import base64
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tether.cli.main import app as cli
from tether.node import render
from tether.node.nodeconfig import NodeConfigError, cluster_dns, parse_node_config, provider_id

GOLDEN = Path(__file__).parent / "golden"
TOKEN = "abcdef.0123456789abcdef"
#: A label key that would add a line to the kubelet unit if it were not refused.
INJECTED = "a\nExecStartPre=/bin/sh"

Doc = Callable[..., dict[str, Any]]


#: A host like this project's CI machine: no systemd as PID 1, cgroup v1, no
#: CAP_SYS_RESOURCE, Debian's CNI plugins, and the node under a root prefix.
PLAIN_HOST = render.HostProfile(
    root="/srv/node",
    systemd=False,
    cgroup_v2=False,
    lower_oom_score=False,
    cni_bin_dir="/usr/lib/cni",
)


def _files(doc: dict[str, Any]) -> dict[str, render.RenderedFile]:
    config = parse_node_config(doc)
    plain = {
        "sandbox_image": "localhost/tether/pause:3.10",
        "runc": "/srv/node/usr/local/sbin/runc",
    }
    return {
        "sysctl.conf": render.sysctl_conf(),
        "modules.conf": render.modules_conf(),
        "containerd-config-v1.toml": render.containerd_config(1),
        "containerd-config-v2.toml": render.containerd_config(2),
        "containerd-dropin-v1.toml": render.containerd_dropin(
            config, 1, render.containerd_config_doc(1)
        ),
        "containerd-dropin-v2.toml": render.containerd_dropin(config, 2),
        "containerd.service": render.containerd_unit("/usr/local/bin/containerd"),
        "kubelet-config.yaml": render.kubelet_config(config),
        "kubelet.service": render.kubelet_unit(config, "/usr/local/bin/kubelet"),
        "bootstrap-kubeconfig": render.bootstrap_kubeconfig(config, TOKEN),
        "ca.crt": render.ca_file(config),
        "plain-containerd-config-v1.toml": render.containerd_config(1, PLAIN_HOST, **plain),
        "plain-containerd-config-v2.toml": render.containerd_config(2, PLAIN_HOST, **plain),
        "plain-containerd.service": render.containerd_unit(
            "/srv/node/usr/local/bin/containerd", PLAIN_HOST
        ),
        "plain-kubelet-config.yaml": render.kubelet_config(config, PLAIN_HOST),
        "plain-kubelet.service": render.kubelet_unit(
            config, "/srv/node/usr/local/bin/kubelet", PLAIN_HOST
        ),
        "plain-bootstrap-kubeconfig": render.bootstrap_kubeconfig(config, TOKEN, PLAIN_HOST),
    }


def test_generated_files_match_the_golden_files(node_config_doc: Doc) -> None:
    files = _files(node_config_doc(eksLabels=True))
    if os.environ.get("TETHER_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        for name, file in files.items():
            (GOLDEN / name).write_bytes(file.content)
    for name, file in files.items():
        assert file.content == (GOLDEN / name).read_bytes(), f"{name} differs from its golden file"
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(files)


def test_kubelet_config_carries_what_a_hybrid_node_needs(node_config_doc: Doc) -> None:
    config = parse_node_config(node_config_doc())
    kubelet = yaml.safe_load(render.kubelet_config(config).content)
    assert kubelet["providerID"] == provider_id(config) == "tether://prod/edge-01"
    assert kubelet["serverTLSBootstrap"] is True
    assert kubelet["clusterDNS"] == [str(cluster_dns(config))] == ["172.20.0.10"]
    assert kubelet["maxPods"] == 58  # the NodeConfig's own setting, merged in
    assert kubelet["authentication"]["x509"]["clientCAFile"] == render.CA_FILE
    unit = render.kubelet_unit(config, "/usr/local/bin/kubelet").content.decode()
    assert "--node-ip=10.80.1.11" in unit
    assert "tether.io/compute-type=hybrid" in unit
    assert "eks.amazonaws.com/compute-type" not in unit
    assert render.bootstrap_kubeconfig(config, TOKEN).mode == 0o600


def test_ca_may_be_given_as_base64(node_config_doc: Doc) -> None:
    doc = node_config_doc()
    pem = doc["spec"]["cluster"]["certificateAuthority"]
    doc["spec"]["cluster"]["certificateAuthority"] = base64.b64encode(pem.encode()).decode()
    assert parse_node_config(doc).spec.cluster.certificate_authority == pem


def _problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(NodeConfigError) as info:
        parse_node_config(doc)
    return {p.field: p.message for p in info.value.problems}


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        (("node", "ip"), "10.80.2.11", "spec.node.ip", "not inside the node CIDR 10.80.1.0/24"),
        (("node", "nodeCIDR"), "172.20.0.0/24", "spec.node.nodeCIDR", "overlaps the service"),
        (("node", "name"), "Edge_01", "spec.node.name", "should match pattern"),
        (("cluster", "apiServerEndpoint"), "http://x", "spec.cluster.apiServerEndpoint", "https"),
        (("cluster", "certificateAuthority"), "nope", "spec.cluster.certificateAuthority", "PEM"),
        (("kubelet", "config"), {"providerID": "x"}, "spec.kubelet.config", "set by Tether"),
        (("kubelet", "flags"), ["--node-ip=1.2.3.4"], "spec.kubelet.flags", "set by Tether"),
        (("containerd", "config"), "[unclosed", "spec.containerd.config", "not valid TOML"),
        (
            ("node", "labels"),
            {"tether.io/compute-type": "x"},
            "spec.node.labels.tether.io/compute-type",
            "set by Tether",
        ),
        (("credentials",), {}, "spec.credentials", "exactly one of"),
        (("node", "colour"), "blue", "spec.node.colour", "Extra inputs are not permitted"),
        (("node", "ip"), "10.80.1.0", "spec.node.ip", "network or broadcast address"),
        (("node", "labels"), {INJECTED: "x"}, "spec.node.labels", "is not a label key"),
        (("node", "labels"), {"zone": "a,b=c"}, "spec.node.labels", "is not a label value"),
        (("kubelet", "flags"), ["--v=2 --hostname-override=x"], "spec.kubelet.flags", "spaces"),
    ],
)
def test_every_broken_rule_names_its_field(
    node_config_doc: Doc, path: tuple[str, ...], value: Any, field: str, message: str
) -> None:
    doc = node_config_doc()
    target = doc["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = _problems(doc)
    assert field in problems, problems
    assert message in problems[field]


def test_config_check_cli(tmp_path: Path, node_config_doc: Doc) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(node_config_doc()))
    result = CliRunner().invoke(cli, ["node", "config", "check", "-c", f"file://{good}"])
    assert result.exit_code == 0, result.output
    assert "NodeConfig valid: node edge-01 (10.80.1.11) joins cluster prod" in result.output

    doc = node_config_doc(ip="10.99.0.1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(cli, ["node", "config", "check", "-c", f"file://{bad}"])
    assert result.exit_code == 7
    assert "spec.node.ip" in result.output and "not inside the node CIDR" in result.output

    result = CliRunner().invoke(cli, ["node", "config", "check", "-c", "https://x/y"])
    assert result.exit_code == 7 and "only file:// is supported" in result.output


def test_debug_cli_prints_every_check_in_order_with_remedies(
    tmp_path: Path, node_config_doc: Doc
) -> None:
    """On this machine: the API endpoint (10.226.0.10) is unreachable and the node IP is not
    local, so debug must fail and say what to do; the order of checks is fixed."""
    config = tmp_path / "nodeconfig.yaml"
    config.write_text(yaml.safe_dump(node_config_doc()))
    args = ["node", "debug", "-c", f"file://{config}", "--root", str(tmp_path), "-o", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    rows = yaml.safe_load(result.stdout)
    names = [r["name"].split(":")[0] for r in rows]  # certificate:<path of the CA>
    assert names == [
        "time-sync", "swap", "dns", "api-reachable", "certificate", "node-ip", "mtu", "kubelet"
    ]  # fmt: skip
    node_ip = rows[names.index("node-ip")]
    assert node_ip["status"] == "fail" and "10.80.1.11" in node_ip["remedy"]
    assert all(r["remedy"] for r in rows if r["status"] != "ok")


def test_the_dropin_says_the_version_its_plugin_names_belong_to(node_config_doc: Doc) -> None:
    """containerd 2.0 to 2.2 migrate only imports of version 0 or 1: a version 2 drop-in
    would keep io.containerd.grpc.v1.cri tables nothing reads. So v2 names go without a
    version line (migrated by every 2.x), v3 names say version 3; 1.x gets version 2."""
    v3 = "[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/x'\n"
    v2 = '[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/x"\n'

    def dropin(text: str, major: int) -> dict[str, Any]:
        doc = node_config_doc()
        doc["spec"]["containerd"]["config"] = text
        content = render.containerd_dropin(parse_node_config(doc), major).content
        return tomllib.loads(content.decode())

    assert "version" not in dropin(v2, 2)
    assert dropin(v3, 2)["version"] == 3
    assert dropin(v2, 1)["version"] == 2
    assert dropin("version = 2\n" + v2, 2) == {"plugins": dropin(v2, 2)["plugins"]}
    with pytest.raises(render.DropInError, match="written for containerd 2"):
        dropin(v3, 1)


def test_on_containerd_1_each_plugin_table_of_the_dropin_carries_config_tomls(
    node_config_doc: Doc,
) -> None:
    """containerd 1.x replaces a whole plugin table with the imported one."""
    main = render.containerd_config_doc(1, PLAIN_HOST, sandbox_image="localhost/p:1")
    cri = tomllib.loads(
        render.containerd_dropin(parse_node_config(node_config_doc()), 1, main).content.decode()
    )["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/p:1"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["registry"] == {"config_path": "/etc/containerd/certs.d"}  # the NodeConfig's
