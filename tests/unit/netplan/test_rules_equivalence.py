"""The checker gives the same findings, in the same order, and the same parsed view as
it did before its pools' and nodes' rules compared addresses as integers
(``rules_before.py``, the checker at 312cbca), on random documents with random rules
broken."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tether.netplan import load_document, member_keys, stand_in_document
from tether.netplan.rules import check_document

from . import rules_before
from .test_properties import SETTINGS, Doc, documents

Mutate = Callable[[Doc, Any], bool]


@SETTINGS
@given(data=documents(), draw=st.data())
def test_findings_and_view_are_those_of_the_checker_before(
    data: Doc, draw: st.DataObject, mutations: tuple[Any, ...], mutate: Mutate
) -> None:
    chosen = draw.draw(st.lists(st.sampled_from(mutations), max_size=4))
    # Schema mutations last: the others expect the types of a valid document.
    for mutation in sorted(chosen, key=lambda m: m.rule == "schema"):
        # A mutation that does not apply to what an earlier one left is skipped.
        with suppress(KeyError, IndexError, TypeError, ValueError):
            mutate(data, mutation)
    doc = load_document(data)[0] or stand_in_document(data)
    if doc is None:
        return
    resolved, findings = check_document(doc)
    resolved_before, findings_before = rules_before.check_document(doc)
    assert [f.as_dict() for f in findings] == [f.as_dict() for f in findings_before]
    assert resolved == resolved_before


@given(st.lists(st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["a", "b", "1", "A"]))))
def test_member_keys_are_those_before(names: list[object]) -> None:
    assert member_keys(names) == rules_before.member_keys(names)
