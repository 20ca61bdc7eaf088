"""Tether's Kubernetes seam.

- :mod:`tether.kube.client`: ``KubeClient``, the one place where Tether talks HTTP to a
  Kubernetes API server (a thin layer over lightkube).
- :mod:`tether.kube.errors`: the error tree every Kubernetes failure is mapped onto, with
  ``retryable`` separating retry-later failures from permanent ones.
- :mod:`tether.kube.envtest`: ``LocalControlPlane``, a real etcd + kube-apiserver on
  loopback for tests (binaries built by ``scripts/build-kube.sh``).
"""
