"""evolve: dataclasses.replace for the domain's frozen dataclasses, by copying."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from tether.domain.frozen import evolve


@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    seen: list[int] = field(default_factory=list, compare=False)


def test_the_copy_equals_what_replace_makes_and_the_original_is_untouched() -> None:
    p = Point(1, 2, ("a",))
    for changes in ({}, {"x": 5}, {"y": 7, "tags": ("b", "c")}):
        copy = evolve(p, **changes)
        assert copy == dataclasses.replace(p, **changes)
        assert copy is not p
        assert type(copy) is Point
    assert p == Point(1, 2, ("a",))


def test_the_copy_stays_frozen() -> None:
    copy = evolve(Point(1), x=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.x = 3  # type: ignore[misc]


def test_a_change_that_names_no_field_is_refused() -> None:
    with pytest.raises(TypeError, match="no field to change named z"):
        evolve(Point(1), z=3)


@dataclass(frozen=True)
class Checked:
    x: int

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x < 0")


@dataclass(frozen=True, slots=True)
class Slotted:
    x: int


@dataclass(frozen=True)
class Derived:
    x: int
    double: int = field(init=False, default=0)


class NotADataclass:
    x = 1


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (Checked(1), "__post_init__"),
        (Slotted(1), "__slots__"),
        (NotADataclass(), "not a dataclass"),
    ],
)
def test_a_class_a_copy_would_not_reproduce_is_refused(obj: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        evolve(obj, x=2)


def test_a_field_init_does_not_take_cannot_be_changed() -> None:
    with pytest.raises(TypeError, match="double"):
        evolve(Derived(1), double=2)
    assert evolve(Derived(1), x=2) == Derived(2)
