"""``parse_yaml_or_json`` reads YAML exactly as ``yaml.load(..., CSafeLoader)`` does.

Plain documents are built straight from libyaml's events (``files._load_plain_yaml``);
everything else goes to ``CSafeLoader``. Both paths must give the same value, or the
same error, for any text."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import files
from tether.files import parse_yaml_or_json

pytestmark = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


def reference(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def same(a: Any, b: Any) -> bool:
    """Equal, type for type (``1 == 1.0 == True`` in Python), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):  # keys too, type for type: {True: 1} is not {1: 1}
        return same(list(a), list(b)) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def outcome(load: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", load(text)
    except yaml.YAMLError as error:
        return "error", f"{type(error).__name__}: {error}"
    except ValueError as error:  # a timestamp the resolver accepts and datetime does not
        return "error", f"{type(error).__name__}: {error}"


def assert_same(text: str) -> None:
    """The text as YAML: a comment first, so that JSON is not read as JSON (by design)."""
    text = f"# YAML\n{text}"
    ours, theirs = outcome(parse_yaml_or_json, text), outcome(reference, text)
    assert ours[0] == theirs[0], (text, ours, theirs)
    if ours[0] == "error":
        assert ours == theirs
    else:
        assert same(ours[1], theirs[1]), (text, ours[1], theirs[1])


#: Plain scalars near YAML 1.1's edges: every implicit type, and strings that look like one.
PLAIN = [
    "yes", "No", "ON", "off", "y", "n", "true", "False", "null", "Null", "~", "",
    "0", "-0", "+12", "0x1f", "0o17", "017", "0b101", "1_000", "190:20:30", "1:20",
    "1e3", "1.5e3", "-1.5", ".5", "1.", ".inf", "-.Inf", ".NaN", "1_0.5", "6.8523015e+5",
    "2026-12-01", "2026-12-01 17:35:00", "2026-12-01T17:35:00.5Z", "2001-12-14t21:59:43.10-05:00",
    "2026-13-45", "2026-1-1", "10.0.0.0/24", "10.0.0.1", "198.18.0.1", "pool-1", "a b",
    "-", "=", "<<", "é", "0.0.0.0/0", "64512", "4294967295", "1.2.3",
]  # fmt: skip


def test_the_implicit_types_of_plain_scalars_are_pyyamls() -> None:
    for token in PLAIN:
        for text in (f"key: {token}\n", f"- {token}\n", f"{token or '~'}: value\n"):
            assert_same(text)


def test_a_network_document_is_built_from_events_not_by_pyyaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = (
        "apiVersion: tether.io/v1alpha1\nkind: HybridNetwork\nspec:\n  pools:\n"
        "  - name: dc1\n    nodeCIDR: 10.1.0.0/24\n    podCIDRMaskPerNode: 25\n"
        "    vpnServer: {publicIP: 198.18.0.1, isMainRouter: yes}\n    nodes: []\n"
        "    note: 'quoted: 25'\n    text: |\n      two\n      lines\n"
    )
    expected = reference(text)
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("fell back to yaml.load"))
    assert same(parse_yaml_or_json(text), expected)
    assert expected["spec"]["pools"][0]["vpnServer"]["isMainRouter"] is True


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {b: 1}\nc: *x\n",  # an anchor and an alias: one shared object
        "a: &x 1\nb: &x 2\n",  # anchors without aliases, one repeated: PyYAML's error
        "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",  # a merge key
        "a:\n  <<: {x: 1}\n  y: 2\n",  # a merge key without an alias
        "a: !!str 12\nb: !!float '1'\n",  # tags
        "a: !!binary aGVsbG8=\n",
        "!!set {a, b}\n",
        "--- !!map\n",
        "? [a, b]\n: c\n",  # a key that is a sequence: unhashable, PyYAML's error
        "? {a: 1}\n: c\n",
        "=: x\n",  # the value key
        "--- 1\n--- 2\n",  # two documents: PyYAML's error
        "a: [1, 2\n",  # a syntax error
        "a: b: c\n",
        "a:\n\t- x\n",
        # A plain scalar its constructor refuses, before an error PyYAML finds first (it
        # parses the whole stream before it constructs anything) or before another one.
        "[2026-13-45",
        "- 0b_\n- ]\n",
        "a: 2026-13-45\nb: *y\n",
        "a: 2026-13-45\n--- 2\n",
        "a: 0b_\nb: &x 1\nc: &x 2\n",
        "? - 2026-13-45",
        "a: {b: 2026-13-01}\nc: 2026-01-45\n",
        "a: [0b_]\nc: 0x_\n",
        "a: " + "1" * 5000 + "\nb: [\n",  # an int longer than Python converts
        "a: 2026-13-45\n",  # valid YAML, no valid date: the same ValueError either way
    ],
)
def test_what_the_fast_path_leaves_to_pyyaml_reads_as_pyyaml_reads_it(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[str] = []
    real = yaml.load

    def load(stream: str, Loader: Any) -> Any:
        handed.append(stream)
        return real(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", load)
    assert_same(text)
    assert len(handed) == 2, "the fast path read it itself"  # ours, then the reference


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "---\n", "a: 1\na: 2\n", "\ufeffa: 1\n", "a: 'x: y'\n"],
)
def test_the_edges_the_fast_path_reads_itself_read_as_pyyaml_reads_them(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = parse_yaml_or_json(f"# YAML\n{text}")
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("fell back to yaml.load"))
    assert same(parse_yaml_or_json(f"# YAML\n{text}"), ours)
    monkeypatch.undo()
    assert_same(text)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from(PLAIN),
    st.text(max_size=12),
    st.dates(),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(max_size=6), st.integers(), st.booleans()), inner, max_size=4
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(data=DATA, flow=st.sampled_from([None, False, True]), width=st.sampled_from([20, 80]))
def test_any_dumped_data_reads_back_as_pyyaml_reads_it(
    data: Any, flow: bool | None, width: int
) -> None:
    assert_same(yaml.safe_dump(data, default_flow_style=flow, width=width, allow_unicode=True))


