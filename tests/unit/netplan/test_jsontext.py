"""The fast writer of ``plan.json`` writes exactly what ``json.dumps(indent=2)`` writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tether.netplan.render import jsontext

#: Any code point, lone surrogates included: ``json`` escapes all but printable ASCII.
TEXT = st.text(st.characters(exclude_categories=()), max_size=8)
SCALARS = st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.floats())
#: ``json.dumps`` writes a key that is not a string as one (``1``, ``true``, ``NaN``).
KEYS = st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.floats())
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(DATA)
@example({"ключ": ["é ☃ 𝄞", '"\\/', "\x00\x1f\x7f\u2028"]})
@example({"a": {}, "b": [], "c": [{}, [[]]]})
@example([1e100, -0.0, 5e-324, 10**40, -(2**64)])
@example({7: "a", True: "b", None: "c", 2.5: "d", "7": "e"})
@example([float("nan"), {"x": float("inf")}])  # not JSON: json.dumps(indent=2) itself
def test_dumps_writes_what_json_dumps_writes(data: Any) -> None:
    assert jsontext.dumps(data) == json.dumps(data, indent=2)


#: What the plan's views build: no floats.
PLAIN = st.recursive(
    st.one_of(TEXT, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(TEXT, st.integers(), st.booleans(), st.none()), inner, max_size=4
        ),
    ),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(PLAIN)
@example({"ключ": ["é ☃ 𝄞", '"\\/', "\x00\x1f\x7f\u2028", "\b\f\n\r\t", "\\u0041"]})
@example({"a": {}, "b": [], "c": [{}, [[]]], "d": [10**40, -(2**64), 2**63]})
@example({"pool": "dc1", "nodes": {"dc1-n1": "10.0.0.0/25"}, "asn": None, "ok": True})
def test_dumps_plain_writes_what_json_dumps_writes(data: Any) -> None:
    assert jsontext.dumps_plain(data) == json.dumps(data, indent=2)
