"""SIMULATED kubelets: Node objects and Lease renewals without any kubelet.

This is **not** a kubelet. Nothing runs containers. It plays the parts of a kubelet the
control plane can see, so tests, the demo and scale benchmarks get realistic Node
traffic from a real API server:

- registers a Node (labels, ``spec.providerID`` ``tether://<cluster>/<node>``, capacity,
  addresses, ``nodeInfo``) and reports ``Ready`` through ``status.conditions``;
- creates the node's Lease in ``kube-node-lease`` (owned by the Node, as the kubelet
  does) and renews it every ``lease_interval`` seconds (10 s, the kubelet's default:
  a quarter of the 40 s lease duration);
- re-posts node status every ``status_interval`` seconds (5 min, the kubelet's
  ``nodeStatusReportFrequency``) and at once when readiness changes;
- can be made NotReady (``set_ready``), or stopped like a dead kubelet (``stop_node``:
  renewals stop; ``mark_unknown`` also sets Ready=Unknown, which is what the node
  lifecycle controller of kube-controller-manager would do after its grace period, and
  which nobody does here because no controller-manager runs);
- optionally (``finalize_pods``) finishes the graceful deletion of pods bound to its
  nodes, as a kubelet does once containers stop: without it, an evicted pod on a node
  stays ``Terminating`` forever.

Cheap at scale: a whole fleet shares one :class:`~tether.kube.client.KubeClient` (one
HTTP connection pool), one scheduler thread (a heap of due renewals) and a small worker
pool, instead of a thread per node. Renewals are spread evenly over the interval.
``renewal_lags`` records how late each renewal landed against its schedule.

Credentials: the fleet uses whatever identity its client has (tests use the admin);
real kubelets would each use ``system:node:<name>``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, cast

from tether.kube.client import ALL_NAMESPACES, KubeClient
from tether.kube.errors import Conflict, Gone, KubeError, NotFound
from tether.kube.resources import Lease, LeaseSpec, Node, ObjectMeta, OwnerReference, Pod

__all__ = [
    "LEASE_NAMESPACE",
    "FleetStats",
    "KubeletFleet",
    "SimulatedNode",
]

LEASE_NAMESPACE = "kube-node-lease"
_DEFAULT_CAPACITY = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
_Kind = Literal["lease", "status"]


def _micro_time(now: datetime | None = None) -> str:
    """A Kubernetes MicroTime (``2006-01-02T15:04:05.000000Z``)."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _has_conditions(node: Node) -> bool:
    return bool(node.status is not None and node.status.conditions)


@dataclass
class SimulatedNode:
    """One simulated kubelet's node."""

    name: str
    cluster: str = "sim"
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, str] = field(default_factory=lambda: dict(_DEFAULT_CAPACITY))
    addresses: list[str] = field(default_factory=list)
    kubelet_version: str = "v1.37.2"
    provider_id: str | None = None  # default tether://<cluster>/<name>

    @property
    def effective_provider_id(self) -> str:
        return self.provider_id or f"tether://{self.cluster}/{self.name}"


@dataclass
class _NodeState:
    spec: SimulatedNode
    ready: bool | None = True
    reason: str = "KubeletReady"
    message: str = "kubelet is posting ready status (simulated)"
    transition: str = ""
    running: bool = False
    uid: str | None = None
    generation: int = 0  # bumped on restart; stale heap entries are dropped


@dataclass
class FleetStats:
    """Counters since the fleet started (or :meth:`KubeletFleet.reset_stats`)."""

    renewals: int = 0
    status_updates: int = 0
    errors: int = 0
    last_error: str | None = None
    #: (monotonic completion time, lag in seconds) for each lease renewal.
    lags: list[tuple[float, float]] = field(default_factory=list)


