"""Desired-state documents per host, what agents applied, and the long-poll watcher.

People (or controllers) store a JSON document per host; its hash is SHA-256 of the
canonical JSON. An agent long-polls with the hash it knows and gets the document as soon
as the stored hash differs; then it reports ``{hash, result}``.

:class:`DesiredWatcher` serves every waiting agent from one query per interval: it keeps
the current hash of every host in memory (read once, then only rows updated since the
last look), and wakes the waiters of hosts whose hash changed. A write through this
process wakes them at once. Many plane replicas can share the store: each one's watcher
sees the others' writes within an interval.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Select, Table, delete, select
from sqlalchemy.orm import Session

from tether.domain.agent import AppliedReport, DesiredDocument, DesiredStatus, document_hash
from tether.domain.models import EventType, ObjectKind, PoolSpec
from tether.domain.nodeplan import reimages
from tether.domain.profiles import REDACTED, redact, sensitive_values
from tether.errors import Conflict, NotFound, PlaneError
from tether.netplan.vpnserver import hide_keys
from tether.services import events
from tether.services.profiles import load_profile
from tether.services.trust import reopen_enrolment
from tether.store.bulk import among, among_param, insert_many, update_many
from tether.store.db import Database
from tether.store.repo import get_named
from tether.store.schema import DesiredStateRow, HostRow, PoolRow, utcnow


def to_status(row: DesiredStateRow) -> DesiredStatus:
    """The row as people see it: a VPN server's keys are hidden (the agent alone gets them)."""
    return DesiredStatus(
        host=row.host_name,
        hash=row.hash,
        document=hide_keys(row.document, REDACTED),
        updated_at=row.updated_at,
        applied_hash=row.applied_hash,
        applied_result=row.applied_result,
        applied_at=row.applied_at,
        in_sync=row.applied_hash == row.hash,
    )


def set_desired(
    session: Session, name: str, document: dict[str, Any], *, now: datetime | None = None
) -> DesiredStatus:
    now = now or utcnow()
    get_named(session, HostRow, "host", name)
    digest = document_hash(document)
    row = session.get(DesiredStateRow, name)
    if row is None:
        row = DesiredStateRow(host_name=name, document=document, hash=digest, updated_at=now)
        session.add(row)
    elif row.hash != digest:
        row.document, row.hash, row.updated_at = document, digest, now
    else:
        return to_status(row)
    events.record(
        session, ObjectKind.HOST, name, "DesiredStateChanged", f"desired state {digest[:12]}"
    )
    session.flush()
    return to_status(row)


_DESIRED = cast(Table, DesiredStateRow.__table__)
#: Rows of :func:`set_many` and :func:`report_applied_many` name their host so.
_BY_HOST = {"host_name": "host"}


@cache
def _read_for_reports(dialect: str) -> Select[Any]:
    """Built once per kind of store: building it cost more than running it."""
    return (
        select(
            _DESIRED.c.host_name,
            _DESIRED.c.hash,
            _DESIRED.c.document,
            _DESIRED.c.updated_at,
            _DESIRED.c.applied_hash,
            _DESIRED.c.applied_result,
            HostRow.pool,
        )
        .outerjoin(HostRow, HostRow.name == _DESIRED.c.host_name)
        .where(among_param(dialect, _DESIRED.c.host_name, "hosts"))
    )


def set_many(
    session: Session,
    documents: Mapping[str, dict[str, Any] | None],
    *,
    now: datetime,
    digests: Mapping[str, str] | None = None,
) -> list[tuple[ObjectKind, str, str, str, EventType]]:
    """Store (or clear, for None) many hosts' documents at once; return the events to
    record (the pool reconciler records them with the rest of its plan). ``digests``
    gives the hashes of documents the caller computed already (:func:`document_hash`).

    A rollout step writes a hundred documents at a thousand nodes: the stored hashes are
    read (not the documents), and the changes go out as one statement per kind."""
    session.flush()  # the statements below go past the session: what it holds goes first
    conn = session.connection()
    stored = dict(
        conn.execute(
            select(_DESIRED.c.host_name, _DESIRED.c.hash).where(
                among(conn, _DESIRED.c.host_name, documents)
            )
        ).all()
    )
    gone = [name for name, document in documents.items() if document is None and name in stored]
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    notes: list[tuple[ObjectKind, str, str, str, EventType]] = []
    for name, document in documents.items():
        if document is None:
            continue
        digest = (digests or {}).get(name) or document_hash(document)
        if stored.get(name) == digest:
            continue
        values = {"document": document, "hash": digest, "updated_at": now}
        if name in stored:
            changed.append({"host": name, **values})
        else:
            new.append({"host_name": name, **values})
        notes.append(
            (
                ObjectKind.HOST,
                name,
                "DesiredStateChanged",
                f"desired state {digest[:12]}",
                EventType.NORMAL,
            )
        )
    if gone:
        conn.execute(delete(_DESIRED).where(among(conn, _DESIRED.c.host_name, gone)))
    update_many(conn, _DESIRED, changed, _BY_HOST)
    insert_many(conn, _DESIRED, new)
    return notes


