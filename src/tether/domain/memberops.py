"""One member of a pool and the operation that changes it: steps, recorded before acted on.

Pure: no I/O. A member is a host of the pool, ``Joining``, ``Active`` or ``Leaving``.
Whatever changes a member is an :class:`Operation`: a list of :class:`Step` s and the
index of the current one, with the target it moves to. Operations are recorded before
any step is taken (intent first), advance (:func:`advance`) only when the step's effect
is observed, and are never restarted: after a crash the controller continues at the
recorded step, so a node is never drained twice for one step.

* join: send the join plan, wait until it is applied, wait until the Node is Ready;
* leave: cordon, drain, send the uninstall plan, wait, delete the Node, clear the plan,
  release the host (Ready again); a host still unreachable when the wait for its uninstall
  times out is gone, so the uninstall is skipped;
* update: the steps of its action (:func:`update_steps`): ``inPlace`` sends the new plan
  and patches labels and taints; ``restart`` sends it and waits for Ready; ``upgrade``,
  ``reboot`` and ``repave`` cordon and drain first and uncordon last. A new Kubernetes
  version is sent as one ``upgrade`` plan that carries the node's config too;
* re-image (a ``repave`` whose target names another OS image, ``os.image``): cordon,
  drain, send the ``reimage`` plan, wait until it is applied (the agent reports it, then
  reboots into the site's installer; the plane resets the host's enrolment when the
  report is recorded: :func:`tether.services.desired.report_applied_many`), wait until
  the host enrols again (the new image's first boot, with the same seed), delete the old
  Node, send the join plan, wait for Ready.

Kubernetes steps (cordon, drain, delete the Node, patch it, uncordon) are performed by
the controller before it plans; the plan sees their outcome as :class:`StepResult`. An
uncordon (:data:`EAGER_STEPS`) may be taken as soon as an operation reaches it, before
the plan that records it: it gives capacity back, so the next node of a rollout can be
cordoned in the same write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tether.domain.agent import document_hash
from tether.domain.frozen import evolve
from tether.domain.models import EventType, ObjectKind
from tether.domain.nodeplan import NodeTarget, PlanAction, plan_document
from tether.domain.profiles import Action, diff, strongest
from tether.domain.states import HostState

__all__ = [
    "EAGER_STEPS",
    "EXTERNAL_STEPS",
    "Advance",
    "EventNote",
    "Member",
    "MemberPhase",
    "NodeObs",
    "Observed",
    "OpKind",
    "Operation",
    "Step",
    "StepOutcome",
    "StepResult",
    "advance",
    "as_left_by_own_steps",
    "member_action",
    "start_join",
    "start_leave",
    "start_update",
    "update_steps",
]


class MemberPhase(StrEnum):
    JOINING = "Joining"
    ACTIVE = "Active"
    LEAVING = "Leaving"


class Step(StrEnum):
    CORDON = "Cordon"
    DRAIN = "Drain"
    SEND_UNINSTALL = "SendUninstall"
    SEND_UPGRADE = "SendUpgrade"
    SEND_JOIN = "SendJoin"
    SEND_REBOOT = "SendReboot"
    SEND_REIMAGE = "SendReimage"
    WAIT_APPLIED = "WaitApplied"
    WAIT_ENROLLED = "WaitEnrolled"
    DELETE_NODE = "DeleteNode"
    WAIT_READY = "WaitReady"
    PATCH_NODE = "PatchNode"
    UNCORDON = "Uncordon"
    CLEAR_PLAN = "ClearPlan"
    RELEASE = "Release"


#: Steps the controller performs against Kubernetes (the plan only records them).
EXTERNAL_STEPS = frozenset(
    {Step.CORDON, Step.DRAIN, Step.DELETE_NODE, Step.PATCH_NODE, Step.UNCORDON}
)
#: Kubernetes steps the controller may take before the plan that records them is
#: written: an uncordon only gives capacity back, and taking it again after a crash is
#: harmless (the Node is schedulable already). Every other step is recorded first.
EAGER_STEPS = frozenset({Step.UNCORDON})
_SENDS: Mapping[Step, PlanAction] = {
    Step.SEND_UNINSTALL: "uninstall",
    Step.SEND_UPGRADE: "upgrade",
    Step.SEND_JOIN: "join",
    Step.SEND_REBOOT: "reboot",
    Step.SEND_REIMAGE: "reimage",
}
#: Steps during which the member does not serve workloads (it counts as unavailable).
_DOWN_STEPS = frozenset(set(Step) - {Step.PATCH_NODE})


class OpKind(StrEnum):
    JOIN = "join"
    LEAVE = "leave"
    UPDATE = "update"


JOIN_STEPS = (Step.SEND_JOIN, Step.WAIT_APPLIED, Step.WAIT_READY)
LEAVE_STEPS = (
    Step.CORDON,
    Step.DRAIN,
    Step.SEND_UNINSTALL,
    Step.WAIT_APPLIED,
    Step.DELETE_NODE,
    Step.CLEAR_PLAN,
    Step.RELEASE,
)


REIMAGE_STEPS = (
    Step.CORDON,
    Step.DRAIN,
    Step.SEND_REIMAGE,
    Step.WAIT_APPLIED,
    Step.WAIT_ENROLLED,
    Step.DELETE_NODE,
    Step.SEND_JOIN,
    Step.WAIT_APPLIED,
    Step.WAIT_READY,
)


def update_steps(
    action: Action, *, version_changes: bool, meta_changes: bool, image_changes: bool = False
) -> tuple[Step, ...]:
    """The steps that take a member from what it runs to its target (module doc)."""
    if action is Action.REPAVE and image_changes:
        return REIMAGE_STEPS
    if action is Action.NONE:
        return ()
    patch = (Step.PATCH_NODE,) if meta_changes else ()
    if action is Action.IN_PLACE:
        return (Step.SEND_JOIN, Step.WAIT_APPLIED, *patch)
    if action is Action.RESTART:
        return (Step.SEND_JOIN, Step.WAIT_APPLIED, Step.WAIT_READY, *patch)
    if action is Action.REPAVE:
        return (
            Step.CORDON,
            Step.DRAIN,
            Step.SEND_UNINSTALL,
            Step.WAIT_APPLIED,
            Step.DELETE_NODE,
            Step.SEND_JOIN,
            Step.WAIT_APPLIED,
            Step.WAIT_READY,
        )
    # A new Kubernetes version goes in one plan with the node's config (as nodeadm's
    # upgrade takes its NodeConfig): one agent report per node, not an upgrade and a join.
    send = Step.SEND_UPGRADE if version_changes else Step.SEND_JOIN
    reboot = (Step.SEND_REBOOT, Step.WAIT_APPLIED) if action is Action.REBOOT else ()
    return (
        Step.CORDON,
        Step.DRAIN,
        send,
        Step.WAIT_APPLIED,
        *reboot,
        Step.WAIT_READY,
        *patch,
        Step.UNCORDON,
    )


@dataclass(frozen=True)
class Operation:
    """What is being done to a member (module doc), stored with the member.

    ``target`` is what the operation moves the member to, fixed when it starts: the plans
    it sends and the spec recorded when it completes come from it, so a pool edited
    half-way cannot mix two targets in one operation."""

    kind: OpKind
    action: Action
    steps: tuple[Step, ...]
    index: int
    started_at: datetime
    step_started_at: datetime
    target: NodeTarget | None = None
    rollout: str | None = None
    sent_hash: str | None = None
    attempt: int = 1
    failed: str | None = None
    message: str = ""

    @property
    def step(self) -> Step | None:
        return self.steps[self.index] if self.index < len(self.steps) else None

    @property
    def done(self) -> bool:
        return self.index >= len(self.steps)

    @property
    def key(self) -> str:
        """Names this operation's current step in plans and events."""
        return f"{self.rollout or self.kind.value}/{self.attempt}/{self.index}"

    @property
    def target_hash(self) -> str | None:
        return self.target.hash if self.target is not None else None

    @property
    def eager_before_send(self) -> bool:
        """Whether a step the controller takes eagerly (:data:`EAGER_STEPS`) comes before
        the next plan this operation sends: only then can one pass advance it that far (a
        plan sent in a pass is not reported applied in the same pass)."""
        for step in self.steps[self.index :]:
            if step in EAGER_STEPS:
                return True
            if step in _SENDS:
                return False
        return False

    @property
    def waits_for_target(self) -> bool:
        """Whether it stands still at a send that needs the target it lacks: a join begun
        while the host's target could not be computed waits until it can."""
        return self.target is None and self.step in (Step.SEND_JOIN, Step.SEND_UPGRADE)

    @property
    def takes_node_down(self) -> bool:
        """Whether the member stops serving while this runs (it counts as unavailable)."""
        if self.kind is not OpKind.UPDATE:
            return True
        return self.action.rank >= Action.RESTART.rank

    def retried(self, now: datetime) -> Operation:
        """The failed operation going again from the step that failed (a plan that failed
        is sent again under a new attempt, so the agent runs it)."""
        index = self.index - 1 if self.step is Step.WAIT_APPLIED else self.index
        return evolve(
            self,
            index=index,
            failed=None,
            message="",
            step_started_at=now,
            attempt=self.attempt + 1,
        )

    def advanced(self, now: datetime, **changes: Any) -> Operation:
        return evolve(self, index=self.index + 1, step_started_at=now, message="", **changes)

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "kind": self.kind.value,
            "action": self.action.value,
            "steps": [s.value for s in self.steps],
            "index": self.index,
            "startedAt": self.started_at.isoformat(),
            "stepStartedAt": self.step_started_at.isoformat(),
            "target": None
            if target is None
            else {"version": target.profile_version, "spec": dict(target.spec)},
            "rollout": self.rollout,
            "sentHash": self.sent_hash,
            "attempt": self.attempt,
            "failed": self.failed,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, host: str, data: Mapping[str, Any]) -> Operation:
        target = data.get("target")
        return cls(
            kind=OpKind(data["kind"]),
            action=Action(data["action"]),
            steps=tuple(Step(s) for s in data["steps"]),
            index=int(data["index"]),
            started_at=datetime.fromisoformat(data["startedAt"]),
            step_started_at=datetime.fromisoformat(data["stepStartedAt"]),
            target=None
            if target is None
            else NodeTarget(host=host, profile_version=target["version"], spec=target["spec"]),
            rollout=data.get("rollout"),
            sent_hash=data.get("sentHash"),
            attempt=int(data.get("attempt", 1)),
            failed=data.get("failed"),
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True)
class Member:
    """A host of the pool, as stored (``spec`` is the target it last completed)."""

    host: str
    phase: MemberPhase
    op: Operation | None = None
    spec: Mapping[str, Any] | None = None
    spec_hash: str | None = None
    version: str | None = None
    leave_requested: bool = False
    surge: bool = False
    resource_version: int = 0

    @property
    def staying(self) -> bool:
        return self.phase is not MemberPhase.LEAVING and not self.leave_requested

    @property
    def external_step(self) -> Step | None:
        """The Kubernetes step (:data:`EXTERNAL_STEPS`) its operation stands at, if any."""
        op = self.op
        if op is None or op.failed is not None or op.step not in EXTERNAL_STEPS:
            return None
        return op.step


