"""Agent pieces without a network: timers in virtual time, inventory, tags, seed image."""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.agent import inventory, runner, tags
from tether.agent.config import AgentConfig
from tether.agent.identity import Identity, choose_names
from tether.agent.lock import AlreadyRunning, SingleInstance
from tether.agent.runner import Agent
from tether.agent.timing import Backoff, jittered, renewal_time
from tether.domain.agent import (
    ActivationCreate,
    Heartbeat,
    Inventory,
    document_hash,
    health_event,
    node_name_from_uuid,
    parse_duration,
)
from tether.domain.states import HostEvent, HostState
from tether.node.host import RecordingHost
from tether.node.mirror import sync
from tether.planeclient import Refused, Unavailable
from tether.services import seed


class FakePlane:
    """The agent API in memory; ``down`` makes every call fail like an outage."""

    def __init__(self, clock: VirtualClock, lifetime: float = 90.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.down = False
        self.beats: list[tuple[float, bytes]] = []
        self.renewals: list[float] = []
        self.registrations = 0
        self.events: list[dict[str, Any]] = []

    def _enrolment(self) -> dict[str, Any]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-1")])
        now = datetime.fromtimestamp(self.clock.now, UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(seconds=self.lifetime))
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return {
            "certificate": pem,
            "caBundle": pem,
            "notAfter": (now + timedelta(seconds=self.lifetime)).isoformat(),
            "heartbeatSeconds": 10,
        }

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise Unavailable("down")
        self.registrations += 1
        return self._enrolment()

    def heartbeat(self, name: str, body: bytes) -> None:
        if self.down:
            raise Unavailable("down")
        self.beats.append((self.clock.now, body))

    def renew(self, name: str, csr: str) -> dict[str, Any]:
        if self.down:
            raise Unavailable("down")
        self.renewals.append(self.clock.now)
        return self._enrolment()

    def desired(self, name: str, known: str | None, timeout: float) -> None:
        return None

    def applied(self, name: str, body: dict[str, Any]) -> None:
        pass

    def event(self, name: str, body: dict[str, Any]) -> None:
        self.events.append(body)

    def close(self) -> None:
        pass


class VirtualClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_agent(
    tmp_path: Path,
    plane: FakePlane | None,
    clock: VirtualClock,
    config: dict[str, Any] | None = None,
    **options: Any,
) -> Agent:
    """The real agent in virtual time, talking to ``plane``; ``config`` adds to (or
    overrides) its configuration, ``options`` to its constructor's arguments."""
    settings = AgentConfig.model_validate(
        {
            "server": "https://plane.invalid:8444",
            "caFile": str(tmp_path / "ca.pem"),
            "stateDir": str(tmp_path / "state"),
            "name": "edge-1",
            "activation": {"id": "act-aaaaaaaaaaaa", "code": "c0de"},
            "checks": [],
            "maxBackoffSeconds": 60,
            **(config or {}),
        }
    )
    return Agent(
        settings,
        api_factory=lambda *_: plane,
        clock=clock.time,
        sleep=clock.sleep,
        rng=random.Random(7),
        collect_inventory=Inventory,
        **options,
    )


def run_for(agent: Agent, clock: VirtualClock, seconds: float) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.sleep(max(agent.step(), 0.001))


def test_heartbeats_are_jittered_around_the_interval(tmp_path: Path) -> None:
    clock = VirtualClock()
    plane = FakePlane(clock, lifetime=86400)
    agent = make_agent(tmp_path, plane, clock)
    agent.start()
    run_for(agent, clock, 600)
    gaps = [b - a for (a, _), (b, _) in zip(plane.beats, plane.beats[1:], strict=False)]
    assert 55 <= len(plane.beats) <= 67
    assert all(9.0 <= g <= 11.0 for g in gaps) and len({round(g, 3) for g in gaps}) > 10
    assert json.loads(plane.beats[0][1]) == {"n": 0, "v": agent_version()}
    assert plane.beats[1][1] == b'{"n":0}'  # later heartbeats: a few bytes


def agent_version() -> str:
    from tether.agent import AGENT_VERSION

    return AGENT_VERSION


def test_certificate_renewed_at_two_thirds_of_its_lifetime(tmp_path: Path) -> None:
    clock = VirtualClock()
    plane = FakePlane(clock, lifetime=90)
    agent = make_agent(tmp_path, plane, clock)
    start = clock.now
    agent.start()
    run_for(agent, clock, 200)
    assert [round(t - start) for t in plane.renewals[:3]] == [60, 120, 180]


def test_outage_backs_off_exponentially_with_jitter_and_recovers(tmp_path: Path) -> None:
    clock = VirtualClock()
    plane = FakePlane(clock, lifetime=86400)
    agent = make_agent(tmp_path, plane, clock)
    agent.start()
    run_for(agent, clock, 30)
    plane.down = True
    attempts: list[float] = []
    original = plane.heartbeat

    def failing(name: str, body: bytes) -> None:
        attempts.append(clock.now)
        original(name, body)

    plane.heartbeat = failing  # type: ignore[method-assign]
    run_for(agent, clock, 600)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) < 40  # far fewer than one every 10 s would be
    assert max(gaps) <= 60 and max(gaps[-5:]) > 10  # capped, and growing
    plane.down = False
    before = len(plane.beats)
    run_for(agent, clock, 120)
    assert len(plane.beats) - before >= 8  # back to normal after the outage


