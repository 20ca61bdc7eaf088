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
import logging
import threading
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tether.domain.nodeidentity import KUBELET_CLIENT_SIGNER
from tether.kube.client import KubeClient
from tether.kube.errors import KubeError
from tether.kube.resources import CertificateSigningRequest
from tether.pki.authority import CLOCK_SKEW, CertificateAuthority

__all__ = ["SimulatedSigner"]

log = logging.getLogger(__name__)


def _approved(csr: CertificateSigningRequest) -> bool:
    conditions = csr.status.conditions if csr.status is not None else None
    return any(c.type == "Approved" and c.status == "True" for c in conditions or [])


def _signed(csr: CertificateSigningRequest) -> bool:
    return bool(csr.status is not None and csr.status.certificate)


class SimulatedSigner:
    """Signs approved kubelet client CSRs with ``ca`` (see the module docstring).

    :meth:`sign_pending` signs what is due once; :meth:`start` does it every ``interval``
    seconds in a thread until :meth:`stop`. ``signed`` lists the CSRs signed, in order.
    """

    def __init__(
        self,
        client: KubeClient,
        ca: CertificateAuthority,
        *,
        lifetime: timedelta = timedelta(hours=24),
        interval: float = 0.2,
    ) -> None:
        self.client = client
        self.ca = ca
        self.lifetime = lifetime
        self.interval = interval
        self.signed: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def sign_pending(self) -> list[str]:
        """Sign every approved, unsigned kubelet client CSR; the names signed."""
        done = []
        for csr in self.client.list(CertificateSigningRequest):
            name = csr.metadata.name if csr.metadata else None
            if (
                not name
                or csr.spec.signerName != KUBELET_CLIENT_SIGNER
                or not _approved(csr)
                or _signed(csr)
            ):
                continue
            certificate = base64.b64encode(self._certificate(csr)).decode()
            self.client.patch(
                CertificateSigningRequest.Status, name, {"status": {"certificate": certificate}}
            )
            done.append(name)
        self.signed += done
        return done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sign_pending()
            except KubeError as exc:  # the API server is briefly away: next round
                log.warning("simulated signer: %s", exc)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="simulated-signer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