class KubeletFleet:
    """Many simulated kubelets against one API server (see the module doc).

    Use as a context manager, or ``register(...)``, ``start()`` and ``stop()``.
    *clock* is the monotonic clock schedules and lags are measured with.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        lease_interval: float = 10.0,
        lease_duration_seconds: int = 40,
        status_interval: float | None = 300.0,
        workers: int = 8,
        finalize_pods: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_interval <= 0:
            raise ValueError("lease_interval must be positive")
        self.client = client
        self.lease_interval = lease_interval
        self.lease_duration_seconds = lease_duration_seconds
        self.status_interval = status_interval
        self.finalize_pods = finalize_pods
        self._clock = clock
        self._nodes: dict[str, _NodeState] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, str, _Kind, int]] = []
        self._seq = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubesim")
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pod_watch: Any = None
        self.stats = FleetStats()

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._nodes)

    def register(self, nodes: Iterable[SimulatedNode]) -> None:
        """Create (or adopt) each Node with Ready status and its Lease, concurrently.

        Registered nodes renew their leases once the fleet is started (at once if it
        already is). Raises the first registration failure.
        """
        specs = list(nodes)
        futures: list[Future[None]] = [self._pool.submit(self._register_one, s) for s in specs]
        for fut in futures:
            fut.result()
        if self._threads:
            now = self._clock()
            with self._lock:
                for spec in specs:
                    self._schedule_locked(spec.name, now)
                self._wakeup.notify()

    def start(self) -> None:
        """Start renewing leases (and finalizing pods, if asked)."""
        if self._threads:
            return
        self._stopping.clear()
        now = self._clock()
        with self._lock:
            for name in self._nodes:
                self._schedule_locked(name, now)
        scheduler = threading.Thread(target=self._run, name="kubesim-scheduler", daemon=True)
        self._threads.append(scheduler)
        if self.finalize_pods:
            finalizer = threading.Thread(
                target=self._finalize_pods, name="kubesim-pods", daemon=True
            )
            self._threads.append(finalizer)
        for thread in self._threads:
            thread.start()

    def stop(self, *, delete: bool = False) -> None:
        """Stop every simulated kubelet; with *delete*, remove their Nodes and Leases too."""
        self._stopping.set()
        with self._lock:
            self._wakeup.notify_all()
        watch = self._pod_watch
        if watch is not None:
            watch.close()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        if delete:
            for name in self.names:
                self.client.delete(Lease, name, namespace=LEASE_NAMESPACE, missing_ok=True)
                self.client.delete(Node, name, missing_ok=True)
            with self._lock:
                self._nodes.clear()
        self._pool.shutdown(wait=True)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = FleetStats()

    def renewal_lags(self, since: float | None = None) -> list[float]:
        """Lags (seconds late against schedule) of renewals completed at or after *since*."""
        with self._lock:
            return [lag for done, lag in self.stats.lags if since is None or done >= since]

    # -- behaviours ------------------------------------------------------------------

    def set_ready(
        self,
        name: str,
        ready: bool | None,
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Report Ready=True/False (or Unknown for ``None``) in the Node's status now."""
        with self._lock:
            state = self._nodes[name]
            state.ready = ready
            state.reason = (
                reason
                or {
                    True: "KubeletReady",
                    False: "KubeletNotReady",
                    None: "NodeStatusUnknown",
                }[ready]
            )
            state.message = (
                message
                or {
                    True: "kubelet is posting ready status (simulated)",
                    False: "container runtime network not ready (simulated)",
                    None: "Kubelet stopped posting node status (simulated)",
                }[ready]
            )
            state.transition = _time()
        self._post_status(name)

    def stop_node(self, name: str, *, mark_unknown: bool = False) -> None:
        """Stop one kubelet: its lease and status are no longer renewed.

        With *mark_unknown*, set Ready=Unknown as the node lifecycle controller would.
        """
        with self._lock:
            self._nodes[name].running = False
        if mark_unknown:
            with self._lock:
                state = self._nodes[name]
                state.ready = None
                state.reason = "NodeStatusUnknown"
                state.message = "Kubelet stopped posting node status (simulated)"
                state.transition = _time()
            self._post_status(name)

    def start_node(self, name: str) -> None:
        """Restart a stopped kubelet: it renews its lease again (readiness unchanged)."""
        with self._lock:
            state = self._nodes[name]
            if state.running:
                return
            state.running = True
            state.generation += 1
            if self._threads:
                self._schedule_locked(name, self._clock(), spread=False)
                self._wakeup.notify()

    # -- registration ------------------------------------------------------------------

    def _register_one(self, spec: SimulatedNode) -> None:
        labels = {
            "kubernetes.io/hostname": spec.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **spec.labels,
        }
        state = _NodeState(spec=spec, running=True, transition=_time())
        # Like a kubelet, register with the status already in the Node (the API server
        # keeps a Node's status on create), so the Node is never seen without conditions.
        node = cast(
            Node,
            Node.from_dict(
                {
                    "metadata": {"name": spec.name, "labels": labels},
                    "spec": {"providerID": spec.effective_provider_id},
                    **self._status_body(state),
                }
            ),
        )
        try:
            created = self.client.create(node)
            fresh = True
        except Conflict as exc:
            if not exc.already_exists:
                raise
            created = self.client.patch(Node, spec.name, {"metadata": {"labels": labels}})
            fresh = False
        state.uid = created.metadata.uid if created.metadata else None
        with self._lock:
            self._nodes[spec.name] = state
        if not fresh or not _has_conditions(created):
            self._post_status(spec.name)
        self._ensure_lease(spec.name)

    def _ensure_lease(self, name: str) -> None:
        with self._lock:
            uid = self._nodes[name].uid
        owners = [OwnerReference(apiVersion="v1", kind="Node", name=name, uid=uid)] if uid else None
        lease = Lease(
            metadata=ObjectMeta(name=name, namespace=LEASE_NAMESPACE, ownerReferences=owners),
            spec=LeaseSpec(
                holderIdentity=name,
                leaseDurationSeconds=self.lease_duration_seconds,
                renewTime=datetime.now(UTC),
            ),
        )
        try:
            self.client.create(lease, namespace=LEASE_NAMESPACE)
        except Conflict as exc:
            if not exc.already_exists:
                raise
            self._renew_lease(name)

    def _status_body(self, state: _NodeState) -> dict[str, Any]:
        spec = state.spec
        now = _time()
        ready = {True: "True", False: "False", None: "Unknown"}[state.ready]

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": state.transition or now,
            }

        pressure = "Unknown" if state.ready is None else "False"
        conditions = [
            condition("MemoryPressure", pressure, "KubeletHasSufficientMemory", "simulated"),
            condition("DiskPressure", pressure, "KubeletHasNoDiskPressure", "simulated"),
            condition("PIDPressure", pressure, "KubeletHasSufficientPID", "simulated"),
            condition("Ready", ready, state.reason, state.message),
        ]
        addresses = [{"type": "InternalIP", "address": a} for a in spec.addresses]
        addresses.append({"type": "Hostname", "address": spec.name})
        machine = f"{zlib.crc32(spec.name.encode()):08x}" * 4
        return {
            "status": {
                "capacity": spec.capacity,
                "allocatable": spec.capacity,
                "conditions": conditions,
                "addresses": addresses,
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": machine,
                    "systemUUID": machine,
                    "bootID": machine,
                    "kernelVersion": "6.1.0-simulated",
                    "osImage": "Tether simulated kubelet",
                    "containerRuntimeVersion": "simulated://1.0",
                    "kubeletVersion": spec.kubelet_version,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
        }

    def _post_status(self, name: str) -> None:
        with self._lock:
            body = self._status_body(self._nodes[name])
        self.client.patch(Node.Status, name, body)
        with self._lock:
            self.stats.status_updates += 1

    def _renew_lease(self, name: str) -> None:
        body = {"spec": {"holderIdentity": name, "renewTime": _micro_time()}}
        try:
            self.client.patch(Lease, name, body, namespace=LEASE_NAMESPACE)
        except NotFound:
            self._ensure_lease(name)

    # -- the scheduler -------------------------------------------------------------------

    def _schedule_locked(self, name: str, now: float, *, spread: bool = True) -> None:
        """Queue *name*'s first renewal, at a stable offset within one interval."""
        offset = 0.0
        if spread:
            offset = (zlib.crc32(name.encode()) % 10_000) / 10_000 * self.lease_interval
        gen = self._nodes[name].generation
        heapq.heappush(self._heap, (now + offset, next(self._seq), name, "lease", gen))
        if self.status_interval is not None:
            due = now + offset + self.status_interval
            heapq.heappush(self._heap, (due, next(self._seq), name, "status", gen))

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                if not self._heap:
                    self._wakeup.wait(0.5)
                    continue
                due, _, name, kind, gen = self._heap[0]
                wait = due - self._clock()
                if wait > 0:
                    self._wakeup.wait(min(wait, 0.5))
                    continue
                heapq.heappop(self._heap)
                state = self._nodes.get(name)
                if state is None or not state.running or state.generation != gen:
                    continue  # stopped (start_node schedules it again) or superseded
                interval = self.lease_interval if kind == "lease" else self.status_interval
                assert interval is not None
                entry = (due + interval, next(self._seq), name, kind, gen)
                heapq.heappush(self._heap, entry)
            try:
                self._pool.submit(self._tick, name, kind, due)
            except RuntimeError:  # pool shut down while stopping
                return

    def _tick(self, name: str, kind: _Kind, due: float) -> None:
        if self._stopping.is_set():
            return
        try:
            if kind == "lease":
                self._renew_lease(name)
            else:
                self._post_status(name)
        except KubeError as exc:
            with self._lock:
                self.stats.errors += 1
                self.stats.last_error = f"{name}: {exc}"
            return
        if kind == "lease":
            done = self._clock()
            with self._lock:
                self.stats.renewals += 1
                self.stats.lags.append((done, done - due))

    # -- pods ------------------------------------------------------------------------------

    def _finalize(self, pod: Pod) -> None:
        meta, spec = pod.metadata, pod.spec
        if meta is None or spec is None or meta.deletionTimestamp is None or not meta.name:
            return
        with self._lock:
            state = self._nodes.get(spec.nodeName or "")
            ours = state is not None and state.running
        if ours:
            self.client.delete(
                Pod, meta.name, namespace=meta.namespace, grace_period=0, missing_ok=True
            )

    def _finalize_pods(self) -> None:
        """List-then-watch pods in every namespace; finish deletions on our nodes."""
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    listed = self.client.list(Pod, namespace=ALL_NAMESPACES)
                    for pod in listed:
                        self._finalize(pod)
                    version = listed.resource_version
                watch = self.client.watch(
                    Pod, namespace=ALL_NAMESPACES, resource_version=version, timeout_seconds=60
                )
                self._pod_watch = watch
                if self._stopping.is_set():
                    return
                with watch:
                    for event in watch:
                        if event.type != "DELETED":
                            self._finalize(event.object)
                version = watch.resource_version
            except Gone:
                version = None
            except KubeError as exc:
                with self._lock:
                    self.stats.errors += 1
                    self.stats.last_error = f"pod finalizer: {exc}"
                self._stopping.wait(1.0)

    # -- inspection --------------------------------------------------------------------

    def node(self, name: str) -> Mapping[str, Any]:
        """The simulator's view of one node (ready, running, spec), for tests."""
        with self._lock:
            state = self._nodes[name]
            return {"ready": state.ready, "running": state.running, "spec": state.spec}
