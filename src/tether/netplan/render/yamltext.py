"""YAML text for generated manifests, byte for byte what PyYAML writes, but fast.

A 10,000-pool plan is some 30,000 small YAML documents and two with 20,000 entries.
PyYAML's representer is pure Python even with libyaml's emitter, and it slows down on
big documents (the VPC route table alone took 4.7 s). :func:`dump` writes the block
style PyYAML writes for the data the renderers build (dicts, lists, strings, integers,
booleans, ``None``) directly. Each string PyYAML would leave plain is written as it is,
any other through PyYAML itself (so quoting stays PyYAML's), and anything this writer
does not know how to write exactly (another type, a shared object that PyYAML would
write as an alias, a long or multi-line string) sends the whole document to PyYAML.

Renderers of documents with thousands of entries write the text themselves, each value
through :func:`scalar` and each list through :func:`block_sequence`: the same YAML
without building the data first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import yaml
from yaml.resolver import Resolver

from tether.files import implicit_resolvers

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_STR_TAG = "tag:yaml.org,2002:str"
#: Keys longer than this are "complex" keys in PyYAML (``? key``).
_MAX_KEY = 120
#: Strings PyYAML writes plain in block context unless they resolve to another type
#: (``yes``, ``0x1f``, ``null``): no indicator first, no ``:`` or space last, printable
#: ASCII, and (see :func:`_maybe_plain`) no ``: `` or `` #``. Longer ones could be
#: folded at the line width.
_PLAIN_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/=&,'{}()#: -]{0,499}(?<![ :])\Z")


def _maybe_plain(value: str) -> bool:
    """Whether PyYAML may write ``value`` plain (if it reads back as a string). The two
    substrings are looked for apart: as a lookahead of the pattern (``(?!.*(?:: | #))``)
    they took 0.9 us of a 28-character name, backtracking through every position."""
    return ": " not in value and " #" not in value and _PLAIN_CHARS.match(value) is not None


#: ``Resolver.resolve``'s table for a plain scalar (asking the resolver itself for each
#: of a plan's 200,000 distinct strings cost 0.3 s: most start with a letter that has
#: no pattern at all).
_IMPLICIT = implicit_resolvers(Resolver.yaml_implicit_resolvers)


def _plain_is_str(value: str) -> bool:
    """Whether PyYAML's resolver reads ``value`` (not empty) written plain as a string:
    the first of its patterns that matches gives the type, and none is a string."""
    for tag, pattern in _IMPLICIT.get(value[0], _IMPLICIT[None]):
        if pattern.match(value):
            return tag == _STR_TAG
    return True


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
    if _maybe_plain(value) and _plain_is_str(value):
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
    kind = type(value)
    if kind is str:
        return _TEXT.get(value) or _string(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise _Unsupported


def scalar(value: str | int | bool | None) -> str:
    """``value`` as PyYAML writes it after ``key: `` or ``- `` in block style, for
    renderers that write their YAML as text (see :func:`block_sequence`).

    Raises ``ValueError`` for a string whose text depends on where it stands (one longer
    than a line, or with a line break): no name or address of a checked plan is."""
    try:
        return _scalar(value)
    except _Unsupported:
        raise ValueError(f"{value!r} is not a one-line YAML scalar") from None


def address(value: IPv4Address | IPv4Network) -> str:
    """An IPv4 address or network as :func:`scalar` writes its text: that text, plain.

    No dotted quad, with or without ``/len``, reads back in YAML 1.1 as anything but a
    string (three dots make no float, and there is no ``-`` for a timestamp or ``:`` for
    a sexagesimal number), so it needs neither the resolver nor the cache: the 10,000-pool
    cloud tables write 50,000 of them. ``tests/unit/netplan/test_yamltext.py`` checks it
    against :func:`scalar` for any address and network."""
    return str(value)


def block_sequence(key: str, items: Sequence[str], indent: str = "") -> str:
    """``key`` and its block sequence in a mapping indented by ``indent``, as PyYAML
    writes it: ``key: []`` when there are no items, else ``key:`` and each item after
    ``- `` at the key's own indentation.

    Each item is the text after its ``- ``: a :func:`scalar`, or a mapping whose later
    lines are indented by ``indent`` and two spaces; it ends with a line break."""
    if not items:
        return f"{indent}{key}: []\n"
    return f"{indent}{key}:\n" + "".join(f"{indent}- {item}" for item in items)


#: Keys already known to be written plain and short (a simple key, not ``? key``).
_KEYS: set[str] = set()


def _check_key(key: Any) -> None:
    if type(key) is not str or len(key) > _MAX_KEY or _string(key) != key:
        raise _Unsupported  # long or quoted: maybe a "complex" key (``? key``)
    if len(_KEYS) >= _TEXT_MAX:
        _KEYS.clear()
    _KEYS.add(key)


class _Writer:
    """PyYAML's block style: mappings indented by 2, sequences in mappings not indented.

    A 10,000-pool plan writes half a million values: each is written in one call of
    :meth:`_inline`, and a key seen before costs one set lookup."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[int] = set()

    def _inline(self, value: Any) -> str | None:
        """A scalar or an empty collection as written after ``key: `` or ``- ``, or
        ``None`` for a non-empty collection (a block of its own)."""
        kind = type(value)
        if kind is str:
            return _TEXT.get(value) or _string(value)
        if kind is dict or kind is list:
            if id(value) in self.seen:
                raise _Unsupported  # PyYAML writes an anchor and an alias
            self.seen.add(id(value))
            if value:
                return None
            return "{}" if kind is dict else "[]"
        return _scalar(value)

    def mapping(self, data: dict[Any, Any], indent: int, first: str) -> None:
        out = self.lines.append
        pad = " " * indent
        prefix = first
        for key, value in data.items():
            if key not in _KEYS:
                _check_key(key)
            text = self._inline(value)
            if text is not None:
                out(f"{prefix}{key}: {text}\n")
            elif type(value) is dict:
                out(f"{prefix}{key}:\n")
                self.mapping(value, indent + 2, pad + "  ")
            else:
                out(f"{prefix}{key}:\n")
                self.sequence(value, indent, pad)
            prefix = pad

    def sequence(self, data: list[Any], indent: int, first: str) -> None:
        out = self.lines.append
        pad = " " * indent
        prefix = first
        for item in data:
            text = self._inline(item)
            if text is not None:
                out(f"{prefix}- {text}\n")
            elif type(item) is dict:
                self.mapping(item, indent + 2, prefix + "- ")
            else:
                self.sequence(item, indent + 2, prefix + "- ")
            prefix = pad


def dump(data: Any) -> str:
    """``data`` as block-style YAML, exactly as ``yaml.dump`` (libyaml's emitter when
    available, keys in their order, width 4096) writes it."""
    writer = _Writer()
    try:
        if writer._inline(data) is not None:
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
