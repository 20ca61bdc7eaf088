"""Sub-commands imported only when they run, so ``tether --help`` starts fast.

``tether net`` pulls in the network planner, ``tether image`` the image builder and
``tether node``/``tether artifacts`` the whole node tool (installers, Kubernetes views,
the agent's enrolment); none of that is needed to print the top-level help or to list
pools. The root group knows those sub-commands by name and one-line help, and imports a
module the first time its command is looked up to run (or to print its own help).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from importlib import import_module
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from typer.core import TyperGroup

if TYPE_CHECKING:  # Typer carries its own Click as typer._click (from 0.26)
    from typer._click import Command, Context, HelpFormatter

#: name -> ("module:attribute", one-line help). The attribute is a ``typer.Typer`` or a
#: function returning one; the help is what ``tether --help`` lists without importing,
#: and the sub-command's own ``typer.Typer`` takes it from here (:func:`help_of`).
LAZY: dict[str, tuple[str, str]] = {
    "net": (
        "tether.cli.net:app",
        "Plan the network of a hybrid cluster: check, plan, try on a testbed.",
    ),
    "node": ("tether.cli.nodelife:node_app", "Install Kubernetes node components on this host."),
    "artifacts": (
        "tether.cli.node:artifacts_app",
        "Signed node artifacts: build a mirror from files, sign it, copy one.",
    ),
    "image": ("tether.cli.image:app", "Edge OS images built from a profile's OS layer."),
}


def help_of(name: str) -> str:
    return LAZY[name][1]


def load(name: str) -> typer.Typer:
    """Import the sub-command ``name`` of :data:`LAZY`."""
    module, _, attribute = LAZY[name][0].partition(":")
    found = getattr(import_module(module), attribute)
    return found if isinstance(found, typer.Typer) else found()


class LazyGroup(TyperGroup):
    """The root ``tether`` group: :data:`LAZY` commands are imported on first use.

    While the group's own help is formatted, a lazy command is stood in for by a stub
    carrying its name and one-line help, so listing commands imports nothing.
    """

    _listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return TyperGroup(name=cmd_name, help=help_of(cmd_name))
        group = typer.main.get_group(load(cmd_name))
        group.name = cmd_name
        self.commands[cmd_name] = group
        return group

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


# Typer's help formatter ------------------------------------------------------------------


class _Markdown:
    """Stands in for ``rich.markdown.Markdown`` in Typer's help formatter; Typer makes
    one only for ``rich_markup_mode="markdown"``, which Tether does not use."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.markdown import Markdown

        return Markdown(*args, **kwargs)


class _Traceback:
    """Stands in for ``rich.traceback.Traceback``: Typer's pretty exceptions, which
    Tether turns off (``pretty_exceptions_enable=False``)."""

    @classmethod
    def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback.from_exception(*args, **kwargs)


#: Modules ``typer.rich_utils`` imports at its top for features Tether does not use, and
#: their stand-ins. Rich's Markdown pulls in markdown-it and its traceback Pygments:
#: together about a third of ``tether --help``.
_STAND_INS: dict[str, tuple[str, type]] = {
    "rich.markdown": ("Markdown", _Markdown),
    "rich.traceback": ("Traceback", _Traceback),
}


class _LightRichUtils(Loader):
    """Executes ``typer.rich_utils`` with :data:`_STAND_INS` in :data:`sys.modules`, then
    takes them out again, so any later import gets the real modules."""

    def __init__(self, real: Loader) -> None:
        self.real = real

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        installed = []
        for name, (attribute, stand_in) in _STAND_INS.items():
            if name not in sys.modules:
                stub = types.ModuleType(name)
                setattr(stub, attribute, stand_in)
                sys.modules[name] = stub
                installed.append(name)
        try:
            self.real.exec_module(module)
        finally:
            for name in installed:
                del sys.modules[name]


class LightHelpFinder(MetaPathFinder):
    """Finds ``typer.rich_utils`` (imported when help or a usage error is formatted) and
    loads it through :class:`_LightRichUtils`; every other import goes on as usual."""

    NAME = "typer.rich_utils"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.NAME:
            return None
        sys.meta_path.remove(self)  # find the real spec without finding ourselves
        try:
            spec = find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _LightRichUtils(spec.loader)
        return spec


def light_help() -> None:
    """Install :class:`LightHelpFinder` (once) before Typer formats any help."""
    if not any(isinstance(finder, LightHelpFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, LightHelpFinder())
