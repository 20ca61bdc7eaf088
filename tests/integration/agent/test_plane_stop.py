"""A plane that stops (Ctrl-C, SIGTERM) ends open event streams and agents' long polls
itself, instead of waiting for uvicorn to cancel them with a traceback each."""

from __future__ import annotations

import threading

import httpx
import pytest

from .conftest import Plane, ready

pytestmark = pytest.mark.integration


def test_stopping_ends_event_streams_and_long_polls_without_errors(plane: Plane) -> None:
    plane.settings.agent.long_poll_seconds = 600  # longer than the shutdown grace period
    config = plane.agent_config("edge-stop", plane.activation(), longPollSeconds=600)
    plane.start_agent(config)
    ready(plane, "edge-stop")
    opened = threading.Event()
    ended: list[str] = []

    def watch_events() -> None:
        with (
            httpx.Client(base_url=plane.server.api_url, headers=plane.admin, timeout=60) as api,
            api.stream("GET", "/api/v1/events/stream") as stream,
        ):
            for line in stream.iter_lines():
                if line.startswith(": stream open"):
                    opened.set()
            ended.append("eof")

    watcher = threading.Thread(target=watch_events, daemon=True)
    watcher.start()
    assert opened.wait(30), "the event stream did not open"
    plane.server.stop()
    watcher.join(30)
    assert ended == ["eof"]  # the stream was ended by the plane, cleanly
    logged = "\n".join(plane.capture.lines)  # type: ignore[attr-defined]
    assert "timeout graceful shutdown exceeded" not in logged
    assert "Exception in ASGI application" not in logged
    assert "Traceback" not in logged
