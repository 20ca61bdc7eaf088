"""The host side has one error tree: every exception class of the node tool, the agent
and the agent API's client is a HostError on its permanent or temporary branch, and the
tree drawn in tether.errors names it, so the one retry decision covers it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import tether.agent
import tether.node
from tether import errors
from tether.errors import HostError, Invalid, Permanent, Temporary, is_permanent


def _host_modules() -> list[str]:
    names = ["tether.planeclient"]
    for package in (tether.node, tether.agent):
        modules = pkgutil.iter_modules(package.__path__)
        names += [f"{package.__name__}.{m.name}" for m in modules if m.name != "__main__"]
    return names


def _host_exceptions() -> list[type[BaseException]]:
    found = []
    for name in _host_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")  # private control flow, never escapes
            ):
                found.append(value)
    return found


def test_there_are_host_exceptions_to_check() -> None:
    names = {cls.__name__ for cls in _host_exceptions()}
    assert {"ForeignFile", "ManifestError", "FetchError", "Unavailable", "Refused"} <= names


@pytest.mark.parametrize("cls", _host_exceptions(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_each_is_on_one_branch_and_in_the_drawn_tree(cls: type[BaseException]) -> None:
    assert issubclass(cls, Permanent) != issubclass(cls, Temporary), "exactly one branch"
    assert issubclass(cls, HostError)
    assert errors.__doc__ is not None and f"── {cls.__name__} " in errors.__doc__


def test_the_one_retry_decision() -> None:
    from tether.node.install import FetchError
    from tether.node.managed import ForeignFile

    assert is_permanent(ForeignFile("/etc/kubernetes/kubelet/config.yaml"))
    assert not is_permanent(FetchError("cannot fetch https://mirror/manifest.json: HTTP 503"))
    assert is_permanent(Invalid("node.action: unknown", field="node.action"))
    assert not is_permanent(FileNotFoundError(2, "No such file or directory"))
    assert not is_permanent(KeyError("a bug"))  # unforeseen: retried with backoff