def test_registration_waits_out_an_outage(tmp_path: Path) -> None:
    clock = VirtualClock()
    plane = FakePlane(clock)
    agent = make_agent(tmp_path, plane, clock)
    plane.down = True
    calls = {"n": 0}
    original = plane.register

    def flaky(body: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] > 4:
            plane.down = False
        return original(body)

    plane.register = flaky  # type: ignore[method-assign]
    agent.start()
    assert plane.registrations == 1 and calls["n"] == 5
    assert Identity(tmp_path / "state").enrolled()
    # A restart does not enrol again.
    again = make_agent(tmp_path, plane, clock)
    again.start()
    assert plane.registrations == 1 and again.name == "edge-1"


def test_refused_heartbeat_keeps_the_agent_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    plane = FakePlane(clock, lifetime=86400)
    agent = make_agent(tmp_path, plane, clock)
    agent.start()
    refusals: list[float] = []
    original = plane.heartbeat

    def refuse(name: str, body: bytes) -> None:
        refusals.append(clock.now)
        raise Refused(401, {"code": "unauthenticated", "rule": "pki.cert.revoked", "message": "x"})

    plane.heartbeat = refuse  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="tether.agent"):
        run_for(agent, clock, 300)
    # it kept trying, backing off (far fewer than one per 10 s), and said what to do
    assert 5 <= len(refusals) <= 20, len(refusals)
    assert "heartbeat refused: x [pki.cert.revoked]; this host must enrol again" in caplog.text
    plane.heartbeat = original  # type: ignore[method-assign]
    before = len(plane.beats)
    run_for(agent, clock, 120)
    assert len(plane.beats) - before >= 8  # back to every 10 s once accepted again


def test_backoff_full_jitter_and_cap() -> None:
    backoff = Backoff(base=1, cap=30, rng=random.Random(1))
    waits = [backoff.next() for _ in range(12)]
    assert all(0 < w <= 30 for w in waits)
    assert max(waits[:3]) <= 4
    backoff.reset()
    assert backoff.next() <= 1
    assert 9 <= jittered(10, random.Random(3)) <= 11
    assert renewal_time(100, 190) == 160


