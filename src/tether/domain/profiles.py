"""Profile variables, their values per pool, and what a change to a node's spec does.

Pure: no I/O. Three parts:

**Variables.** A profile declares typed variables; its layers use them as ``{{ name }}``
anywhere in a string. A pool gives values; :func:`resolve_values` checks them (type,
``regex``, ``required``, unknown names) and fills in defaults, and :func:`render` puts them
into the layers. A string that is exactly one placeholder takes the value's own type
(``maxPods: "{{ max_pods }}"`` becomes the number 110); inside longer text the value is
written as text. Every problem names its field.

**Changes and actions.** :func:`diff` compares two documents field by field and gives
each change the action it needs on a node, by the first rule in :data:`RULES` whose
path is a prefix of the changed field (the rules follow Palette's edge upgrade
behaviour). The strongest action of a diff decides the rollout: ``repave`` (reinstall)
> ``reboot`` > ``upgrade`` (drain, node upgrade) > ``restart`` (kubelet or containerd
restart) > ``inPlace`` (no drain) > ``none`` (nothing on nodes).

**Redaction.** :func:`redact` replaces the values of sensitive variables wherever they
appear in a document shown to people.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from tether.domain.models import ProfileVariable, VariableType, VariableValue

__all__ = [
    "REDACTED",
    "RULES",
    "Action",
    "Change",
    "Problem",
    "diff",
    "placeholders",
    "redact",
    "render",
    "resolve_values",
    "sample_values",
    "strongest",
]

REDACTED: Final = "******"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_VERSION = re.compile(r"^v?\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class Problem:
    """One broken rule: the field (dotted wire path) and what is wrong with it."""

    field: str
    message: str


# Variables -----------------------------------------------------------------------------


def _check_type(var: ProfileVariable, value: VariableValue) -> str | None:
    """Why ``value`` does not fit ``var.type`` (None when it does)."""
    kind = var.type
    if kind is VariableType.BOOLEAN:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is VariableType.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if not isinstance(value, str):
        return f"must be a string ({kind.value})"
    if kind is VariableType.IPV4:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return "must be an IPv4 address, like 10.0.0.1"
    elif kind is VariableType.IPV4CIDR:
        try:
            ipaddress.IPv4Network(value)
        except ValueError:
            return "must be an IPv4 CIDR without host bits, like 10.0.0.0/16"
    elif kind is VariableType.VERSION and not _VERSION.match(value):
        return "must be a version, like 1.2.3"
    return None


def _check(var: ProfileVariable, value: VariableValue, field: str) -> list[Problem]:
    why = _check_type(var, value)
    if why is not None:
        return [Problem(field, why)]
    if var.regex is not None and not re.fullmatch(var.regex, _text(value)):
        return [Problem(field, f"does not match {var.regex!r}")]
    return []


def resolve_values(
    variables: Sequence[ProfileVariable],
    values: Mapping[str, VariableValue],
    *,
    field: str = "spec.variables",
) -> tuple[dict[str, VariableValue], list[Problem]]:
    """Every variable's value (the pool's, else the default) and every problem found."""
    declared = {v.name: v for v in variables}
    problems = [
        Problem(f"{field}.{name}", "the profile declares no such variable")
        for name in sorted(set(values) - set(declared))
    ]
    resolved: dict[str, VariableValue] = {}
    for var in variables:
        where = f"{field}.{var.name}"
        if var.name in values:
            value: VariableValue | None = values[var.name]
        else:
            value = var.default
        if value is None:
            if var.required:
                problems.append(Problem(where, "is required and the profile has no default"))
            continue
        found = _check(var, value, where)
        problems.extend(found)
        if not found:
            resolved[var.name] = value
    return resolved, problems


def check_defaults(variables: Sequence[ProfileVariable]) -> list[Problem]:
    """A profile's own defaults must fit their variables."""
    return [
        problem
        for i, var in enumerate(variables)
        if var.default is not None
        for problem in _check(var, var.default, f"spec.variables.{i}.default")
    ]


def sample_values(variables: Sequence[ProfileVariable]) -> dict[str, VariableValue]:
    """A value for every variable (its default, else one of its type) to test-render with."""
    samples: dict[VariableType, VariableValue] = {
        VariableType.STRING: "sample",
        VariableType.NUMBER: 1,
        VariableType.BOOLEAN: True,
        VariableType.IPV4: "10.0.0.1",
        VariableType.IPV4CIDR: "10.0.0.0/24",
        VariableType.VERSION: "1.0.0",
    }
    return {v.name: v.default if v.default is not None else samples[v.type] for v in variables}


