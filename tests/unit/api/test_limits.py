"""Request parsing at the boundary and the audit's helpers, without a server."""

from __future__ import annotations

import json

import pytest

from tether.api.auditing import AnonymousLimiter, redact_target
from tether.api.limits import MAX_JSON_DEPTH, check_json
from tether.errors import Invalid


def deep(depth: int, key: str = "a") -> object:
    doc: object = 1
    for _ in range(depth):
        doc = {key: doc}
    return doc


def rule(body: bytes) -> tuple[str | None, str | None]:
    with pytest.raises(Invalid) as caught:
        check_json(body)
    return caught.value.field, caught.value.rule


def test_json_as_deep_as_allowed_passes_and_one_level_more_does_not() -> None:
    check_json(json.dumps(deep(MAX_JSON_DEPTH)).encode())
    assert rule(json.dumps(deep(MAX_JSON_DEPTH + 1)).encode()) == ("a", "json.depth")
    assert rule(json.dumps([deep(MAX_JSON_DEPTH)]).encode()) == ("body", "json.depth")


def test_the_depth_error_names_the_top_level_key_it_is_under() -> None:
    body = {"shallow": {"x": 1}, "document": deep(MAX_JSON_DEPTH)}
    assert rule(json.dumps(body).encode()) == ("document", "json.depth")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff", ("body", "json.utf8")),
        (b"{", ("body", "json.syntax")),
        (b'{"a": Infinity}', ("body", "json.syntax")),
        (b'{"a": -Infinity}', ("body", "json.syntax")),
        (b"[" * 50_000 + b"]" * 50_000, ("body", "json.depth")),
    ],
)
def test_bodies_that_would_fail_later_are_refused_here(
    body: bytes, expected: tuple[str, str]
) -> None:
    assert rule(body) == expected


def test_the_limiter_lets_a_burst_through_then_refills() -> None:
    now = [0.0]
    limiter = AnonymousLimiter(burst=3, per_second=1.0, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("b")  # per address
    now[0] = 1.0
    assert [limiter.allow("a") for _ in range(2)] == [True, False]
    assert limiter.drain() == {"a": 3}
    assert limiter.drain() == {}


def test_the_limiter_forgets_addresses_whose_bucket_is_full_again() -> None:
    now = [0.0]
    limiter = AnonymousLimiter(burst=2, per_second=1.0, clock=lambda: now[0])
    limiter.allow("a")
    now[0] = 10.0
    limiter.drain()
    assert limiter.buckets == {}


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/api/v1/whoami?token=abc", "/api/v1/whoami?token=REDACTED"),
        ("/api/v1/x?q=1&Access_Token=zz", "/api/v1/x?q=1&Access_Token=REDACTED"),
        ("/api/v1/x?t=tth_0123abcd_s3cr-et_x", "/api/v1/x?t=tth_REDACTED"),
        ("/api/v1/tth_0123abcd_s3cret", "/api/v1/tth_REDACTED"),
        ("/api/v1/sites?limit=2", "/api/v1/sites?limit=2"),
    ],
)
def test_targets_are_logged_without_credentials(target: str, logged: str) -> None:
    assert redact_target(target) == logged
