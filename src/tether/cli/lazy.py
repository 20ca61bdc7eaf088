"""Sub-commands imported only when they run, so ``tether --help`` starts fast.

``tether net`` pulls in the network planner, ``tether image`` the image builder and
``tether node``/``tether artifacts`` the whole node tool (installers, Kubernetes views,
the agent's enrolment); none of that is needed to print the top-level help or to list
pools. The root group knows those sub-commands by name and one-line help, and imports a
module the first time its command is looked up to run (or to print its own help).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

import typer
import typer.main
from typer.core import TyperGroup

if TYPE_CHECKING:  # Typer vendors Click as typer._click from 0.2x; older ones use click
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
