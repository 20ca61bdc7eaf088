"""The error hierarchy: stable, unique rules, and a docstring tree that stays in sync."""

from __future__ import annotations

import inspect

from tether.pki import errors
from tether.pki.errors import NameInUse, PKIError


def _classes() -> list[type[PKIError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, PKIError) and obj.__module__ == errors.__name__
    ]


def test_rules_are_unique_and_namespaced() -> None:
    rules = [cls.rule for cls in _classes()]
    assert len(rules) == len(set(rules))
    assert all(rule == "pki" or rule.startswith("pki.") for rule in rules)


def test_docstring_tree_names_every_error_and_rule() -> None:
    doc = errors.__doc__ or ""
    for cls in _classes():
        assert cls.__name__ in doc, cls.__name__
        assert cls.rule in doc, cls.rule


def test_message_and_details() -> None:
    err = NameInUse("edge-01", "prod")
    assert err.rule == "pki.name.in_use"
    assert "edge-01" in str(err)
    assert "prod" in str(err)
    assert err.details == {"node_name": "edge-01", "cluster": "prod"}
    assert "pki.name.in_use" in repr(err)
