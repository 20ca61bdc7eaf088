"""A SIMULATED CSR signer: what kube-controller-manager's ``csrsigning`` controller does
for kubelet client certificates, for a test control plane that runs no controller
manager.

It signs only what a real cluster's signer would: requests for
``kubernetes.io/kube-apiserver-client-kubelet`` that carry an ``Approved`` condition (from
Tether's CSR approver) and no certificate yet. The certificate has the request's subject
(``CN=system:node:<name>, O=system:nodes``), client-auth usage, and is issued by the
cluster CA the API server trusts for client certificates; it is written to
``status.certificate`` through the ``/status`` subresource, as the real signer does.
Nothing here decides whether a request should be granted: approval is the approver's job.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tether.controllers.watch import ListWatchLoop, WatchController
from tether.domain.nodeidentity import KUBELET_CLIENT_SIGNER
from tether.kube.client import KubeClient, WatchEvent
from tether.kube.resources import CertificateSigningRequest
from tether.pki.authority import CLOCK_SKEW, CertificateAuthority

__all__ = ["SimulatedSigner"]


def _approved(csr: CertificateSigningRequest) -> bool:
    conditions = csr.status.conditions if csr.status is not None else None
    return any(c.type == "Approved" and c.status == "True" for c in conditions or [])


def _signed(csr: CertificateSigningRequest) -> bool:
    return bool(csr.status is not None and csr.status.certificate)


class SimulatedSigner(WatchController[CertificateSigningRequest]):
    """Signs approved kubelet client CSRs with ``ca`` (see the module docstring), watching
    them the way the approver does; ``signed`` lists the CSRs signed, in order."""

    def __init__(
        self,
        client: KubeClient,
        ca: CertificateAuthority,
        *,
        lifetime: timedelta = timedelta(hours=24),
        resync_seconds: int = 30,
    ) -> None:
        self.client = client
        self.ca = ca
        self.lifetime = lifetime
        self.signed: list[str] = []
        self.loop: ListWatchLoop[CertificateSigningRequest] = ListWatchLoop(
            client,
            CertificateSigningRequest,
            on_list=self._on_list,
            on_event=self._on_event,
            resync_seconds=resync_seconds,
            name="simulated-signer",
        )

    def _on_list(self, items: list[CertificateSigningRequest]) -> None:
        for csr in items:
            self.sign(csr)

    def _on_event(self, event: WatchEvent[CertificateSigningRequest]) -> None:
        if event.type != "DELETED":
            self.sign(event.object)

    def _certificate(self, csr: CertificateSigningRequest) -> bytes:
        raw = csr.spec.request
        pem = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
        request = x509.load_pem_x509_csr(pem)
        now = datetime.now(UTC)
        cert = self.ca.issue(
            request.subject,
            request.public_key(),
            not_before=now - CLOCK_SKEW,
            not_after=now + self.lifetime,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, csr: CertificateSigningRequest) -> bool:
        """Sign ``csr`` if it is an approved, unsigned kubelet client request."""
        name = csr.metadata.name if csr.metadata else None
        if (
            not name
            or csr.spec.signerName != KUBELET_CLIENT_SIGNER
            or not _approved(csr)
            or _signed(csr)
        ):
            return False
        certificate = base64.b64encode(self._certificate(csr)).decode()
        self.client.patch(
            CertificateSigningRequest.Status, name, {"status": {"certificate": certificate}}
        )
        self.signed.append(name)
        return True