@dataclass(frozen=True)
class NodeObs:
    ready: bool | None
    ready_since: datetime | None = None
    unschedulable: bool = False
    kubelet_version: str = ""


class StepOutcome(StrEnum):
    DONE = "Done"
    PENDING = "Pending"
    FAILED = "Failed"


@dataclass(frozen=True)
class StepResult:
    """What the controller's Kubernetes step for a member did this pass."""

    step: Step
    outcome: StepOutcome
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """What the plane sees of a member right now."""

    host_state: HostState
    healthy: bool = True  # the agent's last heartbeat said so
    doc_hash: str | None = None
    applied_hash: str | None = None
    applied_ok: bool | None = None
    applied_retryable: bool = True
    applied_message: str = ""
    node: NodeObs | None = None
    #: The Kubernetes steps the controller just took, in order (consecutive ones at once).
    external: tuple[StepResult, ...] = ()
    target: NodeTarget | None = None
    target_problem: str | None = None
    #: When the host's agent last enrolled (None: never, or not known).
    enrolled_at: datetime | None = None


#: Whether a Node is unschedulable after each step that changes it.
_UNSCHEDULABLE_AFTER: Mapping[Step, bool] = {Step.CORDON: True, Step.UNCORDON: False}


def as_left_by_own_steps(obs: Observed) -> Observed:
    """What is observed of a member, with the cordon, uncordon or Node deletion the
    controller took this pass already in effect. The API server accepted it; the Node's
    status in the store follows only when the Node watch reports it. Reading our own write
    saves a pass per node in a rollout: the next member may start in the pass that
    uncordons this one."""
    node = obs.node
    if node is None:
        return obs
    for result in obs.external:
        if result.outcome is not StepOutcome.DONE:
            continue
        if result.step is Step.DELETE_NODE:
            node = None
            break
        if result.step in _UNSCHEDULABLE_AFTER:
            node = evolve(node, unschedulable=_UNSCHEDULABLE_AFTER[result.step])
    return obs if node is obs.node else evolve(obs, node=node)