def test_identity_files_are_private(tmp_path: Path) -> None:
    ident = Identity(tmp_path / "s")
    key, _ = ident.new_csr("edge-1")
    ident.save(key, b"cert", b"ca")
    for path in (ident.key_path, ident.cert_path, ident.ca_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    assert {p.name for p in ident.reset()} >= {"host.key", "host.crt"}


def test_names_configured_then_dmi_uuid_then_random(tmp_path: Path) -> None:
    inv = Inventory(product_uuid="4c4c4544-0031-3510-8052-b2c04f4e4b32")
    assert choose_names(tmp_path / "a", "edge-7", inv).name == "edge-7"
    assert choose_names(tmp_path / "b", None, inv).name == "host-4c4c45440031"
    first = choose_names(tmp_path / "c", None, Inventory()).name
    assert (
        first.startswith("host-") and choose_names(tmp_path / "c", None, Inventory()).name == first
    )
    assert node_name_from_uuid("00000000-0000-0000-0000-000000000000") is None


def test_inventory_from_a_fake_tree_and_graceful_fallbacks(tmp_path: Path) -> None:
    proc, sys_, etc = tmp_path / "proc", tmp_path / "sys", tmp_path / "etc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "net").mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU\nprocessor\t: 1\n")
    (proc / "meminfo").write_text("MemTotal:       2048 kB\n")
    (proc / "sys/kernel/osrelease").write_text("6.1.0-test\n")
    (proc / "net/if_inet6").write_text("fe800000000000000000000000000001 02 40 20 80     eth0\n")
    (etc).mkdir()
    (etc / "os-release").write_text('ID=debian\nPRETTY_NAME="Debian 12"\nVERSION_ID="12"\n')
    (etc / "machine-id").write_text("abc123\n")
    (etc / "tether").mkdir()
    (etc / "tether/image-build").write_text("0f1e2d\n")  # a Tether image says its build
    (sys_ / "class/net/eth0").mkdir(parents=True)
    (sys_ / "class/net/eth0/address").write_text("52:54:00:12:34:56\n")
    (sys_ / "block/vda/queue").mkdir(parents=True)
    (sys_ / "block/vda/size").write_text("2097152\n")
    (sys_ / "block/vda/queue/rotational").write_text("0\n")
    (sys_ / "block/loop0").mkdir(parents=True)
    (sys_ / "class/dmi/id").mkdir(parents=True)
    (sys_ / "class/dmi/id/product_uuid").write_text("03000200-0400-0500-0006-000700080009\n")
    inv = inventory.collect(inventory.Roots(proc=proc, sys=sys_, etc=etc))
    assert (inv.cpu.model, inv.cpu.count, inv.memory_bytes) == ("Test CPU", 2, 2048 * 1024)
    assert (inv.os.id, inv.os.version, inv.os.kernel) == ("debian", "12", "6.1.0-test")
    assert inv.nics[0].mac == "52:54:00:12:34:56" and inv.nics[0].addresses == ["fe80::1"]
    assert [(d.name, d.size_bytes, d.rotational) for d in inv.disks] == [("vda", 1 << 30, False)]
    assert inv.machine_id == "abc123" and inv.product_uuid == ""  # placeholder UUID dropped
    assert inv.image_build == "0f1e2d"
    empty = inventory.collect(inventory.Roots(tmp_path / "x", tmp_path / "y", tmp_path / "z"))
    assert empty.memory_bytes == 0 and empty.disks == [] and empty.image_build == ""


def test_tags_static_file_and_script(tmp_path: Path) -> None:
    file = tmp_path / "tags.yaml"
    file.write_text(yaml.safe_dump({"rack": "r2", "gpu": True}))
    script = tmp_path / "tags.py"
    script.write_text('import json; print(json.dumps({"zone": "z1", "rack": "r3"}))')
    got, problems = tags.collect(
        {"rack": "r1", "env": "prod"}, file, [sys.executable, str(script)], 10
    )
    assert got == {"rack": "r3", "env": "prod", "gpu": "true", "zone": "z1"} and not problems
    slow = tmp_path / "slow.py"
    slow.write_text("import time; time.sleep(5)")
    got, problems = tags.collect({"a": "b"}, None, [sys.executable, str(slow)], 0.5)
    assert got == {"a": "b"} and "did not finish" in problems[0]
    bad = tmp_path / "bad.py"
    bad.write_text("print('[1, 2]')")
    _, problems = tags.collect({}, None, [sys.executable, str(bad)], 60)  # a slow start
    assert "object" in problems[0]


