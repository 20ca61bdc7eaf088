"""Activations (id + one-time-shown code) and the secret hashing they share with host tokens.

An activation is what an operator hands a host so it can enrol once: a short public id
(``act-`` + 12 base32 characters, used to look the record up) and a code with 160 bits of
entropy (URL-safe base64) that is printed once and stored only as a hash.

Hashing choice: **PBKDF2-HMAC-SHA256 with a random 16-byte salt per secret**, stored as
``pbkdf2-sha256$<iterations>$<salt>$<digest>``, compared with :func:`hmac.compare_digest`.

* The secrets are random with >= 128 bits of entropy, so offline guessing from a leaked
  hash is infeasible whatever the work factor; key stretching is not what protects them
  (NIST SP 800-63B asks for a costly KDF only for low-entropy secrets). The iteration
  count is therefore modest: 10,000 for activation codes (about 5 ms, checked once per
  enrolment) and 1,000 for host API tokens (checked per request). It is recorded in each
  hash, so it can be raised later without a migration.
* A per-secret salt makes equal secrets hash differently and defeats precomputation,
  with no server-side key to manage; a pepper (HMAC key) would need key storage and
  rotation the plane otherwise does not have, for no real gain with unguessable secrets.
* PBKDF2 over scrypt: it is in the standard library, FIPS-approved, and has no memory
  cost an unauthenticated enrolment endpoint could be made to pay over and over.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tether.pki.authority import aware_utc
from tether.pki.errors import (
    ActivationCodeMismatch,
    ActivationExhausted,
    ActivationExpired,
    ActivationSettingInvalid,
    InvalidSecretHash,
)

ACTIVATION_ID_PREFIX = "act-"
ACTIVATION_ID_RE = re.compile(r"act-[a-z2-7]{12}")
#: Longest an activation may stay usable.
MAX_ACTIVATION_LIFETIME = timedelta(days=30)
MIN_REGISTRATIONS = 1
MAX_REGISTRATIONS = 10_000
#: Random bytes in an activation code (160 bits; 27 URL-safe characters).
CODE_BYTES = 20

HASH_SCHEME = "pbkdf2-sha256"
ACTIVATION_HASH_ITERATIONS = 10_000
TOKEN_HASH_ITERATIONS = 1_000
#: Refuse stored hashes claiming more work than this, so a tampered record cannot be
#: used to burn CPU.
MAX_HASH_ITERATIONS = 1_000_000
_SALT_BYTES = 16

HOST_TOKEN_PREFIX = "tht_"  # noqa: S105 - a public prefix, not a secret
_TOKEN_RE = re.compile(r"tht_([a-z2-7]{12})\.([A-Za-z0-9_-]{43})")


# --- secret hashing ----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, iterations: int = ACTIVATION_HASH_ITERATIONS) -> str:
    """Salted PBKDF2-HMAC-SHA256 of ``secret`` in a self-describing string."""
    if not 1 <= iterations <= MAX_HASH_ITERATIONS:
        raise ValueError(f"iterations must be 1..{MAX_HASH_ITERATIONS}, got {iterations}")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored_hash: str) -> bool:
    """Constant-time check of ``secret`` against :func:`hash_secret` output.

    Returns ``False`` for a wrong secret; raises :class:`InvalidSecretHash` if the stored
    hash itself is malformed (that is a storage bug, not a wrong guess).
    """
    parts = stored_hash.split("$")
    try:
        scheme, iter_text, salt_text, digest_text = parts
        iterations = int(iter_text)
        salt, expected = _unb64(salt_text), _unb64(digest_text)
    except (ValueError, binascii.Error) as exc:
        raise InvalidSecretHash("stored secret hash is malformed") from exc
    if scheme != HASH_SCHEME or not 1 <= iterations <= MAX_HASH_ITERATIONS or not salt:
        raise InvalidSecretHash(f"stored secret hash uses an unsupported scheme {scheme!r}")
    if len(expected) != hashlib.sha256().digest_size:
        raise InvalidSecretHash("stored secret hash has a digest of the wrong length")
    actual = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)


# --- activations -------------------------------------------------------------------------


def _new_id() -> str:
    # 60 random bits: ids are looked up, not guessed against, but should not collide.
    return ACTIVATION_ID_PREFIX + base64.b32encode(secrets.token_bytes(8)).decode()[:12].lower()


@dataclass(frozen=True)
class NewActivation:
    """A freshly created activation. Show ``code`` to the operator once; store the rest."""

    id: str
    code: str = field(repr=False)
    code_hash: str
    site: str
    created_at: datetime
    expires_at: datetime
    max_registrations: int


def validate_activation_settings(expires_in: timedelta, max_registrations: int) -> None:
    """Raise :class:`ActivationSettingInvalid` (naming the field) for out-of-bounds settings."""
    if expires_in <= timedelta(0):
        raise ActivationSettingInvalid(
            "expiresIn", f"must be positive, got {expires_in}", value=expires_in
        )
    if expires_in > MAX_ACTIVATION_LIFETIME:
        raise ActivationSettingInvalid(
            "expiresIn",
            f"must be at most {MAX_ACTIVATION_LIFETIME.days} days, got {expires_in}",
            value=expires_in,
        )
    if isinstance(max_registrations, bool) or not isinstance(max_registrations, int):
        raise ActivationSettingInvalid(
            "maxRegistrations", f"must be an integer, got {max_registrations!r}"
        )
    if not MIN_REGISTRATIONS <= max_registrations <= MAX_REGISTRATIONS:
        raise ActivationSettingInvalid(
            "maxRegistrations",
            f"must be {MIN_REGISTRATIONS}..{MAX_REGISTRATIONS}, got {max_registrations}",
            value=max_registrations,
        )


def new_activation(
    site: str, expires_in: timedelta, max_registrations: int, now: datetime
) -> NewActivation:
    """Create an activation for ``site`` usable for ``expires_in`` (<= 30 days) and
    ``max_registrations`` (1..10000) enrolments."""
    now = aware_utc(now)
    if not isinstance(site, str) or not site.strip():
        raise ActivationSettingInvalid("site", "must name a site")
    validate_activation_settings(expires_in, max_registrations)
    code = secrets.token_urlsafe(CODE_BYTES)
    return NewActivation(
        id=_new_id(),
        code=code,
        code_hash=hash_secret(code, iterations=ACTIVATION_HASH_ITERATIONS),
        site=site,
        created_at=now,
        expires_at=now + expires_in,
        max_registrations=max_registrations,
    )


def is_activation_id(value: str) -> bool:
    return ACTIVATION_ID_RE.fullmatch(value) is not None


def verify_code(code: str, stored_hash: str) -> bool:
    """Constant-time check of an activation code against its stored hash."""
    return verify_secret(code, stored_hash)


def check_activation(
    code: str,
    *,
    code_hash: str,
    expires_at: datetime,
    max_registrations: int,
    registrations: int,
    now: datetime,
) -> None:
    """Raise unless ``code`` may enrol one more host now.

    The code is checked first so that someone holding only the id learns nothing about
    the activation's state. ``registrations`` is the count *before* this enrolment; the
    store increments it atomically with the enrolment.
    """
    now = aware_utc(now)
    if not verify_code(code, code_hash):
        raise ActivationCodeMismatch("activation code does not match")
    if now >= aware_utc(expires_at, "expires_at"):
        raise ActivationExpired(
            f"activation expired at {aware_utc(expires_at).isoformat()}; ask for a new one",
            expires_at=expires_at,
        )
    if registrations >= max_registrations:
        raise ActivationExhausted(
            f"activation already used for {registrations} of {max_registrations} registrations",
            registrations=registrations,
            max_registrations=max_registrations,
        )


# --- host API tokens (same mechanism) ----------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    """A host API token: give ``token`` to the host once; store ``token_id`` + ``token_hash``.

    The token is ``tht_<token_id>.<secret>``; the id lets the server find the record (a
    salted hash cannot be searched), the hash covers the whole token.
    """

    token_id: str
    token: str = field(repr=False)
    token_hash: str


def new_host_token() -> IssuedToken:
    token_id = base64.b32encode(secrets.token_bytes(8)).decode()[:12].lower()
    token = f"{HOST_TOKEN_PREFIX}{token_id}.{secrets.token_urlsafe(32)}"
    return IssuedToken(
        token_id=token_id,
        token=token,
        token_hash=hash_secret(token, iterations=TOKEN_HASH_ITERATIONS),
    )


def parse_host_token(token: str) -> str | None:
    """The token id of a well-formed host token (to look its hash up), else ``None``."""
    match = _TOKEN_RE.fullmatch(token)
    return match.group(1) if match else None


def verify_host_token(token: str, stored_hash: str) -> bool:
    return parse_host_token(token) is not None and verify_secret(token, stored_hash)
