"""The Model base refuses booleans as numbers and integers beyond 64 bits, by field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError

from tether.domain.base import INT64_MAX, INT64_MIN, Model


class Inner(Model):
    count: int = 0


class Sample(Model):
    size: int = 0
    ratio: float | None = None
    either: str | int = "x"
    flag: bool = False
    maybe_flag: bool | int = 0
    inner: Inner = Field(default_factory=Inner)


def errors(data: dict[str, object]) -> list[tuple[tuple[object, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate(data)
    return [(e["loc"], e["type"]) for e in caught.value.errors()]


@pytest.mark.parametrize("field", ["size", "ratio", "either"])
def test_a_boolean_is_not_a_number(field: str) -> None:
    assert errors({field: True}) == [((field,), "bool_not_number")]


def test_the_error_names_the_nested_field() -> None:
    assert errors({"inner": {"count": False}}) == [(("inner", "count"), "bool_not_number")]


def test_fields_that_take_booleans_still_do() -> None:
    sample = Sample.model_validate({"flag": True, "maybeFlag": True})
    assert sample.flag is True and sample.maybe_flag is True


@settings(deadline=None)  # a loaded CI machine is no reason to fail
@given(st.integers(INT64_MAX + 1) | st.integers(max_value=INT64_MIN - 1))
def test_integers_beyond_64_bits_are_refused(number: int) -> None:
    assert errors({"size": number}) == [(("size",), "int64_range")]


@settings(deadline=None)
@given(st.integers(INT64_MIN, INT64_MAX))
def test_integers_within_64_bits_are_kept(number: int) -> None:
    assert Sample.model_validate({"size": number}).size == number
