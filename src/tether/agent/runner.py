"""The agent's main loop: enrol once, then heartbeat, renew and follow the desired state.

Time is injected (``clock`` gives epoch seconds, ``monotonic`` a clock that never jumps,
``sleep`` waits), so tests run the whole schedule in virtual time: :meth:`Agent.step`
does whatever is due and says how long to wait. Failures never end the loop: a plane
outage is ridden out with exponential backoff and full jitter; a refusal is logged with
the plane's reason and retried at the backoff cap, because an operator can fix its cause
(reset the host, revoke and re-issue) while the agent keeps running.

The desired-state channel is a long poll in its own thread (it waits on the network,
not on the clock). A node plan that failed is run again only if the failure was
temporary (:func:`tether.errors.is_permanent` decides), with exponential backoff from
``node.retrySeconds``; a permanent failure (a foreign file, a containerd major jump, an
invalid NodeConfig) is reported once and left until the document changes or the agent
restarts.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tether.agent import AGENT_VERSION, checks, inventory, tags
from tether.agent.config import ActivationConfig, AgentConfig, ConfigError
from tether.agent.identity import Identity, choose_names, write_private
from tether.agent.lock import SingleInstance
from tether.agent.routes import Kept, RouteKeeper
from tether.agent.timing import Backoff, jittered, renewal_time
from tether.agent.vpnserver import VpnServer
from tether.domain.agent import Inventory
from tether.domain.imageplan import PRESEED_KEYRING
from tether.domain.nodeplan import reimages
from tether.domain.routes import ROUTE_CHECK, RouteError
from tether.errors import HostError, Permanent, PlaneError, is_permanent
from tether.node.actions import HostFacts
from tether.node.artifacts import Keyring
from tether.node.host import HostOps
from tether.node.install import https_client
from tether.node.mirror import holds
from tether.node.nodeconfig import NodeConfig
from tether.node.phases import PhaseEvent
from tether.node.plan import PlanContext, execute, failure, parse_plan
from tether.node.routes import IpRoutes
from tether.node.supervisor import service_manager
from tether.planeclient import HttpPlaneAPI, PlaneAPI, Refused, Unavailable, compact

log = logging.getLogger("tether.agent")

ApiFactory = Callable[[AgentConfig, Identity, bool], PlaneAPI]

#: Refusals of a registration that no retry can fix: the agent stops with exit code 2.
PERMANENT = 2


class RegistrationRefused(Permanent):
    """The plane refused this host's registration, or there is no activation to use."""


def _image_keyring() -> Path | None:
    """The keyring a pre-seeded image carries (``tether image build --artifacts``), if any."""
    path = Path(PRESEED_KEYRING)
    return path if path.is_file() else None