def _text(value: VariableValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def placeholders(document: Any) -> set[str]:
    """The variable names ``document`` refers to."""
    if isinstance(document, str):
        return set(_PLACEHOLDER.findall(document))
    if isinstance(document, Mapping):
        return set().union(*(placeholders(v) for v in document.values()), set())
    if isinstance(document, list):
        return set().union(*(placeholders(v) for v in document), set())
    return set()


def render(document: Any, values: Mapping[str, VariableValue], field: str = "") -> Any:
    """``document`` with every ``{{ name }}`` replaced (module doc); unknown names raise
    :class:`UnknownVariable` naming the field."""
    if isinstance(document, str):
        whole = _PLACEHOLDER.fullmatch(document.strip())
        if whole is not None:
            return _value(whole.group(1), values, field)
        return _PLACEHOLDER.sub(lambda m: _text(_value(m.group(1), values, field)), document)
    if isinstance(document, Mapping):
        return {k: render(v, values, f"{field}.{k}" if field else k) for k, v in document.items()}
    if isinstance(document, list):
        return [render(v, values, f"{field}.{i}") for i, v in enumerate(document)]
    return document


class UnknownVariable(ValueError):
    def __init__(self, name: str, field: str) -> None:
        super().__init__(f"{field}: {{{{ {name} }}}} names no variable with a value")
        self.problem = Problem(field, f"{{{{ {name} }}}} names no variable with a value")


def _value(name: str, values: Mapping[str, VariableValue], field: str) -> VariableValue:
    if name not in values:
        raise UnknownVariable(name, field)
    return values[name]


def redact(document: Any, secrets: Iterable[str]) -> Any:
    """``document`` with every secret text replaced by :data:`REDACTED`."""
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not hidden:
        return document
    text = json.dumps(document)
    for secret in hidden:
        text = text.replace(json.dumps(secret)[1:-1], REDACTED)
    return json.loads(text)


def sensitive_values(
    variables: Sequence[ProfileVariable], values: Mapping[str, VariableValue]
) -> list[str]:
    """The texts to hide: the values (and defaults) of sensitive variables."""
    found = []
    for var in variables:
        if not var.sensitive:
            continue
        for value in (values.get(var.name), var.default):
            if value is not None and not isinstance(value, bool):
                found.append(_text(value))
    return found


# Changes and actions -------------------------------------------------------------------


class Action(StrEnum):
    """What a change needs on a node, weakest first (see :data:`ORDER`)."""

    NONE = "none"
    IN_PLACE = "inPlace"
    RESTART = "restart"
    UPGRADE = "upgrade"
    REBOOT = "reboot"
    REPAVE = "repave"

    @property
    def rank(self) -> int:
        return ORDER.index(self)

    @property
    def drains(self) -> bool:
        """Whether the node is cordoned and drained first."""
        return self.rank >= Action.UPGRADE.rank


ORDER: Final = [
    Action.NONE,
    Action.IN_PLACE,
    Action.RESTART,
    Action.UPGRADE,
    Action.REBOOT,
    Action.REPAVE,
]

#: Field prefix -> action, first match wins. Paths are those of a node's spec
#: (:mod:`tether.domain.nodeplan`) and of a profile's layers without ``layers.``.
RULES: Final[tuple[tuple[str, Action, str], ...]] = (
    ("os.image", Action.REPAVE, "a new OS image is installed from scratch"),
    ("os.cloudInit", Action.REPAVE, "cloud-init settings apply on a fresh install"),
    ("os.kernelModules", Action.REBOOT, "kernel modules are loaded at boot"),
    ("os.sysctls", Action.IN_PLACE, "sysctls apply live"),
    ("os.files", Action.IN_PLACE, "files are written in place"),
    ("node.ip", Action.REPAVE, "a node's IP is fixed when it registers"),
    ("kubernetes.version", Action.UPGRADE, "the node is drained and upgraded"),
    ("kubernetes.kubeletConfig", Action.RESTART, "the kubelet restarts with its new config"),
    ("kubernetes.kubeletExtraArgs", Action.RESTART, "the kubelet restarts with its new flags"),
    ("kubernetes.containerdConfig", Action.RESTART, "containerd restarts with its new config"),
    ("cluster", Action.RESTART, "the kubelet reconnects to the cluster"),
    ("node.labels", Action.IN_PLACE, "labels change on the Node, no drain"),
    ("node.taints", Action.IN_PLACE, "taints change on the Node, no drain"),
    ("node.routes", Action.IN_PLACE, "the agent replaces the host's static routes live"),
    ("network", Action.NONE, "the CNI runs in the cluster"),
    ("addons", Action.NONE, "add-ons run in the cluster"),
    ("variables", Action.NONE, "a variable matters only where a layer uses it"),
    ("description", Action.NONE, "descriptive only"),
)


@dataclass(frozen=True)
class Change:
    """One changed field: its dotted path, the values, and the action it needs."""

    field: str
    old: Any
    new: Any
    action: Action
    why: str

    def as_dict(self, secrets: Iterable[str] = ()) -> dict[str, Any]:
        hidden = list(secrets)
        return {
            "field": self.field,
            "old": redact(self.old, hidden),
            "new": redact(self.new, hidden),
            "action": self.action.value,
            "why": self.why,
        }


def rule_for(field: str) -> tuple[Action, str]:
    """The action (and why) of a change to ``field``; unknown fields need a repave."""
    for prefix, action, why in RULES:
        if field == prefix or field.startswith(prefix + "."):
            return action, why
    return Action.REPAVE, "no rule knows this field: the safest action"


def _leaves(document: Any, prefix: str) -> dict[str, Any]:
    """Flatten mappings into dotted paths; lists and scalars are leaves."""
    if isinstance(document, Mapping) and document:
        out: dict[str, Any] = {}
        for key, value in document.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: document}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every field that differs between ``old`` and ``new``, sorted by field."""
    before, after = _leaves(old, ""), _leaves(new, "")
    changes = []
    for field in sorted(set(before) | set(after)):
        was, now = before.get(field), after.get(field)
        if was == now or (was in (None, {}, [], "") and now in (None, {}, [], "")):
            continue
        action, why = rule_for(field)
        changes.append(Change(field, was, now, action, why))
    return changes


def strongest(changes: Iterable[Change]) -> Action:
    """The action that covers every change: the strongest of them (``none`` for none)."""
    return max((c.action for c in changes), key=lambda a: a.rank, default=Action.NONE)
