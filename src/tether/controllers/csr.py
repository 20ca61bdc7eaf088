"""The CSR approver: approves or denies kubelet certificate requests of Tether hosts.

It watches CertificateSigningRequests (list-then-watch, resumable), and for each one that
is still pending (no ``Approved``/``Denied`` condition) reads the request (PKCS#10
PEM), asks the pure policy :func:`tether.domain.nodeidentity.decide_csr` with the
plane's hosts, and writes the verdict through the ``/approval`` subresource with the
policy's reason and message. Each verdict is an event on the host (or on the cluster,
when the name is no Tether host). Requests Tether has no say in are left alone.

Nothing signs here: issuing the certificate is the signer's job (kube-controller-manager
in a real cluster). The decision is recorded in the CSR itself, so a restart finds only
undecided requests and never decides one twice.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from tether.controllers.watch import ListWatchLoop, WatchController
from tether.domain.models import EventType, ObjectKind
from tether.domain.nodeidentity import CSRDecision, CSRFacts, HostIdentity, Verdict, decide_csr
from tether.kube.client import KubeClient, WatchEvent
from tether.kube.errors import KubeError
from tether.kube.resources import CertificateSigningRequest
from tether.metrics import reconciling
from tether.services import events
from tether.services.nodeidentity import host_identities
from tether.store.db import Database

__all__ = ["CSRApprover", "csr_facts", "is_pending"]

log = logging.getLogger(__name__)


def is_pending(csr: CertificateSigningRequest) -> bool:
    conditions = csr.status.conditions if csr.status is not None else None
    return not any(c.type in ("Approved", "Denied") for c in conditions or [])


def _attrs(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def csr_facts(csr: CertificateSigningRequest) -> CSRFacts:
    """What the policy needs from a CSR object; an unreadable request sets ``parse_error``."""
    meta, spec = csr.metadata, csr.spec
    base = CSRFacts(
        name=(meta.name if meta else None) or "",
        signer=spec.signerName,
        username=spec.username or "",
        groups=tuple(spec.groups or ()),
        usages=tuple(spec.usages or ()),
    )
    try:
        raw = spec.request
        pem = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
        request = x509.load_pem_x509_csr(pem)
    except (ValueError, binascii.Error, TypeError) as exc:
        return replace(base, parse_error=str(exc) or type(exc).__name__)
    common = _attrs(request.subject, NameOID.COMMON_NAME)
    dns: list[str] = []
    ips: list[str] = []
    other: list[str] = []
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    except ValueError as exc:  # a malformed extension
        return replace(base, parse_error=str(exc))
    if sans is not None:
        dns = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
        ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
        other = [str(v) for v in sans.get_values_for_type(x509.RFC822Name)]
        other += [str(v) for v in sans.get_values_for_type(x509.UniformResourceIdentifier)]
    return replace(
        base,
        common_name=common[0] if len(common) == 1 else None,
        organizations=tuple(_attrs(request.subject, NameOID.ORGANIZATION_NAME)),
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        other_sans=tuple(other),
    )


class CSRApprover(WatchController[CertificateSigningRequest]):
    """Decides the pending kubelet CSRs of one cluster (module doc).

    *deny_foreign* also denies kubelet CSRs no Tether identity is involved in; leave it
    off in clusters that have other (cloud) nodes with their own approver.
    """

    def __init__(
        self,
        db: Database,
        cluster: str,
        client: KubeClient,
        *,
        deny_foreign: bool = False,
        resync_seconds: int = 60,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        self.db = db
        self.cluster = cluster
        self.client = client
        self.deny_foreign = deny_foreign
        self._pending: dict[str, CertificateSigningRequest] = {}
        self._lock = threading.Lock()
        self.loop: ListWatchLoop[CertificateSigningRequest] = ListWatchLoop(
            client,
            CertificateSigningRequest,
            on_list=self._on_list,
            on_event=self._on_event,
            on_resync=self._resync,
            resync_seconds=resync_seconds,
            sleep=sleep,
            name=f"csr[{cluster}]",
        )
        #: (csr name, decision) for every verdict written, for tests and logs.
        self.decided: list[tuple[str, CSRDecision]] = []

    def _hosts(self) -> Mapping[str, HostIdentity]:
        with self.db.session() as session:
            return host_identities(session)

    def _on_list(self, items: list[CertificateSigningRequest]) -> None:
        pending = {
            c.metadata.name: c for c in items if c.metadata and c.metadata.name and is_pending(c)
        }
        with self._lock:
            self._pending = pending
        self.decide_all(list(pending.values()))

    def _on_event(self, event: WatchEvent[CertificateSigningRequest]) -> None:
        csr = event.object
        name = csr.metadata.name if csr.metadata else None
        if not name:
            return
        if event.type == "DELETED" or not is_pending(csr):
            with self._lock:
                self._pending.pop(name, None)
            return
        with self._lock:
            self._pending[name] = csr
        self.decide_all([csr])

    def _resync(self) -> None:
        """Pending CSRs Tether ignored may concern a host registered since: look again."""
        with self._lock:
            pending = list(self._pending.values())
        if pending:
            self.decide_all(pending)

    def decide_all(self, csrs: list[CertificateSigningRequest]) -> None:
        with reconciling("csr"):
            hosts = self._hosts()
            for csr in csrs:
                self.decide(csr, hosts)

    def decide(
        self, csr: CertificateSigningRequest, hosts: Mapping[str, HostIdentity]
    ) -> CSRDecision:
        facts = csr_facts(csr)
        decision = decide_csr(
            facts, cluster=self.cluster, hosts=hosts, deny_foreign=self.deny_foreign
        )
        if decision.verdict is Verdict.IGNORE:
            return decision
        approved = decision.verdict is Verdict.APPROVE
        try:
            self.client.set_csr_approval(
                facts.name, approved=approved, reason=decision.reason, message=decision.message
            )
        except KubeError as exc:
            log.warning("csr %s: could not record %s: %s", facts.name, decision.verdict, exc)
            raise
        with self._lock:
            self._pending.pop(facts.name, None)
        self.decided.append((facts.name, decision))
        known = decision.host is not None and decision.host in hosts
        with self.db.session() as session:
            events.record(
                session,
                ObjectKind.HOST if known else ObjectKind.CLUSTER,
                decision.host if known and decision.host else self.cluster,
                "CSRApproved" if approved else "CSRDenied",
                f"{facts.name} ({facts.signer}) from {facts.username}: "
                f"{decision.reason}: {decision.message}",
                EventType.NORMAL if approved else EventType.WARNING,
            )
        log.info("csr %s: %s (%s)", facts.name, decision.verdict, decision.message)
        return decision