def test_single_instance_lock(tmp_path: Path) -> None:
    with (
        SingleInstance(tmp_path / "agent.lock"),
        pytest.raises(AlreadyRunning, match="one agent runs per host"),
    ):
        SingleInstance(tmp_path / "agent.lock").acquire()
    SingleInstance(tmp_path / "agent.lock").acquire()


def test_seed_iso_reads_back_with_label_and_files(tmp_path: Path) -> None:
    files = seed.seed_files(
        agent_url="https://plane.example:8444",
        ca_bundle="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        activation_id="act-abcdefghijkl",
        code="SECRET-CODE",
        site="dc1",
    )
    written = seed.write_seed(tmp_path / "seed", files)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {
        "user-data": 0o600,
        "meta-data": 0o644,
        "network-config": 0o644,
        "seed.iso": 0o600,
    }
    label, content = seed.read_iso((tmp_path / "seed" / "seed.iso").read_bytes())
    assert label == "cidata"
    assert content == files
    cloud = yaml.safe_load(content["user-data"])
    assert content["user-data"].startswith(b"#cloud-config\n")
    by_path = {f["path"]: f for f in cloud["write_files"]}
    agent_cfg = yaml.safe_load(by_path["/etc/tether/agent.yaml"]["content"])
    AgentConfig.model_validate(agent_cfg)  # the agent accepts what the seed writes
    assert agent_cfg["server"] == "https://plane.example:8444"
    assert agent_cfg["activation"] == {
        "id": "act-abcdefghijkl",
        "codeFile": "/etc/tether/activation-code",
    }
    assert by_path["/etc/tether/activation-code"]["permissions"] == "0600"
    assert by_path["/etc/tether/activation-code"]["content"].strip() == "SECRET-CODE"
    assert "BEGIN CERTIFICATE" in by_path["/etc/tether/ca.pem"]["content"]
    assert ["systemctl", "enable", "--now", "tether-agent.service"] in cloud["runcmd"]
    assert content["meta-data"].startswith(b"instance-id: ")


def test_domain_rules() -> None:
    assert health_event(HostState.REGISTERED, True) is HostEvent.CHECKS_PASSED
    assert health_event(HostState.READY, True) is None
    assert health_event(HostState.READY, False) is HostEvent.CHECKS_FAILED
    assert health_event(HostState.UNREACHABLE, True) is HostEvent.CHECKS_PASSED
    assert health_event(HostState.UNPAIRED, True) is None
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("30d") == timedelta(days=30) and parse_duration(90).seconds == 90
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="30 days"):
        ActivationCreate(site="dc1", expires_in="31d")
    assert document_hash({"a": 1, "b": 2}) == document_hash({"b": 2, "a": 1})
    assert Heartbeat.model_validate_json(b"{}").healthy
    assert not Heartbeat.model_validate_json(b'{"f":{"disk":"full"}}').healthy


class DocumentsPlane(FakePlane):
    """FAKE plane serving a list of desired-state documents, one per poll, then stopping."""

    def __init__(self, clock: VirtualClock, docs: list[dict[str, Any]], stop: Any) -> None:
        super().__init__(clock)
        self.docs = docs
        self.stop = stop
        self.reports: list[dict[str, Any]] = []

    def desired(self, name: str, known: str | None, timeout: float) -> Any:
        if not self.docs:
            self.stop.set()
            return None
        return self.docs.pop(0)

    def applied(self, name: str, body: dict[str, Any]) -> None:
        self.reports.append(body)


def test_a_document_that_blows_up_is_reported_and_the_channel_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = VirtualClock()
    agent = make_agent(tmp_path, FakePlane(clock), clock)
    docs = [
        {"hash": "a" * 64, "document": {"node": {"action": "uninstall"}}},
        {"hash": "b" * 64, "document": {"note": "plain"}},
    ]
    plane = DocumentsPlane(clock, docs, agent.stop)
    agent.api_factory = lambda *_: plane

    def explode(data: Any, api: Any) -> dict[str, Any]:
        raise ValueError("corrupt tracker")

    monkeypatch.setattr(agent, "apply_node", explode)
    agent.follow_desired()  # returns once the fake plane runs out of documents
    assert [r["hash"][0] for r in plane.reports] == ["a", "b"]
    assert plane.reports[0]["result"] == {
        "ok": False,
        "message": "ValueError: corrupt tracker",
        "retryable": True,  # an unforeseen failure is retried with backoff, never dropped
    }
    assert plane.reports[1]["result"]["ok"] is True


