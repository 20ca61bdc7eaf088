"""Shell completion, as docs/cli.md tells users to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: The installed command (completion is keyed to its name, ``tether``).
TETHER = [str(Path(sys.executable).with_name("tether"))]


def _complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_TETHER_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    done = subprocess.run(TETHER, env=env, capture_output=True, text=True, timeout=60)
    return done.stdout.split()


def test_bash_completes_commands_and_verbs() -> None:
    assert _complete("tether po") == ["pool"]
    assert "rollout" in _complete("tether pool ")
    assert _complete("tether rollout ap") == ["approve"]


def test_the_completion_script_is_printed_for_installing() -> None:
    env = {**os.environ, "SHELL": "/bin/bash"}
    done = subprocess.run(
        [*TETHER, "--show-completion", "bash"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "_TETHER_COMPLETE=complete_bash" in done.stdout
    assert "complete -o default -F _tether_completion tether" in done.stdout
