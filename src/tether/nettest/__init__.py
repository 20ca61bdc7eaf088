"""Try a network plan for real: namespaces, strongSwan (kernel-libipsec) and BIRD 2.

Needs root. ``run_testbed(doc)`` checks the document, plans it with fresh keys, builds
the cloud VPC, each site's VPN server (and main router) and each node as network
namespaces, loads the generated configs, pings every node and pod address from the VPC,
and tears everything down again.
"""

from __future__ import annotations

from tether.nettest.testbed import (
    Probe,
    Testbed,
    TestbedError,
    TestbedRefused,
    TestbedReport,
    existing_namespaces,
    missing_requirements,
    open_testbed,
    random_psks,
    run_testbed,
)
from tether.nettest.topology import Topology, TopologyError, layout

__all__ = [
    "Probe",
    "Testbed",
    "TestbedError",
    "TestbedRefused",
    "TestbedReport",
    "Topology",
    "TopologyError",
    "existing_namespaces",
    "layout",
    "missing_requirements",
    "open_testbed",
    "random_psks",
    "run_testbed",
]
