"""Activations: id + once-shown code, stored hashed, bounded expiry and usage."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta

import pytest

from tether.pki.activation import (
    MAX_ACTIVATION_LIFETIME,
    NewActivation,
    check_activation,
    hash_secret,
    is_activation_id,
    new_activation,
    new_host_token,
    parse_host_token,
    verify_code,
    verify_host_token,
    verify_secret,
)
from tether.pki.errors import (
    ActivationCodeMismatch,
    ActivationExhausted,
    ActivationExpired,
    ActivationSettingInvalid,
    InvalidActivation,
    InvalidSecretHash,
)

DAY = timedelta(days=1)


def test_new_activation(now: datetime) -> None:
    act = new_activation("site-a", 7 * DAY, 5, now)
    assert re.fullmatch(r"act-[a-z2-7]{12}", act.id)
    assert is_activation_id(act.id)
    assert act.site == "site-a"
    assert act.created_at == now
    assert act.expires_at == now + 7 * DAY
    assert act.max_registrations == 5
    # >= 128 bits of entropy, URL-safe.
    assert re.fullmatch(r"[A-Za-z0-9_-]+", act.code)
    assert len(base64.urlsafe_b64decode(act.code + "=" * (-len(act.code) % 4))) * 8 >= 128
    # The code is never shown by repr (logs), and ids/codes do not repeat.
    assert act.code not in repr(act)
    others = [new_activation("site-a", DAY, 1, now) for _ in range(20)]
    assert len({a.id for a in others}) == 20
    assert len({a.code for a in others}) == 20


def test_code_verifies_and_hash_never_contains_it(now: datetime) -> None:
    act = new_activation("site-a", DAY, 1, now)
    assert verify_code(act.code, act.code_hash) is True
    assert verify_code(act.code + "x", act.code_hash) is False
    assert verify_code("", act.code_hash) is False
    assert verify_code(act.code[:-1], act.code_hash) is False
    assert act.code not in act.code_hash
    assert act.code.encode().hex() not in act.code_hash
    assert act.code_hash.startswith("pbkdf2-sha256$10000$")


def test_same_code_hashes_differently() -> None:
    first, second = hash_secret("same-code"), hash_secret("same-code")
    assert first != second
    assert verify_secret("same-code", first)
    assert verify_secret("same-code", second)


@pytest.mark.parametrize(
    "expires_in",
    [timedelta(0), -DAY, MAX_ACTIVATION_LIFETIME + timedelta(seconds=1), 31 * DAY],
)
def test_expiry_bounds(now: datetime, expires_in: timedelta) -> None:
    with pytest.raises(ActivationSettingInvalid, match=r"^expiresIn: ") as err:
        new_activation("site-a", expires_in, 1, now)
    assert err.value.field == "expiresIn"
    assert err.value.details["field"] == "expiresIn"
    assert err.value.rule == "pki.activation.setting"
    assert isinstance(err.value, InvalidActivation)


def test_expiry_edges_accepted(now: datetime) -> None:
    assert new_activation("s", 30 * DAY, 1, now).expires_at == now + 30 * DAY
    new_activation("s", timedelta(seconds=1), 1, now)


@pytest.mark.parametrize("count", [0, -1, 10_001, True])
def test_max_registrations_bounds(now: datetime, count: int) -> None:
    with pytest.raises(ActivationSettingInvalid, match=r"^maxRegistrations: ") as err:
        new_activation("site-a", DAY, count, now)
    assert err.value.field == "maxRegistrations"


@pytest.mark.parametrize("count", [1, 10_000])
def test_max_registrations_edges(now: datetime, count: int) -> None:
    assert new_activation("site-a", DAY, count, now).max_registrations == count


def test_site_required(now: datetime) -> None:
    with pytest.raises(ActivationSettingInvalid) as err:
        new_activation("  ", DAY, 1, now)
    assert err.value.field == "site"


def _check(act: NewActivation, code: str, registrations: int, at: datetime) -> None:
    check_activation(
        code,
        code_hash=act.code_hash,
        expires_at=act.expires_at,
        max_registrations=act.max_registrations,
        registrations=registrations,
        now=at,
    )


def test_check_activation(now: datetime) -> None:
    act = new_activation("site-a", DAY, 2, now)
    _check(act, act.code, 0, now)
    _check(act, act.code, 1, now + DAY - timedelta(seconds=1))
    with pytest.raises(ActivationExpired) as e1:
        _check(act, act.code, 0, now + DAY)
    assert e1.value.rule == "pki.activation.expired"
    with pytest.raises(ActivationExhausted) as e2:
        _check(act, act.code, 2, now)
    assert e2.value.rule == "pki.activation.exhausted"
    # A wrong code is reported as such even when the activation is expired and used up:
    # its state is not revealed to someone without the code.
    with pytest.raises(ActivationCodeMismatch) as e3:
        _check(act, "wrong", 5, now + 9 * DAY)
    assert e3.value.rule == "pki.activation.code"


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "md5$1$c2FsdA$ZGlnZXN0",
        "pbkdf2-sha256$x$c2FsdA$ZGlnZXN0",
        "pbkdf2-sha256$0$c2FsdA$ZGlnZXN0",
        "pbkdf2-sha256$99999999$c2FsdA$ZGlnZXN0",
        "pbkdf2-sha256$10$c2FsdA$ZGlnZXN0",  # digest too short
        "pbkdf2-sha256$10$$" + "A" * 43,
    ],
)
def test_malformed_stored_hash_raises(stored: str) -> None:
    with pytest.raises(InvalidSecretHash) as err:
        verify_secret("code", stored)
    assert err.value.rule == "pki.secret.hash_invalid"


def test_host_tokens() -> None:
    issued = new_host_token()
    assert issued.token.startswith("tht_")
    assert parse_host_token(issued.token) == issued.token_id
    assert verify_host_token(issued.token, issued.token_hash)
    assert issued.token not in repr(issued)
    assert issued.token not in issued.token_hash
    other = new_host_token()
    assert not verify_host_token(other.token, issued.token_hash)
    assert not verify_host_token("tht_garbage", issued.token_hash)
    assert parse_host_token("nope") is None
    assert issued.token_hash.startswith("pbkdf2-sha256$1000$")
