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
    elif kind is dict or kind is list:
        if not value:
            out.append("{}" if kind is dict else "[]")
            return
        inner = indent + "  "
        out.append("{" if kind is dict else "[")
        separator = f"\n{inner}"
        for key, item in value.items() if kind is dict else enumerate(value):
            out.append(separator)
            separator = f",\n{inner}"
            if kind is dict:
                if type(key) is not str:
                    raise _Unsupported
                out.append(f"{encode_basestring_ascii(key)}: ")
            _write(item, inner, out)
        out.append(f"\n{indent}{'}' if kind is dict else ']'}")
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