#: Hand-written YAML: plain tokens (typed or not), indicators and layout, so the text is
#: often not what a dumper writes and sometimes not YAML at all.
TOKENS = st.sampled_from(
    [*PLAIN, "'q'", '"d\\n"', "[", "]", "{", "}", ",", ": ", "- ", "\n", "  ", "#c"]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(TOKENS, max_size=20))
def test_any_text_reads_as_pyyaml_reads_it(tokens: list[str]) -> None:
    assert_same("".join(tokens))


def test_without_libyaml_the_pure_python_loader_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    monkeypatch.setattr(files, "_load_plain_yaml", lambda text: pytest.fail("used libyaml"))
    assert parse_yaml_or_json("a: [1, yes, x]\n") == {"a": [1, True, "x"]}


TOO_DEEP = pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # JSON too deep for Python's stack
        "a: " + "[" * 100_000 + "]" * 100_000,
        "a: &x 1\nb: " + "{c: " * 100_000 + "1" + "}" * 100_000,  # handed over first
        "a: !!str x\nb: " + "[" * 100_000,  # and unclosed
        # A second document: CSafeLoader refuses it before reading it, and where libyaml
        # has no limit of its own the depth check comes first.
        "- 1\n--- " + "[" * 100_000 + "]" * 100_000,
    ],
    ids=["json", "yaml", "anchor-first", "tag-first-unclosed", "second-document"],
)


@TOO_DEEP
def test_a_document_nested_too_deep_is_a_parse_error_not_a_crash(text: str) -> None:
    """libyaml 0.2.5 (PyYAML 6.0's) has no depth limit and CSafeLoader recurses in C:
    such a document crashed the process. Newer libyaml refuses it itself; either way
    it is a YAML error naming the nesting depth."""
    with pytest.raises(yaml.YAMLError, match=r"nesting depth|single document"):
        parse_yaml_or_json(text)


@TOO_DEEP
def test_without_libyaml_too_deep_is_a_parse_error_too(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """PyYAML's pure-Python composer recurses in Python: a RecursionError, not a YAML
    error, escaped to the caller."""
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    with pytest.raises(yaml.YAMLError, match=r"nesting depth|single document"):
        parse_yaml_or_json(text)


def test_a_document_nested_as_deep_as_allowed_reads() -> None:
    depth = files.YAML_MAX_DEPTH - 1  # under the mapping of the document itself
    value = parse_yaml_or_json("a: " + "[" * depth + "]" * depth + "\n")
    for _ in range(depth):
        value = value["a"] if isinstance(value, dict) else value[0]
    assert value == []
