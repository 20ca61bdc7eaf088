"""The events a plan records are checked as EventSpec checks them, most without building it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tether.domain.models import EventSpec, EventType, ObjectKind
from tether.services.events import _checked

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["", " ", "a", " padded ", "tab\t", "\x1fx\x1f", "\u00a0nbsp", "x\u2028", "Ünïcode"]
)
_REASONS = st.sampled_from(
    ["Cordoned", "A", "a", "Bad Reason", "X" * 128, "X" * 129, " Ok", "Ok\n"]
)


def _spec_key(
    kind: ObjectKind | str, name: str, reason: str, message: str, type_: EventType | str
) -> tuple[str, str, str, str, str] | None:
    try:
        spec = EventSpec(
            object_kind=kind, object_name=name, type=type_, reason=reason, message=message
        )
    except ValidationError:
        return None
    return (spec.object_kind.value, spec.object_name, spec.type.value, spec.reason, spec.message)


@given(
    kind=st.sampled_from(list(ObjectKind)) | st.just("Host"),
    name=_TEXT,
    reason=_REASONS | _TEXT,
    message=_TEXT | st.text(min_size=4090, max_size=4100),
    type_=st.sampled_from(list(EventType)) | st.just("Warning"),
)
def test_a_note_is_stored_as_the_model_would_store_it_or_refused_alike(
    kind: ObjectKind | str, name: str, reason: str, message: str, type_: EventType | str
) -> None:
    want = _spec_key(kind, name, reason, message, type_)
    note = (kind, name, reason, message, type_)
    if want is None:
        with pytest.raises(ValidationError):
            _checked(note)  # type: ignore[arg-type]
    else:
        assert _checked(note) == want  # type: ignore[arg-type]


def test_a_plain_note_is_taken_as_it_is() -> None:
    note = (ObjectKind.HOST, "h-1", "Cordoned", "node h-1 cordoned", EventType.NORMAL)
    assert _checked(note) == ("Host", "h-1", "Normal", "Cordoned", "node h-1 cordoned")
