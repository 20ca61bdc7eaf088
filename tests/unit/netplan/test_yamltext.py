"""The fast YAML writer of the generated manifests writes exactly what PyYAML writes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from yaml.resolver import Resolver

from tether.netplan.render import yamltext


def pyyaml(data: Any) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False, width=4096)


#: Strings near the edges of plain style: YAML 1.1 booleans, numbers, null, timestamps,
#: indicators first or after a space, quotes, a trailing space, non-ASCII, line breaks.
TRICKY = st.sampled_from(
    [
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "null",
        "~",
        "",
        "0x1f",
        "0o17",
        "1_000",
        "1e3",
        "1.5",
        ".inf",
        "1:20",
        "2026-12-01",
        "2026-12-01 17:35:00",
        "<<",
        "=",
        "-",
        "- a",
        "a: b",
        "a:b",
        "a #b",
        "a#b",
        "#a",
        "&a",
        "*a",
        "!a",
        "|a",
        ">a",
        "%a",
        "@a",
        "`a",
        "'a'",
        '"a"',
        "a'b",
        "{a}",
        "a {b}",
        "[a]",
        "a, b",
        "a ",
        " a",
        "a  b",
        "é",
        "a\nb",
        "a\tb",
        "10.80.1.0/24",
        "tether.io/compute-type == 'hybrid' && x in { 'a', 'b' }",
        "x" * 600,
        "--- a",
        "... a",
        "?a",
        "? a",
    ]
)
TEXT = st.one_of(TRICKY, st.text(alphabet="ab1.-_/ :#'\"{},&=\n", max_size=12))
SCALARS = st.one_of(TEXT, st.integers(), st.booleans(), st.none())
#: PyYAML writes a key that is not a string as its scalar (``1: a``, ``null: b``).
KEYS = st.one_of(TEXT, st.integers(), st.booleans(), st.none())
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.dictionaries(KEYS, DATA, max_size=5), st.lists(DATA, max_size=5)))
def test_dump_writes_what_pyyaml_writes(data: Any) -> None:
    assert yamltext.dump(data) == pyyaml(data)


@settings(max_examples=600, deadline=None)
@given(st.one_of(TRICKY, st.text(alphabet="yYnNtTfFoO0123456789.:-+_eExX~", min_size=1)))
def test_plain_strings_resolve_as_pyyamls_resolver_says(value: str) -> None:
    """The resolver's table, as :mod:`yamltext` reads it, types a plain scalar as the
    resolver itself does (the strings cover every pattern's first characters)."""
    resolved = Resolver().resolve(yaml.ScalarNode, value, (True, False))
    if value:
        assert yamltext._plain_is_str(value) == (resolved == "tag:yaml.org,2002:str")


def test_shared_objects_and_other_types_go_to_pyyaml() -> None:
    shared: list[Any] = []
    assert "&id001" in yamltext.dump({"a": shared, "b": shared})
    assert yamltext.dump({"a": shared, "b": shared}) == pyyaml({"a": shared, "b": shared})
    assert yamltext.dump({"f": 1.5, "s": "x" * 5000}) == pyyaml({"f": 1.5, "s": "x" * 5000})
    assert yamltext.dump("bare") == pyyaml("bare")


def test_a_manifest_is_written_without_pyyaml(monkeypatch: Any) -> None:
    """The fast path is taken for what the renderers build (not PyYAML behind it)."""
    calls: list[Any] = []
    monkeypatch.setattr(yamltext, "_pyyaml", lambda data: calls.append(data) or "")
    text = yamltext.dump(
        {
            "apiVersion": "cilium.io/v2",
            "metadata": {"name": "tether-dc1", "labels": {"tether.io/pool": "dc1"}},
            "spec": {"nodeSelector": {"matchExpressions": [{"values": ["dc1-n1", "dc1-n2"]}]}},
            "peers": [{"peerASN": 64513, "enabled": True, "asn": None}],
        }
    )
    assert calls == []
    assert text == pyyaml(yaml.safe_load(text))


@settings(max_examples=600, deadline=None)
@given(SCALARS)
def test_a_scalar_is_written_as_pyyaml_writes_it_after_a_key_or_a_dash(value: Any) -> None:
    try:
        text = yamltext.scalar(value)
    except ValueError:  # PyYAML folds it, or breaks it over lines
        assert "\n" in pyyaml({"k": value})[:-1] or len(pyyaml({"k": value})) > 1000
        return
    assert pyyaml({"k": value}) == f"k: {text}\n"
    assert pyyaml([value]) == f"- {text}\n"


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.ip_addresses(v=4),
        st.builds(
            lambda address, length: IPv4Network((address, length), strict=False),
            st.ip_addresses(v=4),
            st.integers(0, 32),
        ),
    )
)
def test_an_address_or_network_is_written_plain_as_pyyaml_writes_it(
    value: IPv4Address | IPv4Network,
) -> None:
    text = yamltext.address(value)
    assert text == str(value) == yamltext.scalar(str(value))
    assert pyyaml({"k": str(value)}) == f"k: {text}\n"


def test_a_block_sequence_is_written_as_pyyaml_writes_it() -> None:
    """Empty, of scalars, of mappings, and inside an item of another one."""
    q = yamltext.scalar
    assert yamltext.block_sequence("none", []) == pyyaml({"none": []})
    assert yamltext.block_sequence("names", [f"{q('yes')}\n", f"{q('dc1')}\n"]) == pyyaml(
        {"names": ["yes", "dc1"]}
    )
    inner = yamltext.block_sequence("routes", [f"{q('10.0.0.0/8')}\n"], "  ")
    outer = [f"name: {q('null')}\n{inner}", f"name: {q('b')}\n  id: {q(7)}\n"]
    assert yamltext.block_sequence("pools", outer) == pyyaml(
        {"pools": [{"name": "null", "routes": ["10.0.0.0/8"]}, {"name": "b", "id": 7}]}
    )