def http_api(config: AgentConfig, identity: Identity, with_cert: bool) -> PlaneAPI:
    ca = identity.ca_path if with_cert and identity.ca_path.is_file() else config.ca_file
    if with_cert:
        return HttpPlaneAPI(
            config.server,
            ca,
            identity.cert_path,
            identity.key_path,
            timeout=config.request_timeout,
        )
    return HttpPlaneAPI(config.server, ca, timeout=config.request_timeout)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        api_factory: ApiFactory = http_api,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        collect_inventory: Callable[[], Inventory] = inventory.collect,
        stop: threading.Event | None = None,
        node_host: Callable[[AgentConfig], HostOps] | None = None,
        node_facts: Callable[[AgentConfig], HostFacts] | None = None,
        reimage: Callable[[Agent], None] | None = None,
    ) -> None:
        self.config = config
        #: What the host does once a re-image plan is reported applied (None: reboot into
        #: the site's installer; the SIMULATED agent of :mod:`tether.sim.agent` re-images
        #: itself).
        self.reimage = reimage
        self.identity = Identity(config.state_dir)
        self.api_factory = api_factory
        self.clock = clock
        self.monotonic = monotonic
        self.stop = stop or threading.Event()
        self.sleep = sleep or (lambda seconds: self.stop.wait(seconds) and None)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.collect_inventory = collect_inventory
        #: The service manager node plans use: systemd when it runs as PID 1, else the
        #: supervisor backend (the demo passes a simulated one).
        self.node_host: Callable[[AgentConfig], HostOps] = node_host or (
            lambda cfg: service_manager(cfg.node.root)
        )
        #: What node validation reads of the host (the real one unless a simulation says).
        self.node_facts = node_facts
        #: The static routes of the desired state, kept on every document and heartbeat.
        self.routes = RouteKeeper(config.state_dir, IpRoutes(config.ip_command), config.node.root)
        #: A vpn-server host's tunnels and BGP sessions, reported as checks.
        self.vpn = VpnServer(config.vpn_server)
        self.vpn_problems: dict[str, str | None] = {}
        #: The stored ``vpnServer`` section while applying it at start has not worked
        #: yet (charon not up, say): tried again at each heartbeat until a document comes.
        self.vpn_restore: Any = None
        self.vpn_lock = threading.Lock()
        cap = config.max_backoff_seconds
        self.beat_backoff = Backoff(base=1.0, cap=cap, rng=self.rng)
        self.renew_backoff = Backoff(base=5.0, cap=cap, rng=self.rng)
        self.interval = config.heartbeat_seconds or 10.0
        self.api: PlaneAPI | None = None
        self.name = ""
        self.next_beat = 0.0
        self.renew_at = 0.0
        self.sent_version = False
        self.beats = 0
        self.renewals = 0

    # --- enrolment ------------------------------------------------------------------------

    def _adopt(self, enrolment: dict[str, Any], key_pem: bytes) -> None:
        self.identity.save(
            key_pem, enrolment["certificate"].encode(), enrolment["caBundle"].encode()
        )
        now = self.clock()
        not_after = datetime.fromisoformat(enrolment["notAfter"]).timestamp()
        self.renew_at = renewal_time(now, not_after)
        if self.config.heartbeat_seconds is None:
            self.interval = float(enrolment.get("heartbeatSeconds") or self.interval)
        self._reconnect()

    def _reconnect(self) -> None:
        if self.api is not None:
            self.api.close()
        self.api = self.api_factory(self.config, self.identity, True)

    def register(self) -> None:
        """Enrol with the activation; retried through outages, refused for good on 4xx."""
        activation = self.config.activation
        if activation is None:
            raise RegistrationRefused(
                "not enrolled and no activation in the config: add activation.id and "
                "activation.code (or codeFile)"
            )
        code = activation.read_code()
        inv = self.collect_inventory()
        names = choose_names(self.config.state_dir, self.config.name, inv)
        host_tags, problems = tags.collect(
            self.config.tags.static,
            self.config.tags.file,
            self.config.tags.script,
            self.config.tags.script_timeout,
        )
        key_pem, csr = self.identity.new_csr(names.name)
        body = {
            "activationID": activation.id,
            "code": code,
            "name": names.name,
            "hostID": names.host_id,
            "csr": csr.decode(),
            "inventory": inv.model_dump(mode="json", by_alias=True),
            "tags": host_tags,
            "agentVersion": AGENT_VERSION,
        }
        backoff = Backoff(base=1.0, cap=self.config.max_backoff_seconds, rng=self.rng)
        api = self.api_factory(self.config, self.identity, False)
        try:
            while not self.stop.is_set():
                log.info("registering as %s with activation %s", names.name, activation.id)
                try:
                    enrolment = api.register(body)
                except (Unavailable, Refused) as exc:
                    if is_permanent(exc):  # a 4xx: the agent stops (exit code 2)
                        raise RegistrationRefused(f"registration refused: {exc}") from None
                    delay = backoff.next()
                    log.warning("plane unavailable (%s); retrying in %.1fs", exc, delay)
                    self.sleep(delay)
                    continue
                break
            else:
                return
        finally:
            api.close()
        self.name = names.name
        self._adopt(enrolment, key_pem)
        log.info("enrolled as %s; certificate valid until %s", self.name, enrolment["notAfter"])
        if problems:
            self._event("TagsIncomplete", "; ".join(problems)[:1000], warning=True)

    def resume(self) -> None:
        """Already enrolled: load the identity, schedule renewal."""
        self.name = self.identity.node_name()
        cert = self.identity.certificate()
        now = self.clock()
        not_after = cert.not_valid_after_utc.timestamp()
        # The receive time is unknown after a restart: assume the file's mtime.
        received = min(now, self.identity.cert_path.stat().st_mtime)
        self.renew_at = renewal_time(received, not_after)
        self._reconnect()
        log.info("resuming as %s (certificate valid until %s)", self.name, cert.not_valid_after_utc)

    # --- the loop ------------------------------------------------------------------------

    def keep_routes(self, api: PlaneAPI | None = None) -> Kept:
        """Keep the desired routes (:mod:`tether.agent.routes`); each change is an event."""
        kept = self.routes.keep()
        for route in kept.restored:
            self._event("RouteInstalled", f"route {route} installed", api=api)
        for route in kept.removed:
            self._event("RouteRemoved", f"route {route} removed: no longer desired", api=api)
        for route, message in kept.errors.items():
            log.warning("cannot keep route %s: %s", route, message)
        return kept

    def _note_vpn(self, problems: dict[str, str | None], status: dict[str, Any]) -> None:
        """An event each time a VPN server's tunnels or BGP sessions go up or down."""
        for check, problem in problems.items():
            if check in self.vpn_problems and (self.vpn_problems[check] is None) == (
                problem is None
            ):
                continue
            what = {"tunnel": "Tunnels", "bgp": "BGP"}[check]
            counts = ", ".join(
                f"{k} {v}"
                for k, v in status.get("tunnels" if check == "tunnel" else "bgp", {}).items()
            )
            if problem is None:
                self._event(f"{what}Up", f"{what.lower()} up: {counts}")
            else:
                self._event(f"{what}Down", problem, warning=True)
        self.vpn_problems = dict(problems)

    def heartbeat(self) -> None:
        assert self.api is not None
        failing = checks.run_all(self.config.checks)
        count = len(self.config.checks)
        kept = self.keep_routes()
        if kept.states:  # the routes count as one more check
            count += 1
            message = kept.failing()
            if message:
                failing[ROUTE_CHECK] = message[:256]
        self._restore_vpn()
        problems, status = self.vpn.checks()
        self._note_vpn(problems, status)
        count += len(problems)
        failing.update({k: v[:256] for k, v in problems.items() if v})
        body: dict[str, Any] = {"n": count}
        if failing:
            body["f"] = failing
        if not self.sent_version:
            body["v"] = AGENT_VERSION
        self.api.heartbeat(self.name, compact(body))
        self.sent_version = True
        self.beats += 1

    def renew(self) -> None:
        assert self.api is not None
        key_pem, csr = self.identity.new_csr(self.name)
        enrolment = self.api.renew(self.name, csr.decode())
        self._adopt(enrolment, key_pem)
        self.renewals += 1
        log.info("certificate renewed; valid until %s", enrolment["notAfter"])

    def step(self) -> float:
        """Do what is due now; return how long to wait before the next step."""
        now = self.clock()
        if now >= self.renew_at:
            try:
                self.renew()
                self.renew_backoff.reset()
            except (Unavailable, Refused) as exc:
                delay = self.renew_backoff.next()
                self.renew_at = now + delay
                log.warning("certificate renewal failed (%s); retrying in %.1fs", exc, delay)
        if now >= self.next_beat:
            try:
                self.heartbeat()
                self.beat_backoff.reset()
                self.next_beat = now + jittered(self.interval, self.rng)
            except Unavailable as exc:
                delay = self.beat_backoff.next()
                self.next_beat = now + delay
                log.warning("heartbeat failed (%s); retrying in %.1fs", exc, delay)
                self.sent_version = False
            except Refused as exc:
                delay = self.beat_backoff.next()
                self.next_beat = now + delay
                hint = (
                    "; this host must enrol again (tether agent reset, and a reset of the host "
                    "on the plane)"
                    if exc.status == 401
                    else ""
                )
                log.error("heartbeat refused: %s [%s]%s", exc.message, exc.rule, hint)
        return max(0.0, min(self.next_beat, self.renew_at) - self.clock())

    def _event(
        self, reason: str, message: str, *, warning: bool = False, api: PlaneAPI | None = None
    ) -> None:
        """Send a host event (through ``api``, default the main connection); best effort."""
        api = api or self.api
        if api is None:
            return
        try:
            api.event(
                self.name,
                {
                    "type": "Warning" if warning else "Normal",
                    "reason": reason[:128],
                    "message": message[:1024],
                },
            )
        except (Unavailable, Refused) as exc:
            log.warning("could not send event %s: %s", reason, exc)

    # --- desired state ----------------------------------------------------------------------

    def apply(self, document: dict[str, Any], api: PlaneAPI | None = None) -> dict[str, Any]:
        path = self.config.state_dir / "desired.json"
        write_private(path, json.dumps(document, indent=2).encode())
        try:
            self.routes.want(document)
        except RouteError as exc:
            return {"ok": False, "retryable": False, "message": str(exc)}
        kept = self.keep_routes(api)
        result = self._apply_rest(document, path, api)
        if kept.states:
            result["routes"] = kept.report()
        return result

    def _apply_rest(
        self, document: dict[str, Any], path: Path, api: PlaneAPI | None
    ) -> dict[str, Any]:
        with self.vpn_lock:
            self.vpn_restore = None
            if "vpnServer" in document:
                result = self.vpn.apply(document["vpnServer"])
            else:
                self.vpn.want(None)
        if "vpnServer" in document:
            result["status"] = self.vpn.checks()[1]
            return result
        if "node" in document:
            return self.apply_node(document["node"], api or self.api)
        command = self.config.desired.command
        if not command:
            return {"ok": True, "message": f"stored in {path}"}
        try:
            done = subprocess.run(
                command,
                input=json.dumps(document).encode(),
                capture_output=True,
                timeout=self.config.desired.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "message": f"timed out after {self.config.desired.timeout:g}s"}
        except OSError as exc:
            return {"ok": False, "message": f"cannot run {command[0]}: {exc.strerror}"}
        output = (done.stdout or done.stderr).decode(errors="replace").strip()[-500:]
        return {"ok": done.returncode == 0, "exitCode": done.returncode, "message": output}

    def apply_node(self, data: Any, api: PlaneAPI | None) -> dict[str, Any]:
        """Run a node plan (see :mod:`tether.node.plan`), each phase reported as an event."""
        node = self.config.node
        try:
            plan = parse_plan(data)
            ring_file = node.keyring or _image_keyring()
            keyring = Keyring.from_file(ring_file) if ring_file else None
        except (PlaneError, HostError) as exc:  # an invalid plan, an unusable keyring
            return failure(exc)

        def report(event: PhaseEvent) -> None:
            log.info("node %s %s: %s %s", event.action, event.phase, event.status, event.message)
            warning = event.status == "Failed"
            self._event(event.reason, event.message, warning=warning, api=api)

        ident = self.identity
        source = node.source
        # An air-gapped host's image carries its first version's artifacts.
        if (
            source is None
            and plan.version
            and keyring is not None
            and holds(node.preseeded, plan.version, keyring=keyring)
        ):
            source = str(node.preseeded)
        # The plane's mirror is fetched with this host's certificate; another mirror
        # (node.source) is trusted through the system's CAs and gets no client certificate.
        client = (
            https_client()
            if source
            else https_client(ca=ident.ca_path, cert=ident.cert_path, key=ident.key_path)
        )
        with client:
            ctx = PlanContext(
                name=self.name,
                root=node.root,
                host=self.node_host(self.config),
                server=self.config.server,
                ca=ident.ca_path,
                cert=ident.cert_path,
                key=ident.key_path,
                source=source or f"{self.config.server}/agent/v1/artifacts",
                client=client,
                keyring=keyring,
                ready_timeout=node.ready_timeout,
                facts=self.node_facts(self.config) if self.node_facts else None,
            )
            return execute(plan, ctx, report)

    def follow_desired(self) -> None:
        """Long-poll the desired state until stopped; apply and report each new document.

        A node plan that failed temporarily is run again while the document stays the
        same (its cause may go away: a drain finished, the mirror is back), after
        ``node.retrySeconds`` and then exponentially longer (full jitter, capped at
        ``maxBackoffSeconds`` or ``node.retrySeconds`` if that is longer). A permanent
        failure is not run again until the document changes."""
        api = self.api_factory(self.config, self.identity, True)
        known: str | None = None
        last: dict[str, Any] | None = None
        retry_at: float | None = None
        backoff = Backoff(base=1.0, cap=self.config.max_backoff_seconds, rng=self.rng)
        retry_every = self.config.node.retry_seconds
        plan_backoff = Backoff(
            base=retry_every, cap=max(retry_every, self.config.max_backoff_seconds), rng=self.rng
        )
        generation = self.renewals
        try:
            while not self.stop.is_set():
                if self.renewals != generation:  # new certificate: new connection
                    api.close()
                    api = self.api_factory(self.config, self.identity, True)
                    generation = self.renewals
                try:
                    wait = self.config.long_poll_seconds
                    if retry_at is not None:
                        wait = max(0.1, min(wait, retry_at - self.monotonic()))
                    doc = api.desired(self.name, known, wait)
                    backoff.reset()
                    if doc is None:
                        if retry_at is None or self.monotonic() < retry_at or last is None:
                            continue
                        doc = last
                    if doc["hash"] != known:
                        plan_backoff.reset()
                    try:
                        result = self.apply(doc["document"], api)
                    except Exception as exc:  # never let one document end the channel
                        log.exception("applying desired state %s failed", doc["hash"][:12])
                        result = failure(exc)
                        result["message"] = f"{type(exc).__name__}: {result['message']}"[:500]
                    going = bool(result.get("ok")) and reimages(doc["document"])
                    if going:  # before the report, which ends this system's enrolment
                        self._note_reimage(doc["hash"])
                    api.applied(self.name, {"hash": doc["hash"], "result": result})
                    known, last = doc["hash"], doc
                    if going:
                        self._reboot_for_reimage(doc["hash"])
                        continue
                    retry_at = None
                    if "node" in doc["document"] and not result.get("ok"):
                        if result.get("retryable", True):
                            delay = plan_backoff.next()
                            retry_at = self.monotonic() + delay
                            log.warning("node plan failed; running it again in %.1fs", delay)
                        else:
                            log.error(
                                "node plan failed permanently, not run again until the "
                                "desired state changes: %s",
                                result.get("message"),
                            )
                    log.info("desired state %s applied: %s", known[:12], result.get("ok"))
                except (Unavailable, Refused) as exc:
                    if isinstance(exc, Refused) and exc.status == 401:
                        self._reboot_if_reimaging()  # the re-image's report did land
                    delay = backoff.next()
                    log.warning("desired-state poll failed (%s); retrying in %.1fs", exc, delay)
                    self.stop.wait(delay)
        finally:
            api.close()

    @property
    def _reimage_marker(self) -> Path:
        return self.config.state_dir / "reimage.json"

    def _note_reimage(self, digest: str) -> None:
        """Remember, on this boot, that a re-image is being reported (see
        :meth:`_reboot_if_reimaging`)."""
        boot = self.node_host(self.config).boot_id()
        write_private(self._reimage_marker, json.dumps({"hash": digest, "boot": boot}).encode())

    def _reboot_if_reimaging(self) -> bool:
        """Reboot now if a re-image was being reported on this very boot: the agent
        stopped (or its reboot failed, or the report's answer was lost) between the
        report, which revoked its certificate, and the reboot. On a later boot of the old
        system the marker only says the site's installer did not run."""
        try:
            noted = json.loads(self._reimage_marker.read_text())
        except (OSError, ValueError):
            return False
        if noted.get("boot") != self.node_host(self.config).boot_id():
            log.error(
                "re-image %s was reported, but this is the old system booted again: the "
                "site's installer did not install the new image",
                str(noted.get("hash", ""))[:12],
            )
            self._reimage_marker.unlink(missing_ok=True)
            return False
        self._reboot_for_reimage(str(noted.get("hash", "")))
        return True

    def _reboot_for_reimage(self, digest: str) -> None:
        """Reboot into the site's installer, once the re-image plan is reported applied.

        The plane revoked this host's certificates when it recorded the report: the
        host now belongs to its next image, which enrols again with the seed. What the
        machine boots (PXE, virtual media, an installer ISO) is the site's boot set-up."""
        if self.reimage is not None:
            self.reimage(self)
            return
        log.warning("re-image (desired state %s): rebooting into the installer", digest[:12])
        try:
            self.node_host(self.config).reboot()
        except (HostError, OSError) as exc:
            log.error("re-image: the reboot failed: %s", exc)

    # --- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Enrol (or resume); afterwards :meth:`step` may be called."""
        if self.identity.enrolled():
            self.resume()
            self._reboot_if_reimaging()
        else:
            self.register()
        self._restore_stored()

    def _restore_stored(self) -> None:
        """The stored document, so a rebooted host is back before the plane answers: its
        routes are kept from the first heartbeat on, and a VPN server's configuration is
        applied again now (charon and BIRD start empty)."""
        try:
            stored = json.loads((self.config.state_dir / "desired.json").read_text())
            self.routes.want(stored if isinstance(stored, dict) else None)
        except FileNotFoundError:
            return
        except (OSError, ValueError, HostError) as exc:  # RouteError is a ValueError
            log.warning("stored desired state unusable: %s", exc)
            return
        if isinstance(stored, dict) and "vpnServer" in stored:
            self.vpn_restore = stored["vpnServer"]
            self._restore_vpn()

    def _restore_vpn(self) -> None:
        """Apply the stored ``vpnServer`` section again, while :attr:`vpn_restore` holds
        it: done once it worked, or for good when it is invalid."""
        with self.vpn_lock:
            section = self.vpn_restore
            if section is None:
                return
            result = self.vpn.apply(section)
            if result["ok"] or not result.get("retryable", True):
                self.vpn_restore = None
        if result["ok"]:
            self._event("VPNServerRestored", f"stored VPN server configuration {result['message']}")
        else:
            log.warning("stored VPN server configuration not applied: %s", result["message"])

    def run(self) -> int:
        """Run until stopped: the ``tether agent run`` command. Returns an exit code."""
        with SingleInstance(self.config.lock_path):
            try:
                self.start()
            except (RegistrationRefused, ConfigError) as exc:
                log.error("%s", exc)
                return PERMANENT
            if self.stop.is_set():
                return 0
            poller = None
            if self.config.desired.enabled:
                poller = threading.Thread(target=self.follow_desired, daemon=True, name="desired")
                poller.start()
            try:
                while not self.stop.is_set():
                    self.sleep(self.step())
            finally:
                self.stop.set()
                if self.api is not None:
                    self.api.close()
                if poller is not None:
                    poller.join(timeout=2)
        return 0


