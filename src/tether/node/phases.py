"""Running a node action (init, upgrade, uninstall) as ordered, idempotent phases.

Every phase compares what it wants with what the host has and changes only the
difference, so running an action again, after success or after a kill at any point,
converges on the same end state. The journal at
``<root>/var/lib/tether/node/<action>.json`` records which phases completed for which
input (its fingerprint): it is what ``--resume`` reporting and the agent's phase events
are built from; correctness never depends on it, because a rerun runs every phase again.

A phase may be skipped by name (``--skip``); an unknown name is a usage error before
anything runs. Each phase reports ``Started``, then ``Completed`` (with what changed),
``Skipped`` or ``Failed`` through the ``on_event`` callback. A phase fails by raising a
:class:`~tether.errors.HostError`; the report says whether the failure is permanent
(:func:`~tether.errors.is_permanent`), so whoever runs the action knows whether running it
again unchanged can help.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tether.errors import HostError, Permanent, Temporary, describe, is_permanent
from tether.files import write_atomic
from tether.node.tracker import host_path

__all__ = [
    "JOURNAL_DIR",
    "ActionReport",
    "Phase",
    "PhaseError",
    "PhaseEvent",
    "PhaseRefused",
    "PhaseResult",
    "UnknownPhase",
    "check_skip",
    "load_journal",
    "run_phases",
]

JOURNAL_DIR = "/var/lib/tether/node"
Status = Literal["Started", "Completed", "Skipped", "Failed"]


class PhaseError(Temporary):
    """A phase cannot reach its goal yet (the node is not drained, not Ready); the
    message says why and what to do. Running the action again later may succeed."""


class PhaseRefused(Permanent):
    """A phase refuses: it cannot succeed until a person changes the input or the host
    (a containerd major jump, version skew, swap on); the message says what to change."""


class UnknownPhase(Permanent):
    """``--skip`` names a phase the action does not have."""


@dataclass
class PhaseResult:
    """What a phase changed (empty: the host already was as wanted)."""

    changed: list[str] = field(default_factory=list)
    message: str = ""


@dataclass(frozen=True)
class Phase:
    name: str
    description: str
    run: Callable[[], PhaseResult]


@dataclass(frozen=True)
class PhaseEvent:
    action: str
    phase: str
    status: Status
    message: str = ""

    @property
    def reason(self) -> str:
        """An event reason: ``NodeInitKubeletConfigCompleted``."""
        words = [self.action, *self.phase.split("-"), self.status]
        return "Node" + "".join(w[:1].upper() + w[1:] for w in words)


@dataclass
class ActionReport:
    action: str
    phases: list[dict[str, Any]] = field(default_factory=list)
    resumed_after: str | None = None
    ok: bool = True

    @property
    def permanent(self) -> bool:
        """Whether the failed phase failed permanently (False when nothing failed)."""
        return any(p.get("permanent") for p in self.phases if p["status"] == "Failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "ok": self.ok,
            "resumedAfter": self.resumed_after,
            "phases": self.phases,
        }


def _journal_path(root: Path, action: str) -> Path:
    return host_path(root, f"{JOURNAL_DIR}/{action}.json")


def load_journal(root: Path, action: str) -> dict[str, Any]:
    try:
        data = json.loads(_journal_path(root, action).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_journal(root: Path, action: str, journal: dict[str, Any]) -> None:
    write_atomic(_journal_path(root, action), json.dumps(journal, indent=2) + "\n", 0o600)


def check_skip(action: str, phases: Sequence[Phase], skip: Sequence[str]) -> None:
    """Raise :class:`UnknownPhase` if ``skip`` names a phase ``action`` does not have."""
    names = [p.name for p in phases]
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise UnknownPhase(
            f"unknown phase {', '.join(unknown)} for {action}; phases: {', '.join(names)}"
        )


def run_phases(
    action: str,
    phases: Sequence[Phase],
    *,
    root: Path,
    fingerprint: str,
    skip: Sequence[str] = (),
    on_event: Callable[[PhaseEvent], None] = lambda _: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ActionReport:
    """Run ``phases`` in order; stop at the first failure (a :class:`HostError`, raising
    nothing: the report says which phase failed, why, and whether permanently). Raises
    :class:`UnknownPhase` before running anything if ``skip`` names a phase not in
    ``phases``."""
    check_skip(action, phases, skip)
    journal = load_journal(root, action)
    report = ActionReport(action=action)
    if journal.get("fingerprint") == fingerprint and not journal.get("finished"):
        done = journal.get("completed") or []
        report.resumed_after = done[-1] if done else None
    journal = {"fingerprint": fingerprint, "completed": [], "finished": False}
    for phase in phases:
        if phase.name in skip:
            on_event(PhaseEvent(action, phase.name, "Skipped", "skipped on request"))
            report.phases.append({"phase": phase.name, "status": "Skipped", "changed": []})
            continue
        on_event(PhaseEvent(action, phase.name, "Started", phase.description))
        try:
            result = phase.run()
        except HostError as exc:
            message = describe(exc)
            on_event(PhaseEvent(action, phase.name, "Failed", message))
            report.phases.append(
                {
                    "phase": phase.name,
                    "status": "Failed",
                    "changed": [],
                    "message": message,
                    "permanent": is_permanent(exc),
                }
            )
            report.ok = False
            journal["failed"] = {"phase": phase.name, "message": message}
            _save_journal(root, action, journal)
            return report
        message = result.message or (
            f"changed {', '.join(result.changed)}" if result.changed else "already as wanted"
        )
        on_event(PhaseEvent(action, phase.name, "Completed", message))
        report.phases.append(
            {
                "phase": phase.name,
                "status": "Completed",
                "changed": result.changed,
                "message": message,
            }
        )
        journal["completed"].append(phase.name)
        journal.setdefault("messages", {})[phase.name] = message
        _save_journal(root, action, journal)
    journal["finished"] = True
    journal["finishedAt"] = now().isoformat()
    _save_journal(root, action, journal)
    return report