def get_status(session: Session, name: str) -> DesiredStatus:
    """The host's desired state as people see it: values of the sensitive variables of
    its pool's profile are shown as ``******`` (the agent alone gets them)."""
    row = session.get(DesiredStateRow, name)
    host = session.scalars(select(HostRow).where(HostRow.name == name)).first()
    if row is None or host is None:
        get_named(session, HostRow, "host", name)
        raise NotFound("desired state of host", name)
    status = to_status(row)
    secrets = _pool_secrets(session, host.pool) if host.pool else []
    if secrets:
        status = status.model_copy(update={"document": redact(row.document, secrets)})
    return status


def _pool_secrets(session: Session, pool: str) -> list[str]:
    row = session.scalars(select(PoolRow).where(PoolRow.name == pool)).first()
    if row is None or not row.spec.get("profile"):
        return []
    spec = PoolSpec.model_validate(row.spec)
    profile = load_profile(session, spec.profile) if spec.profile else None
    return sensitive_values(profile.variables, spec.variables) if profile else []


def get_document(session: Session, name: str) -> DesiredDocument | None:
    row = session.get(DesiredStateRow, name)
    return DesiredDocument(hash=row.hash, document=row.document) if row else None


def report_applied(
    session: Session, name: str, report: AppliedReport, *, now: datetime | None = None
) -> DesiredStatus:
    """Record what the agent applied. A report for a hash that is not current is refused
    (:class:`Conflict`); one for a host without a desired state too (:class:`NotFound`)."""
    (outcome,) = report_applied_many(session, [(name, report)], now=now or utcnow())
    if isinstance(outcome, PlaneError):
        raise outcome
    return outcome


