"""Reading the node through the kubelet's own kubeconfig while the kubelet writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.node.kubeview import KubeNodeView, NodeViewError


def test_a_kubeconfig_naming_a_certificate_not_written_yet_is_not_ready_yet(
    tmp_path: Path,
) -> None:
    """The kubelet writes its kubeconfig, then its client certificate: in between, the
    view says why it cannot read the node (wait-ready keeps waiting) rather than failing
    the phase with a bare OSError (seen with a real kubelet)."""
    kubeconfig = tmp_path / "kubeconfig"
    missing = tmp_path / "pki" / "kubelet-client-current.pem"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [
                    {
                        "name": "u",
                        "user": {"client-certificate": str(missing), "client-key": str(missing)},
                    }
                ],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    view = KubeNodeView("https://127.0.0.1:9", "unused", kubeconfig)
    with pytest.raises(NodeViewError, match="cannot use the kubeconfig"):
        view.node("edge-01")
