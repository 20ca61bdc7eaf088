"""SIMULATED and test-only parts: nothing in production code may import this package.

- :mod:`tether.sim.envtest`: ``LocalControlPlane``, a real etcd + kube-apiserver (and the
  controller manager and scheduler when built) on loopback, for tests and the demo;
- :mod:`tether.sim.kubesim`: ``KubeletFleet``, simulated kubelets (Node objects and
  Leases, no containers) for scale tests and the demo;
- :mod:`tether.sim.kubelet_host`: a host whose systemd is recorded and whose kubelet is
  simulated;
- :mod:`tether.sim.agent`: the real agent running node plans on that simulated host;
- :mod:`tether.sim.demo` and :mod:`tether.sim.demo_kube`: the objects, artifacts and
  control plane of ``tether demo``.

The import contracts in ``pyproject.toml`` forbid every production package from
importing ``tether.sim``; only the CLI's demo and ``--simulate-kubelet`` paths do.
"""
