"""Refusals by domain rules; part of :mod:`tether.errors`."""

from __future__ import annotations

from tether.errors import Conflict


class IllegalTransition(Conflict):
    """A state machine refused a transition; nothing changed."""

    code = "illegal_transition"

    def __init__(self, kind: str, state: str, event: str):
        super().__init__(
            f"{kind} in state {state!r} cannot take event {event!r}",
            field="status.state",
            rule="state_machine",
        )
        self.state = state
        self.event = event
