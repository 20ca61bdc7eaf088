"""A resumable list-then-watch loop, the way client-go's reflector does it.

1. **List** every object, hand the list to ``on_list`` (the controller rebuilds its cache
   and reconciles everything), remember the list's ``resourceVersion``.
2. **Watch** from that version; each event goes to ``on_event``; the newest version seen
   (bookmarks included) is kept.
3. The watch ends after ``resync_seconds`` (the server closes it): ``on_resync`` runs (a
   periodic full reconcile, which also picks up changes made on the plane's side), and
   the watch resumes from the kept version without listing again.
4. ``Gone`` (410: the version was compacted) lists again at once.
5. Any other failure (the API server is down, a handler raised) backs off
   exponentially (``backoff``, capped at ``max_backoff``) and then resumes from the kept
   version; a handler failure lists again instead, because the controller's view may
   be incomplete.

``stop()`` (from any thread) ends ``run()`` promptly: it closes the open watch.
*sleep* waits between attempts (default: the stop event's ``wait``); tests inject one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from tether.kube.client import ObjectList, Watch, WatchEvent
from tether.kube.errors import Gone, KubeError
from tether.kube.resources import Resource

__all__ = ["ListWatchLoop", "WatchController", "WatchingClient"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)


class WatchingClient(Protocol):
    """The part of :class:`~tether.kube.client.KubeClient` the loop uses."""

    def list(
        self,
        res: type[R],
        *,
        namespace: str | None = ...,
        labels: Mapping[str, str | None] | None = ...,
        fields: Mapping[str, str | None] | None = ...,
    ) -> ObjectList[R]: ...

    def watch(
        self,
        res: type[R],
        *,
        namespace: str | None = ...,
        resource_version: str | None = ...,
        labels: Mapping[str, str | None] | None = ...,
        fields: Mapping[str, str | None] | None = ...,
        timeout_seconds: int | None = ...,
        bookmarks: bool = ...,
    ) -> Watch[R]: ...


class ListWatchLoop(Generic[R]):
    """List, then watch and resume, until stopped (see the module doc)."""

    def __init__(
        self,
        client: WatchingClient,
        res: type[R],
        *,
        on_list: Callable[[list[R]], None],
        on_event: Callable[[WatchEvent[R]], None],
        on_resync: Callable[[], object] | None = None,
        namespace: str | None = None,
        resync_seconds: int = 30,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], Any] | None = None,
        name: str = "watch",
    ) -> None:
        self.client = client
        self.res = res
        self.on_list = on_list
        self.on_event = on_event
        self.on_resync = on_resync
        self.namespace = namespace
        self.resync_seconds = resync_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.name = name
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._watch: Watch[R] | None = None
        self.resource_version: str | None = None
        #: Counters for tests and metrics.
        self.lists = 0
        self.watches = 0
        self.failures = 0

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.close()

    def _delay(self, failures: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2 ** min(failures - 1, 20)))

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    listed = self.client.list(self.res, namespace=self.namespace)
                    self.lists += 1
                    self.on_list(list(listed.items))
                    self.resource_version = listed.resource_version or None
                    if self.resource_version is None:  # pragma: no cover - servers always send one
                        raise KubeError("list returned no resourceVersion")
                watch = self.client.watch(
                    self.res,
                    namespace=self.namespace,
                    resource_version=self.resource_version,
                    timeout_seconds=self.resync_seconds,
                )
                self._watch = watch
                self.watches += 1
                if self._stop.is_set():
                    watch.close()
                    return
                with watch:
                    for event in watch:
                        self.on_event(event)
                        if watch.resource_version:
                            self.resource_version = watch.resource_version
                if watch.resource_version:
                    self.resource_version = watch.resource_version
                failures = 0
                if self.on_resync is not None and not self._stop.is_set():
                    self.on_resync()
            except Gone:
                log.info(
                    "%s: resourceVersion %s expired; listing again",
                    self.name,
                    self.resource_version,
                )
                self.resource_version = None
            except KubeError as exc:
                failures += 1
                self.failures += 1
                delay = self._delay(failures)
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
                self._sleep(delay)
            except Exception:
                # A handler failed (the store was busy, a conflict): our view may be
                # incomplete, so list again after a pause.
                failures += 1
                self.failures += 1
                delay = self._delay(failures)
                log.exception("%s: handler failed; listing again in %.1fs", self.name, delay)
                self.resource_version = None
                self._sleep(delay)
            finally:
                self._watch = None


class WatchController(Generic[R]):
    """Running a controller whose work is one :class:`ListWatchLoop` in ``self.loop``."""

    loop: ListWatchLoop[R]
    _thread: threading.Thread | None = None

    def run(self) -> None:
        """List, watch and reconcile until :meth:`stop` (blocks)."""
        self.loop.run()

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=self.loop.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.loop.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