# Node plans: permanent failures are reported once, temporary ones retried with backoff --------


class LongPollPlane(FakePlane):
    """FAKE plane serving one desired-state document; every later poll waits out its
    timeout in virtual time (the document does not change) until ``end``."""

    def __init__(self, clock: VirtualClock, doc: dict[str, Any], stop: Any, end: float) -> None:
        super().__init__(clock, lifetime=86400)
        self.doc: dict[str, Any] | None = doc
        self.stop, self.end = stop, end
        self.applies: list[tuple[float, dict[str, Any]]] = []
        self.events: list[str] = []
        self.on_poll: list[Any] = []

    def desired(self, name: str, known: str | None, timeout: float) -> Any:
        for hook in self.on_poll:
            hook()
        if self.doc is not None and known != self.doc["hash"]:
            return self.doc
        self.clock.sleep(timeout)
        if self.clock.now >= self.end:
            self.stop.set()
        return None

    def applied(self, name: str, body: dict[str, Any]) -> None:
        self.applies.append((self.clock.now, body["result"]))

    def event(self, name: str, body: dict[str, Any]) -> None:
        self.events.append(body["reason"])


def plan_agent(
    tmp_path: Path,
    plan: dict[str, Any],
    source: Path | None,
    seconds: float,
    **more: str | None,
) -> tuple[Agent, LongPollPlane, VirtualClock]:
    """The real agent (plan runner, node tool, phases) with a recording service manager,
    following a FAKE plane for ``seconds`` of virtual time (``more``: node settings, None
    to leave one out)."""
    clock = VirtualClock()
    given = {
        "root": str(tmp_path / "root"),
        "keyring": str(tmp_path / "keyring.yaml"),
        "source": str(source) if source is not None else None,
        "retrySeconds": 5,
        **more,
    }
    node = {k: v for k, v in given.items() if v is not None}
    agent = make_agent(
        tmp_path,
        None,
        clock,
        {"longPollSeconds": 30, "node": node},
        monotonic=clock.time,
        node_host=lambda _: RecordingHost(),
    )
    doc = {"hash": "c" * 64, "document": {"node": plan}}
    plane = LongPollPlane(clock, doc, agent.stop, clock.now + seconds)
    agent.api_factory = lambda *_: plane
    agent.start()
    return agent, plane, clock


def test_a_permanent_plan_failure_is_reported_once_and_not_run_again(
    tmp_path: Path,
    make_source: Callable[..., tuple[Path, Any]],
    node_config_doc: Callable[..., dict[str, Any]],
) -> None:
    source, _ = make_source()
    theirs = tmp_path / "root/etc/kubernetes/kubelet/config.yaml"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("the operator's kubelet config\n")
    plan = {
        "action": "join",
        "version": "1.34.2",
        "nodeConfig": node_config_doc(name="edge-1"),
        "skip": ["validation"],  # no API server here; the kubelet-config phase refuses
    }
    agent, plane, _ = plan_agent(tmp_path, plan, source, seconds=3600)
    agent.follow_desired()
    assert len(plane.applies) == 1, [r["message"] for _, r in plane.applies]
    result = plane.applies[0][1]
    assert result["ok"] is False and result["retryable"] is False
    assert "kubelet-config failed" in result["message"]
    assert "was not written by Tether" in result["message"]
    assert plane.events.count("NodeInitKubeletConfigFailed") == 1
    assert theirs.read_text() == "the operator's kubelet config\n"


