"""The resumable list-then-watch loop, against a scripted fake client.

The real API server serves old resourceVersions from its watch cache, so "410 Gone" and
a dropped connection are played by the fake; the integration tests cover the happy path
against kube-apiserver.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node

from tether.controllers.watch import ListWatchLoop
from tether.kube.client import ObjectList, WatchEvent
from tether.kube.errors import Gone, Unavailable


def node(name: str, rv: str) -> Node:
    return Node(metadata=ObjectMeta(name=name, resourceVersion=rv))


class FakeWatch:
    def __init__(self, script: list[Any], rv: str | None) -> None:
        self.script = script
        self.resource_version = rv

    def __enter__(self) -> FakeWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None

    def __iter__(self) -> Iterator[WatchEvent[Node]]:
        for step in self.script:
            if isinstance(step, Exception):
                raise step
            self.resource_version = step.object.metadata.resourceVersion
            yield step


class FakeClient:
    """Each list() and watch() call takes the next scripted answer."""

    def __init__(self, lists: list[ObjectList[Node]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[tuple[str, str | None]] = []
        self.loop: ListWatchLoop[Node] | None = None

    def list(self, res: type[Node], **_: Any) -> ObjectList[Node]:
        self.calls.append(("list", None))
        return self.lists.pop(0)

    def watch(self, res: type[Node], *, resource_version: str | None = None, **_: Any) -> FakeWatch:
        self.calls.append(("watch", resource_version))
        if not self.watches:  # script done: stop the loop (it checks right after watch())
            assert self.loop is not None
            self.loop.stop()
            return FakeWatch([], resource_version)
        return FakeWatch(self.watches.pop(0), resource_version)


def run_loop(client: FakeClient) -> tuple[ListWatchLoop[Node], list[str], list[float]]:
    seen: list[str] = []
    sleeps: list[float] = []
    loop: ListWatchLoop[Node]

    def on_list(items: list[Node]) -> None:
        seen.append("list:" + ",".join(n.metadata.name for n in items if n.metadata))

    def on_event(event: WatchEvent[Node]) -> None:
        seen.append(f"{event.type}:{event.object.metadata.name}")

    def on_resync() -> None:
        seen.append("resync")

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    loop = ListWatchLoop(
        client,
        Node,
        on_list=on_list,
        on_event=on_event,
        on_resync=on_resync,
        sleep=sleep,
        backoff=0.5,
        max_backoff=2.0,
    )
    client.loop = loop
    loop.run()
    return loop, seen, sleeps


def test_lists_then_watches_from_the_list_version_and_resumes() -> None:
    client = FakeClient(
        lists=[ObjectList([node("a", "10")], "10")],
        watches=[
            [WatchEvent("ADDED", node("b", "11"))],  # ends normally (server timeout)
            [WatchEvent("MODIFIED", node("a", "12"))],
        ],
    )
    _loop, seen, sleeps = run_loop(client)
    assert seen == ["list:a", "ADDED:b", "resync", "MODIFIED:a", "resync"]  # then stopped
    assert client.calls == [("list", None), ("watch", "10"), ("watch", "11"), ("watch", "12")]
    assert sleeps == []


def test_gone_lists_again_at_once() -> None:
    client = FakeClient(
        lists=[ObjectList([node("a", "10")], "10"), ObjectList([node("a", "50")], "50")],
        watches=[[Gone("too old resource version")]],
    )
    loop, _seen, sleeps = run_loop(client)
    assert client.calls[:4] == [("list", None), ("watch", "10"), ("list", None), ("watch", "50")]
    assert loop.lists == 2
    assert sleeps == []


def test_other_errors_back_off_exponentially_and_resume_without_listing() -> None:
    client = FakeClient(
        lists=[ObjectList([], "10")],
        watches=[
            [WatchEvent("ADDED", node("b", "11")), Unavailable("connection reset")],
            [Unavailable("refused")],
            [Unavailable("refused")],
            [Unavailable("refused")],
            [WatchEvent("ADDED", node("c", "12"))],
        ],
    )
    loop, seen, sleeps = run_loop(client)
    assert sleeps == [0.5, 1.0, 2.0, 2.0]  # capped at max_backoff
    assert [c for c in client.calls if c[0] == "list"] == [("list", None)]
    # Resumed from the newest version seen before the failure.
    assert client.calls[2] == ("watch", "11")
    assert "ADDED:c" in seen
    assert loop.failures == 4


def test_handler_failure_relists_after_a_pause() -> None:
    client = FakeClient(
        lists=[ObjectList([node("a", "10")], "10"), ObjectList([node("a", "20")], "20")],
        watches=[[WatchEvent("ADDED", node("boom", "11"))]],
    )
    calls = {"n": 0}

    def explode_once(event: WatchEvent[Node]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("store busy")

    loop: ListWatchLoop[Node] = ListWatchLoop(
        client, Node, on_list=lambda items: None, on_event=explode_once, sleep=lambda s: None
    )
    client.loop = loop
    loop.run()
    assert [c for c in client.calls if c[0] == "list"] == [("list", None), ("list", None)]
    assert client.calls[3] == ("watch", "20")
