"""The Kubernetes object types the rest of Tether uses.

They are lightkube's generated models, re-exported here so that lightkube is imported
nowhere outside :mod:`tether.kube` (an import contract checks it): a change of the
Kubernetes library touches this package only.
"""

from __future__ import annotations

from lightkube.core.resource import Resource
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import Container, ContainerPort, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta, OwnerReference
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.apps_v1 import DaemonSet, Deployment
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace, Node, Pod, Secret, ServiceAccount
from lightkube.resources.networking_v1 import ServiceCIDR
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)

__all__ = [
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "Container",
    "ContainerPort",
    "DaemonSet",
    "Deployment",
    "DeploymentSpec",
    "LabelSelector",
    "Lease",
    "LeaseSpec",
    "Namespace",
    "Node",
    "ObjectMeta",
    "OwnerReference",
    "Pod",
    "PodSpec",
    "PodTemplateSpec",
    "PolicyRule",
    "Resource",
    "Role",
    "RoleBinding",
    "RoleRef",
    "Secret",
    "ServiceAccount",
    "ServiceCIDR",
    "Subject",
]
