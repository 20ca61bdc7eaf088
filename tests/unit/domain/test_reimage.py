"""A changed OS image is a re-image: the member's host boots the new image and enrols again.

The steps of a member whose target names another ``os.image`` (see
:mod:`tether.domain.memberops`), walked with observations made by hand, and whole
rollouts of an image change in the simulated world of :mod:`poolsim`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from poolsim import make_world, spec_for

from tether.domain.agent import document_hash
from tether.domain.memberops import (
    REIMAGE_STEPS,
    Member,
    MemberPhase,
    NodeObs,
    Observed,
    Step,
    StepOutcome,
    StepResult,
    advance,
    start_update,
)
from tether.domain.models import UpdateStrategy
from tether.domain.nodeplan import NodeTarget, reimages
from tether.domain.profiles import Action
from tether.domain.rollout import RolloutState
from tether.domain.states import HostState

T0 = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
OLD = spec_for("1.33", image="img-1")


def _member(spec: dict[str, object] = OLD) -> Member:
    target = NodeTarget("h1", "1.0.0", spec)
    return Member("h1", MemberPhase.ACTIVE, spec=spec, spec_hash=target.hash, version="1.0.0")


def _steps(new: dict[str, object]) -> tuple[Step, ...]:
    op = start_update(_member(), NodeTarget("h1", "2.0.0", new), T0, "r1")
    assert op.action is Action.REPAVE
    return op.steps


def test_only_a_new_image_reimages_other_repaves_reinstall_the_node() -> None:
    assert _steps(spec_for("1.33", image="img-2")) == REIMAGE_STEPS
    assert _steps(spec_for("1.34", image="img-2")) == REIMAGE_STEPS
    cloud_init = spec_for("1.33", image="img-1")
    cloud_init["os"] = {**cloud_init["os"], "cloudInit": {"runcmd": ["true"]}}  # type: ignore[dict-item]
    steps = _steps(cloud_init)
    assert Step.SEND_REIMAGE not in steps and Step.SEND_UNINSTALL in steps


def _walk(member: Member, obs: Observed, now: datetime) -> tuple[Member, list[str], object]:
    out = advance(member, obs, now, node_timeout=900, drain_timeout=600)
    assert out.member is not None
    return out.member, [e.reason for e in out.events], out


def test_the_steps_of_a_reimage_wait_for_the_report_then_for_the_new_enrolment() -> None:
    new = spec_for("1.33", image="img-2")
    target = NodeTarget("h1", "2.0.0", new)
    member = _member()
    member = Member(**{**member.__dict__, "op": start_update(member, target, T0, "r1")})
    node = NodeObs(ready=True, ready_since=T0 - timedelta(hours=1), kubelet_version="v1.33.0")
    enrolled = T0 - timedelta(days=3)
    done = (
        StepResult(Step.CORDON, StepOutcome.DONE),
        StepResult(Step.DRAIN, StepOutcome.DONE),
    )
    base = Observed(HostState.IN_USE, node=node, target=target, enrolled_at=enrolled)
    member, reasons, out = _walk(member, Observed(**{**base.__dict__, "external": done}), T0)
    assert reasons == ["Cordoned", "DrainStarted", "Drained", "PlanSent"]
    doc = out.document  # type: ignore[attr-defined]
    assert doc["node"]["action"] == "reimage" and doc["node"]["image"] == "img-2"
    assert reimages(doc) and not reimages({"node": {"action": "reboot"}})
    assert member.op is not None and member.op.step is Step.WAIT_APPLIED
    sent = document_hash(doc)
    assert member.op.sent_hash == sent

    # Reported applied: the host reboots into its installer; until it enrols again the
    # member waits (an old enrolment does not count), and says so.
    t1 = T0 + timedelta(seconds=30)
    applied = Observed(
        **{**base.__dict__, "doc_hash": sent, "applied_hash": sent, "applied_ok": True}
    )
    member, reasons, out = _walk(member, applied, t1)
    assert member.op is not None and member.op.step is Step.WAIT_ENROLLED
    assert "enrol again" in member.op.message and out.requeue == 900  # type: ignore[attr-defined]
    t2 = t1 + timedelta(minutes=4)
    again = Observed(
        **{**applied.__dict__, "host_state": HostState.UNREACHABLE, "enrolled_at": t2, "node": None}
    )
    member, reasons, out = _walk(member, again, t2)
    assert reasons[0] == "Reimaged"
    # The old Node goes next (a Kubernetes step the controller takes before planning).
    assert member.op is not None and member.op.step is Step.DELETE_NODE


def test_a_host_that_does_not_enrol_again_in_time_fails_its_reimage() -> None:
    target = NodeTarget("h1", "2.0.0", spec_for("1.33", image="img-2"))
    member = _member()
    op = start_update(member, target, T0, "r1")
    op = op.__class__(**{**op.__dict__, "index": REIMAGE_STEPS.index(Step.WAIT_ENROLLED)})
    member = Member(**{**member.__dict__, "op": op})
    obs = Observed(HostState.UNREACHABLE, target=target, enrolled_at=T0 - timedelta(days=1))
    waiting, _, _ = _walk(member, obs, T0 + timedelta(seconds=899))
    assert waiting.op is not None and waiting.op.failed is None
    failed, _, _ = _walk(member, obs, T0 + timedelta(seconds=900))
    assert failed.op is not None and failed.op.failed is not None
    assert "did not enrol again" in failed.op.failed


def test_a_rollout_of_a_new_image_reimages_every_node_once() -> None:
    for kind in ("ExpandFirst", "ContractFirst"):
        strategy = UpdateStrategy(type=kind, min_ready_seconds=0)
        world = make_world(11, size=4, spares=1, strategy=strategy, action="repave")
        for _ in range(400):
            world.tick()
            if world.rollout is not None and world.rollout.state is RolloutState.COMPLETED:
                break
            world.step_world(5)
        assert world.rollout is not None and world.rollout.state is RolloutState.COMPLETED
        assert world.violations == []
        reimaged = [name for name, reason, _ in world.events if reason == "Reimaged"]
        updated = [name for name, reason, _ in world.events if reason == "NodeUpdateStarted"]
        assert sorted(reimaged) == sorted(updated) and len(set(reimaged)) == len(reimaged)


def test_a_host_that_enrolled_again_before_the_plane_looked_is_not_waited_for() -> None:
    """The report resets the enrolment and the new image enrols before the next pass:
    the re-image plan is gone by then (dropped with the enrolment), which is no
    "desired state changed by someone else": the member goes on to delete the Node."""
    target = NodeTarget("h1", "2.0.0", spec_for("1.33", image="img-2"))
    member = _member()
    op = start_update(member, target, T0, "r1")
    op = op.__class__(**{**op.__dict__, "index": REIMAGE_STEPS.index(Step.WAIT_APPLIED)})
    member = Member(**{**member.__dict__, "op": op})
    later = T0 + timedelta(minutes=5)
    obs = Observed(HostState.IN_USE, target=target, enrolled_at=later)
    member, reasons, _ = _walk(member, obs, later)
    assert reasons == ["Reimaged"]
    assert member.op is not None and member.op.step is Step.DELETE_NODE


def test_a_retried_reimage_the_host_carried_out_meanwhile_is_not_sent_again() -> None:
    """The wait for the report timed out, the host re-imaged later all the same, and the
    rollout was resumed (the operation goes back to the send): no second re-image."""
    target = NodeTarget("h1", "2.0.0", spec_for("1.33", image="img-2"))
    member = _member()
    op = start_update(member, target, T0, "r1")
    index = REIMAGE_STEPS.index(Step.WAIT_APPLIED)
    failed = op.__class__(**{**op.__dict__, "index": index, "failed": "not applied in time"})
    retried = failed.retried(T0 + timedelta(hours=1))
    assert retried.step is Step.SEND_REIMAGE
    member = Member(**{**member.__dict__, "op": retried})
    obs = Observed(HostState.IN_USE, target=target, enrolled_at=T0 + timedelta(minutes=30))
    member, reasons, out = _walk(member, obs, T0 + timedelta(hours=1))
    assert "PlanSent" not in reasons and out.document is None  # type: ignore[attr-defined]
    assert reasons == ["Reimaged"]
    assert member.op is not None and member.op.step is Step.DELETE_NODE