@dataclass(frozen=True)
class EventNote:
    kind: ObjectKind
    name: str
    reason: str
    message: str
    type: EventType = EventType.NORMAL


# One member's operation ------------------------------------------------------------------


def _meta_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    old_node = (old or {}).get("node", {})
    return any(old_node.get(k) != new["node"].get(k) for k in ("labels", "taints"))


def _image_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether the target names an OS image the member does not run (a re-image)."""
    after = new.get("os", {}).get("image")
    return bool(after) and (old or {}).get("os", {}).get("image") != after


def _version_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    before = (old or {}).get("kubernetes", {}).get("version")
    return bool(before != new["kubernetes"]["version"])


#: Memo of :func:`member_action` by (member spec hash, target hash): a pool's members share
#: a few specs, and the planner asks for every member on every pass.
_ACTIONS: dict[tuple[str, str], Action] = {}


def member_action(member: Member, target: NodeTarget) -> Action:
    """What moving ``member`` to ``target`` needs (``none`` when it runs it already)."""
    if member.spec_hash == target.hash:
        return Action.NONE
    if member.spec is None or member.spec_hash is None:
        return Action.REPAVE
    key = (member.spec_hash, target.hash)
    action = _ACTIONS.get(key)
    if action is None:
        if len(_ACTIONS) > 4096:
            _ACTIONS.clear()
        action = _ACTIONS[key] = strongest(diff(member.spec, target.spec))
    return action


def _op(
    kind: OpKind,
    action: Action,
    steps: tuple[Step, ...],
    now: datetime,
    *,
    target: NodeTarget | None = None,
    rollout: str | None = None,
) -> Operation:
    return Operation(
        kind=kind,
        action=action,
        steps=steps,
        index=0,
        started_at=now,
        step_started_at=now,
        target=target,
        rollout=rollout,
    )


def start_join(target: NodeTarget | None, now: datetime, rollout: str | None = None) -> Operation:
    return _op(OpKind.JOIN, Action.REPAVE, JOIN_STEPS, now, target=target, rollout=rollout)


def start_update(
    member: Member, target: NodeTarget, now: datetime, rollout: str | None
) -> Operation:
    action = member_action(member, target)
    steps = update_steps(
        action,
        version_changes=_version_changes(member.spec, target.spec),
        meta_changes=_meta_changes(member.spec, target.spec),
        image_changes=_image_changes(member.spec, target.spec),
    )
    return _op(OpKind.UPDATE, action, steps, now, target=target, rollout=rollout)


def start_leave(now: datetime, rollout: str | None = None) -> Operation:
    return _op(OpKind.LEAVE, Action.NONE, LEAVE_STEPS, now, rollout=rollout)


def _ready_for(node: NodeObs | None, target: NodeTarget | None) -> bool:
    """The Node is Ready, schedulable or not, and runs the target's kubelet."""
    if node is None or node.ready is not True:
        return False
    if target is None:
        return True
    want = "v" + target.kubernetes_version.lstrip("v")
    return node.kubelet_version == want or node.kubelet_version.startswith(want + ".")


