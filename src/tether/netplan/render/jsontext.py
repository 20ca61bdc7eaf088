"""Indented JSON text for ``plan.json``, exactly as ``json.dumps(data, indent=2)`` writes it.

With ``indent`` the standard library encodes in Python through layers of generators; a
10,000-pool ``plan.json`` (a million values) took over a second. :func:`dumps` writes
the same text with one recursive function and the C string encoder. Data it does not
write itself (a float, a key that is not a string) goes to ``json.dumps``.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any


class _Unsupported(Exception):
    pass


def _write(value: Any, indent: str, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(encode_basestring_ascii(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is dict:
        if not value:
            out.append("{}")
            return
        inner = indent + "  "
        out.append("{")
        first = True
        for key, item in value.items():
            if type(key) is not str:
                raise _Unsupported
            out.append(
                f"\n{inner}{encode_basestring_ascii(key)}: "
                if first
                else f",\n{inner}{encode_basestring_ascii(key)}: "
            )
            first = False
            _write(item, inner, out)
        out.append(f"\n{indent}}}")
    elif kind is list:
        if not value:
            out.append("[]")
            return
        inner = indent + "  "
        out.append("[")
        first = True
        for item in value:
            out.append(f"\n{inner}" if first else f",\n{inner}")
            first = False
            _write(item, inner, out)
        out.append(f"\n{indent}]")
    else:
        raise _Unsupported


def dumps(data: Any) -> str:
    """``json.dumps(data, indent=2)``, fast for dicts, lists, strings, ints, booleans and
    ``None`` (no cycles: the planner's data has none)."""
    out: list[str] = []
    try:
        _write(data, "", out)
    except _Unsupported:
        return json.dumps(data, indent=2)
    return "".join(out)