def report_applied_many(
    session: Session,
    reports: Sequence[tuple[str, AppliedReport]],
    *,
    now: datetime,
    revoked: list[tuple[int, str]] | None = None,
) -> list[DesiredStatus | PlaneError]:
    """Record many agents' reports at once; return each one's status, or the error that
    refused it (the others are recorded all the same).

    The nodes of one rollout step report together (a hundred at a thousand nodes), and a
    report one at a time cost four statements, each a round trip to PostgreSQL. Here the
    batch takes the same four, without the ORM's unit of work: read the rows with their
    hosts' pools, update them, find the events' recent repeats and record the events (the
    last two once per pool the hosts are in).

    A re-image plan reported applied ends the host's enrolment in the same transaction
    (:func:`tether.services.trust.reopen_enrolment`): the agent reboots into its
    installer next, and the new image enrols again under the host's name with the seed.
    Decided by the stored document, not by anything the agent says, and done once per
    document (a failed report before it does not count). The certificates it revokes are
    added to ``revoked`` (``(serial, issuer)``): the caller tells its revocation cache once
    the transaction is committed."""
    session.flush()  # the statements below go past the session: what it holds goes first
    conn = session.connection()
    found = {
        row.host_name: row
        for row in conn.execute(
            _read_for_reports(conn.dialect.name), {"hosts": sorted({n for n, _ in reports})}
        )
    }
    outcomes: list[DesiredStatus | PlaneError] = []
    updates: dict[str, dict[str, Any]] = {}
    notes: dict[str | None, list[tuple[ObjectKind, str, str, str, EventType]]] = {}
    reimaged: dict[str, str | None] = {}
    for name, report in reports:
        row = found.get(name)
        if row is None:
            outcomes.append(NotFound("desired state of host", name))
            continue
        if report.hash != row.hash:
            outcomes.append(
                Conflict(
                    f"hash {report.hash[:12]} is not the current desired state "
                    f"({row.hash[:12]}); fetch it again",
                    field="hash",
                    rule="current",
                )
            )
            continue
        updates[name] = {  # a later report of the same host wins
            "host": name,
            "applied_hash": report.hash,
            "applied_result": report.result,
            "applied_at": now,
        }
        ok = bool(report.result.get("ok", True))
        done_before = row.applied_hash == report.hash and (row.applied_result or {}).get("ok")
        if ok and not done_before and reimages(row.document):
            reimaged[name] = row.pool  # once: a report sent again resets nothing more
        message = f"desired state {report.hash[:12]} " + (
            "applied" if ok else f"failed: {str(report.result.get('message', ''))[:200]}"
        )
        notes.setdefault(row.pool, []).append(
            (
                ObjectKind.HOST,
                name,
                "DesiredStateApplied" if ok else "DesiredStateFailed",
                message,
                EventType.NORMAL if ok else EventType.WARNING,
            )
        )
        outcomes.append(
            DesiredStatus(
                host=name,
                hash=row.hash,
                document=hide_keys(row.document, REDACTED),
                updated_at=row.updated_at,
                applied_hash=report.hash,
                applied_result=report.result,
                applied_at=now,
                in_sync=True,
            )
        )
    update_many(conn, _DESIRED, list(updates.values()), _BY_HOST)
    for pool, of_pool in notes.items():
        events.record_many(session, of_pool, now=now, pool=pool)
    for name, pool in reimaged.items():
        image = found[name].document["node"].get("image")
        gone = reopen_enrolment(session, name, f"re-image to {image} begun", now=now, pool=pool)
        if revoked is not None:
            revoked.extend(gone)
    return outcomes


def reimage_plan(session: Session, name: str) -> DesiredStateRow | None:
    """The host's desired state if it is a re-image plan (the host is being re-imaged)."""
    row = session.get(DesiredStateRow, name)
    return row if row is not None and reimages(row.document) else None


def drop_reimage(session: Session, name: str) -> bool:
    """Delete the host's desired state if it is a re-image plan: the host enrolled again
    from its new image, which must not run its predecessor's re-image. True if dropped."""
    row = reimage_plan(session, name)
    if row is None:
        return False
    session.delete(row)
    return True


class DesiredWatcher:
    """Current desired-state hashes of every host, and agents waiting for a change."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.hashes: dict[str, str] = {}
        self._since: datetime | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self.closed = False

    def refresh(self) -> list[str]:
        """Read hashes changed since the last refresh (all on the first); return the hosts."""
        query = select(DesiredStateRow.host_name, DesiredStateRow.hash, DesiredStateRow.updated_at)
        if self._since is not None:
            # Overlap a little: a row committed late with an earlier timestamp is not missed.
            query = query.where(DesiredStateRow.updated_at >= self._since - timedelta(seconds=5))
        with self.db.session() as session:
            rows = session.execute(query).all()
        changed = []
        for name, digest, updated in rows:
            if self.hashes.get(name) != digest:
                self.hashes[name] = digest
                changed.append(name)
            if self._since is None or updated > self._since:
                self._since = updated
        if self._since is None:
            self._since = utcnow()
        return changed

    def wake(self, names: list[str]) -> None:
        for name in names:
            for fut in self._waiters.pop(name, set()):
                if not fut.done():
                    fut.set_result(None)

    def close(self) -> None:
        """The server stops: answer every long poll now, and any new one at once, so
        shutdown does not wait for (or cancel) agents' polls."""
        self.closed = True
        self.wake(list(self._waiters))

    def changed(self, name: str, digest: str) -> None:
        """Note a write made by this process and wake its waiters now."""
        self.hashes[name] = digest
        self.wake([name])

    async def wait(self, name: str, known: str | None, timeout: float) -> bool:
        """Wait until the host's hash differs from ``known``; False on timeout."""
        current = self.hashes.get(name)
        if current is not None and current != known:
            return True
        if self.closed:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[name].add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiters.pop(name, None)
        return self.hashes.get(name) != known
