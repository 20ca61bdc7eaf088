"""Tether's Kubernetes seam.

- :mod:`tether.kube.client`: ``KubeClient``, the one place where Tether talks HTTP to a
  Kubernetes API server (a thin layer over lightkube).
- :mod:`tether.kube.errors`: the error tree every Kubernetes failure is mapped onto, with
  ``retryable`` separating retry-later failures from permanent ones.
- :mod:`tether.kube.resources`: the Kubernetes object types the rest of Tether uses
  (lightkube's models, re-exported: lightkube is imported nowhere outside this package).

The local control plane for tests lives in :mod:`tether.sim.envtest`.
"""
