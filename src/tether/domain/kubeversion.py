"""Kubernetes versions Tether supports, and the node/control-plane version-skew rule.

Pure: callers pass the versions they read (``/version`` of the API server,
``status.nodeInfo.kubeletVersion`` of a Node, a profile's Kubernetes layer).

- **Supported control planes**: :data:`MIN_SUPPORTED` to :data:`MAX_SUPPORTED` (1.31 to
  1.37). The lower bound follows the upstream support window plus the older releases
  managed offerings still run under extended support; the upper bound is the newest
  release Tether is tested against (the local control plane in the test suite).
- **Skew**: a node's kubelet may be at most :data:`MAX_NODE_SKEW` (3) minor versions
  behind the control plane and never ahead of it (upstream's kubelet skew policy since
  1.28). The patch level plays no part in either rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from tether.errors import Invalid

__all__ = [
    "MAX_NODE_SKEW",
    "MAX_SUPPORTED",
    "MIN_SUPPORTED",
    "KubeMinor",
    "check_control_plane",
    "check_node_skew",
    "control_plane_problem",
    "node_skew_problem",
    "parse_version",
]

#: How many minor versions a kubelet may trail the control plane.
MAX_NODE_SKEW = 3

# Accepts "1.37", "v1.37.2", "1.37.2-eks-4096722", "v1.37.0+k3s1", "1.37+" (a /version minor).
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\+?(?:\.(\d+))?(?:[-+].*)?$")


@total_ordering
@dataclass(frozen=True)
class KubeMinor:
    """A Kubernetes ``MAJOR.MINOR`` (the patch is kept for display only)."""

    major: int
    minor: int
    patch: int | None = None

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def full(self) -> str:
        """``1.37.2`` when the patch is known, else ``1.37``."""
        return str(self) if self.patch is None else f"{self}.{self.patch}"

    def _key(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KubeMinor):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: KubeMinor) -> bool:
        return self._key() < other._key()

    def minors_behind(self, newer: KubeMinor) -> int:
        """How many minor releases ``self`` trails ``newer`` (negative when ahead).

        Only major version 1 exists; a different major counts as unbounded skew.
        """
        if self.major != newer.major:
            return 1000 if self.major < newer.major else -1000
        return newer.minor - self.minor


MIN_SUPPORTED = KubeMinor(1, 31)
MAX_SUPPORTED = KubeMinor(1, 37)


def parse_version(text: str) -> KubeMinor:
    """Parse a Kubernetes version string; raise :class:`~tether.errors.Invalid` if it is none."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise Invalid(
            f"{text!r} is not a Kubernetes version (like 1.37 or v1.37.2)",
            field="version",
            rule="kube_version",
        )
    major, minor, patch = match.groups()
    return KubeMinor(int(major), int(minor), int(patch) if patch is not None else None)


def control_plane_problem(version: KubeMinor) -> str | None:
    """Say why Tether cannot manage a control plane at ``version``, or ``None``."""
    if version < MIN_SUPPORTED or version > MAX_SUPPORTED:
        return (
            f"Kubernetes {version.full} is not supported; Tether supports control planes "
            f"{MIN_SUPPORTED} to {MAX_SUPPORTED}"
        )
    return None


def check_control_plane(version: KubeMinor) -> KubeMinor:
    """Return ``version`` if supported, else raise :class:`~tether.errors.Invalid`."""
    problem = control_plane_problem(version)
    if problem is not None:
        raise Invalid(problem, field="serverVersion", rule="supported_version")
    return version


def node_skew_problem(control_plane: KubeMinor, node: KubeMinor) -> str | None:
    """Say why a kubelet at ``node`` may not join ``control_plane``, or ``None`` if it may.

    At most :data:`MAX_NODE_SKEW` minors behind, never ahead.
    """
    behind = node.minors_behind(control_plane)
    if behind < 0:
        return (
            f"kubelet {node.full} is newer than the control plane {control_plane.full}; "
            "a node may never be ahead of its control plane"
        )
    if behind > MAX_NODE_SKEW:
        return (
            f"kubelet {node.full} is {behind} minor versions behind the control plane "
            f"{control_plane.full}; at most {MAX_NODE_SKEW} are allowed"
        )
    return None


def check_node_skew(control_plane: KubeMinor, node: KubeMinor) -> None:
    """Raise :class:`~tether.errors.Invalid` if ``node`` breaks the skew rule."""
    problem = node_skew_problem(control_plane, node)
    if problem is not None:
        raise Invalid(problem, field="kubernetesVersion", rule="version_skew")