#: Events recorded when a Kubernetes step is done (exactly once: with the step's record).
_DONE_EVENTS: Mapping[Step, tuple[str, str]] = {
    Step.CORDON: ("Cordoned", "node cordoned"),
    Step.DRAIN: ("Drained", "node drained"),
    Step.DELETE_NODE: ("NodeDeleted", "Node deleted"),
    Step.PATCH_NODE: ("NodeMetadataUpdated", "labels and taints updated on the Node"),
    Step.UNCORDON: ("Uncordoned", "node schedulable again"),
}


@dataclass
class Advance:
    """The outcome of moving one member's operation along."""

    member: Member | None  # None: the member is gone (released)
    document: dict[str, Any] | None = None
    set_document: bool = False
    digest: str | None = None  # the document's hash (computed once, for every use)
    release: bool = False
    events: list[EventNote] = field(default_factory=list)
    failed: str | None = None  # the operation failed now (message)
    requeue: float | None = None


def _document(action: PlanAction, op: Operation) -> dict[str, Any]:
    if op.target is None:  # uninstall and reboot need no target
        return {"node": {"action": action, "step": op.key}}
    return plan_document(action, op.target, step=op.key)


def _expired(op: Operation, now: datetime, seconds: float) -> bool:
    return now - op.step_started_at >= timedelta(seconds=seconds)