def test_a_temporary_plan_failure_is_retried_with_backoff_until_it_succeeds(
    tmp_path: Path, make_source: Callable[..., tuple[Path, Any]]
) -> None:
    source, _ = make_source()
    mirror = tmp_path / "mirror"  # not there yet: every fetch fails (temporary)
    plan = {"action": "install", "version": "1.34.2"}
    agent, plane, clock = plan_agent(tmp_path, plan, mirror, seconds=3600)
    start = clock.now

    def fill_the_mirror() -> None:
        if clock.now - start >= 1800 and not mirror.exists():
            shutil.copytree(source, mirror)

    plane.on_poll.append(fill_the_mirror)
    agent.follow_desired()

    times = [t - start for t, _ in plane.applies]
    results = [r for _, r in plane.applies]
    assert all(not r["ok"] and r["retryable"] for r in results[:-1])
    assert "cannot read" in results[0]["message"]
    assert results[-1]["ok"] is True  # the mirror came back: installed, and no more runs
    assert 1800 <= times[-1] <= 1800 + 60
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # exponential from retrySeconds (5 s), capped at maxBackoffSeconds (60 s), jittered:
    # far fewer runs than one every 5 s (360), but never more than 60 s apart
    assert 25 <= len(times) <= 100
    assert max(gaps) <= 60
    assert sum(gaps[:3]) < 5 + 10 + 20 <= sum(gaps[-3:])


@pytest.mark.parametrize(("version", "seeded"), [("1.34.2", True), ("1.35.1", False)])
def test_an_image_with_preseeded_artifacts_installs_its_version_offline(
    tmp_path: Path,
    make_source: Callable[..., tuple[Path, Any]],
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    seeded: bool,
) -> None:
    """What ``tether image build --artifacts`` puts in an image: a mirror of one version
    and the keyring that verified it. The agent, given neither a source nor a keyring,
    installs that version from the image and fetches any other from the plane."""
    source, keyring = make_source()
    preseeded = tmp_path / "image/var/lib/tether/artifacts"
    sync("1.34.2", source=str(source), to=preseeded, keyring=keyring)
    image_keyring = tmp_path / "image/etc/tether/artifact-keyring.yaml"
    image_keyring.parent.mkdir(parents=True)
    shutil.copyfile(tmp_path / "keyring.yaml", image_keyring)
    monkeypatch.setattr(runner, "PRESEED_KEYRING", str(image_keyring))
    clients: list[dict[str, Any]] = []  # the plane's mirror gets this host's certificate

    def client(**given: Any) -> Any:
        clients.append(given)
        return real_client()  # this unit test's identity is not a real one

    real_client = runner.https_client
    monkeypatch.setattr(runner, "https_client", client)
    plan = {"action": "install", "version": version}
    agent, plane, _ = plan_agent(tmp_path, plan, None, 60, preseeded=str(preseeded), keyring=None)
    assert agent.config.node.keyring is None and agent.config.node.source is None
    agent.follow_desired()
    result = plane.applies[0][1]
    if seeded:
        assert result["ok"] is True, result
        assert clients == [{}]
        kubelet = (tmp_path / "root/usr/local/bin/kubelet").read_bytes()
        assert kubelet == (source / "kubernetes/v1.34.2/amd64/kubelet").read_bytes()
    else:  # not in the image: the plane's mirror, which this FAKE plane does not serve
        assert result["ok"] is False and result["retryable"] is True
        assert "/agent/v1/artifacts" in result["message"]
        assert clients[0]["cert"] == agent.identity.cert_path


def test_a_reimage_reported_but_not_rebooted_for_reboots_on_that_boot_only(
    tmp_path: Path,
) -> None:
    """The agent notes a re-image before reporting it (the report revokes its
    certificate). Started again on the same boot (it stopped before its reboot, or the
    reboot failed), it reboots; on a later boot of the old system it only says so."""
    host = RecordingHost()
    agent = make_agent(tmp_path, None, VirtualClock(), node_host=lambda _: host)
    agent.config.state_dir.mkdir(parents=True)
    agent._note_reimage("d" * 64)
    assert agent._reboot_if_reimaging() is True
    assert [op for op, _ in host.calls] == ["reboot"]
    assert agent._reboot_if_reimaging() is False  # booted again: the old system, no loop
    assert [op for op, _ in host.calls] == ["reboot"]
    assert not (agent.config.state_dir / "reimage.json").exists()