#: How long enrolment for ``tether node init`` rides out an unreachable plane (seconds).
ENROL_TIMEOUT = 120.0


class EnrolmentFailed(Permanent):
    """Enrolment for a NodeConfig's activation credentials was refused, or the host is
    enrolled under another name."""


def enrol_identity(config: NodeConfig) -> tuple[Path, Path, Path]:
    """Enrol with a NodeConfig's activation credentials as this agent would (or reuse the
    identity already in its state directory); the certificate, key and CA paths."""
    activation = config.spec.credentials.activation
    assert activation is not None
    give_up = threading.Event()
    timer = threading.Timer(ENROL_TIMEOUT, give_up.set)
    agent = Agent(
        AgentConfig(
            server=activation.plane_endpoint.rstrip("/"),
            ca_file=activation.ca_path,
            state_dir=activation.state_dir,
            name=config.spec.node.name,
            activation=ActivationConfig(id=activation.id, code_file=activation.code_file),
            max_backoff_seconds=30,
        ),
        stop=give_up,
    )
    timer.start()
    try:
        agent.start()
    except (RegistrationRefused, ConfigError) as exc:
        raise EnrolmentFailed(str(exc)) from exc
    finally:
        timer.cancel()
        if agent.api is not None:
            agent.api.close()
    if give_up.is_set() and not agent.name:
        raise Unavailable(f"the plane was unreachable for {ENROL_TIMEOUT:g}s while enrolling")
    if agent.name != config.spec.node.name:
        raise EnrolmentFailed(
            f"this host is enrolled as {agent.name!r}, not {config.spec.node.name!r}: reset the "
            "agent (tether agent reset) or use the enrolled name"
        )
    identity = agent.identity
    return identity.cert_path, identity.key_path, identity.ca_path
