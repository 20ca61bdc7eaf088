"""YAML text for generated manifests, byte for byte what PyYAML writes, but fast.

A 10,000-pool plan is some 30,000 small YAML documents and two with 20,000 entries.
PyYAML's representer is pure Python even with libyaml's emitter, and it slows down on
big documents (the VPC route table alone took 4.7 s). :func:`dump` writes the block
style PyYAML writes for the data the renderers build (dicts, lists, strings, integers,
booleans, ``None``) directly. Each string PyYAML would leave plain is written as it is,
any other through PyYAML itself (so quoting stays PyYAML's), and anything this writer
does not know how to write exactly (another type, a shared object that PyYAML would
write as an alias, a long or multi-line string) sends the whole document to PyYAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.resolver import Resolver

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_STR_TAG = "tag:yaml.org,2002:str"
#: Keys longer than this are "complex" keys in PyYAML (``? key``).
_MAX_KEY = 120
_RESOLVER = Resolver()
#: Strings PyYAML writes plain in block context unless they resolve to another type
#: (``yes``, ``0x1f``, ``null``): no indicator first, no ``: `` or `` #``, no ``:`` or
#: space last, printable ASCII. Longer ones could be folded at the line width.
_MAYBE_PLAIN = re.compile(r"(?!.*(?:: | #))[A-Za-z0-9][A-Za-z0-9._/=&,'{}()#: -]{0,499}(?<![ :])\Z")


class _Unsupported(Exception):
    """The data has something :func:`dump` does not write itself; PyYAML must."""


def _pyyaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)


#: How each string is written, for the keys and values that repeat across documents;
#: emptied when full, so a long-running plane does not grow it without bound.
_TEXT: dict[str, str] = {}
_TEXT_MAX = 100_000


def _string(value: str) -> str:
    text = _TEXT.get(value)
    if text is not None:
        return text
    if _MAYBE_PLAIN.match(value) and (
        _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG  # type: ignore[no-untyped-call]
    ):
        text = value
    else:  # quoted: let PyYAML choose how, as the value of a mapping
        line = _pyyaml({"k": value})
        if len(line) > 1000 or line.count("\n") != 1:
            raise _Unsupported  # folded or multi-line: depends on where it stands
        text = line[3:-1]
    if len(_TEXT) >= _TEXT_MAX:
        _TEXT.clear()
    _TEXT[value] = text
    return text


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return _string(value)
    raise _Unsupported


class _Writer:
    """PyYAML's block style: mappings indented by 2, sequences in mappings not indented."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[int] = set()

    def _collection(self, value: Any) -> bool:
        """Whether ``value`` is written as a block (a non-empty dict or list)."""
        kind = type(value)
        if kind is not dict and kind is not list:
            return False
        if id(value) in self.seen:
            raise _Unsupported  # PyYAML writes an anchor and an alias
        self.seen.add(id(value))
        return bool(value)

    def _inline(self, value: Any) -> str:
        """An empty collection or a scalar, after ``key: `` or ``- ``."""
        if type(value) is dict:
            return "{}"
        if type(value) is list:
            return "[]"
        return _scalar(value)

    def mapping(self, data: dict[Any, Any], indent: int, first: str) -> None:
        prefix = first
        for key, value in data.items():
            if type(key) is not str or len(key) > _MAX_KEY or _string(key) != key:
                raise _Unsupported  # long or quoted: maybe a "complex" key (``? key``)
            if not self._collection(value):
                self.lines.append(f"{prefix}{key}: {self._inline(value)}\n")
            elif type(value) is dict:
                self.lines.append(f"{prefix}{key}:\n")
                self.mapping(value, indent + 2, " " * (indent + 2))
            else:
                self.lines.append(f"{prefix}{key}:\n")
                self.sequence(value, indent, " " * indent)
            prefix = " " * indent

    def sequence(self, data: list[Any], indent: int, first: str) -> None:
        prefix = first
        for item in data:
            if not self._collection(item):
                self.lines.append(f"{prefix}- {self._inline(item)}\n")
            elif type(item) is dict:
                self.mapping(item, indent + 2, prefix + "- ")
            else:
                self.sequence(item, indent + 2, prefix + "- ")
            prefix = " " * indent


def dump(data: Any) -> str:
    """``data`` as block-style YAML, exactly as ``yaml.dump`` (libyaml's emitter when
    available, keys in their order, width 4096) writes it."""
    writer = _Writer()
    try:
        if not writer._collection(data):
            raise _Unsupported  # a bare scalar or an empty document: PyYAML's business
        if type(data) is dict:
            writer.mapping(data, 0, "")
        else:
            writer.sequence(data, 0, "")
    except _Unsupported:
        return _pyyaml(data)
    return "".join(writer.lines)


def dump_all(docs: Iterable[Any], header: str = "") -> str:
    return header + "---\n" + "---\n".join(dump(doc) for doc in docs)