def _left(op: Operation, now: datetime, seconds: float) -> float:
    return max(0.0, (op.step_started_at + timedelta(seconds=seconds) - now).total_seconds())


def _enrolled_since(op: Operation, obs: Observed) -> bool:
    """Whether the host enrolled since ``op`` began: during a re-image, only the new
    image can (the enrolment is reset when the re-image plan is reported applied)."""
    return obs.enrolled_at is not None and obs.enrolled_at > op.started_at


def _saying(op: Operation, message: str) -> Operation:
    """``op`` with this message; the same object if it says it already (a waiting member
    is not rewritten every pass)."""
    return op if op.message == message else evolve(op, message=message)


def advance(
    member: Member, obs: Observed, now: datetime, *, node_timeout: float, drain_timeout: float
) -> Advance:
    """Move ``member``'s operation as far as what is observed allows (module doc)."""
    op = member.op
    out = Advance(member=member)
    if op is None or op.failed is not None:
        return out
    host = member.host
    while not op.done:
        step = op.step
        assert step is not None
        if step is Step.SEND_REIMAGE and _enrolled_since(op, obs):
            # Sent before (this is a retry) and carried out since: never re-image twice.
            op = op.advanced(now)
            continue
        if step in _SENDS:
            if op.waits_for_target:
                op = _saying(op, f"waiting for a valid target: {obs.target_problem}")
                break
            doc = _document(_SENDS[step], op)
            digest = document_hash(doc)
            out.document, out.set_document, out.digest = doc, True, digest
            note = f"{_SENDS[step]} plan sent ({op.key}): desired state {digest[:12]}"
            op = op.advanced(now, sent_hash=digest)
            out.events.append(EventNote(ObjectKind.HOST, host, "PlanSent", note))
            continue
        if step is Step.WAIT_APPLIED:
            if _enrolled_since(op, obs) and op.steps[op.index - 1] is Step.SEND_REIMAGE:
                # Reported, and the new image enrolled already (which dropped the plan).
                op = op.advanced(now)
                continue
            if obs.doc_hash == op.sent_hash and obs.applied_hash == op.sent_hash:
                if obs.applied_ok:
                    op = op.advanced(now)
                    continue
                if not obs.applied_retryable:
                    out.failed = f"the plan failed: {obs.applied_message}"
                    break
                op = _saying(op, f"the plan failed, the agent retries: {obs.applied_message}")
            elif obs.doc_hash != op.sent_hash:
                op = _saying(op, "the host's desired state was changed by someone else")
            if _expired(op, now, node_timeout):
                if op.kind is OpKind.LEAVE and obs.host_state is HostState.UNREACHABLE:
                    # The host is gone: nothing on it can be uninstalled; the Node goes.
                    why = "the host is unreachable: its uninstall is skipped"
                    out.events.append(
                        EventNote(ObjectKind.HOST, host, "UninstallSkipped", why, EventType.WARNING)
                    )
                    op = op.advanced(now)
                    continue
                out.failed = op.message or "the plan was not applied in time"
                break
            out.requeue = _left(op, now, node_timeout)
            break
        if step is Step.WAIT_ENROLLED:
            if _enrolled_since(op, obs):
                note = f"enrolled again after its re-image ({op.key})"
                out.events.append(EventNote(ObjectKind.HOST, host, "Reimaged", note))
                op = op.advanced(now)
                continue
            if _expired(op, now, node_timeout):
                out.failed = "the host did not enrol again after its re-image in time"
                break
            op = _saying(op, "waiting for the host to boot its new image and enrol again")
            out.requeue = _left(op, now, node_timeout)
            break
        if step is Step.WAIT_READY:
            if _ready_for(obs.node, op.target) and obs.healthy:
                ready = EventNote(ObjectKind.HOST, host, "NodeReady", f"node is Ready ({op.key})")
                op = op.advanced(now)
                out.events.append(ready)
                continue
            if _expired(op, now, node_timeout):
                out.failed = "the Node did not turn Ready (with the target's kubelet) in time"
                break
            out.requeue = _left(op, now, node_timeout)
            break
        if step is Step.CLEAR_PLAN:
            out.document, out.set_document, out.digest = None, True, None
            op = op.advanced(now)
            continue
        if step is Step.RELEASE:
            out.release, out.member = True, None
            out.events.append(
                EventNote(ObjectKind.HOST, host, "Left", "host left the pool; it is Ready again")
            )
            return out
        # A Kubernetes step: the controller performed it before this plan.
        result = next((r for r in obs.external if r.step is step), None)
        if result is not None and result.outcome is StepOutcome.DONE:
            reason, note = _DONE_EVENTS[step]
            message = f"{result.message or note} ({op.key})"
            out.events.append(EventNote(ObjectKind.HOST, host, reason, message))
            op = op.advanced(now)
            if op.step is Step.DRAIN:
                out.events.append(
                    EventNote(ObjectKind.HOST, host, "DrainStarted", f"draining ({op.key})")
                )
            continue
        if result is not None and result.outcome is StepOutcome.FAILED:
            out.failed = f"{step.value} failed: {result.message}"
            break
        if result is not None:
            op = _saying(op, result.message)
        limit = drain_timeout if step is Step.DRAIN else node_timeout
        if _expired(op, now, limit):
            out.failed = f"{step.value} did not finish in time {op.message}".strip()
            break
        out.requeue = 0.0 if result is None else 1.0
        break
    if out.failed is not None:
        op = evolve(op, failed=out.failed)
    assert out.member is not None
    if op is not member.op:  # unchanged, the member stays the object it was: no write
        out.member = evolve(out.member, op=op)
    return out
