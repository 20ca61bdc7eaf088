"""Command line of the agent: ``run``, ``reset``, ``inventory`` (also ``tether agent ...``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tether.agent import AGENT_VERSION, inventory
from tether.agent.config import AgentConfig, ConfigError, load
from tether.agent.identity import Identity
from tether.agent.lock import AlreadyRunning
from tether.agent.runner import Agent
from tether.domain.agent import Inventory
from tether.node.actions import HostFacts
from tether.node.host import HostOps
from tether.processes import stop_on_signals

DEFAULT_CONFIG = Path("/etc/tether/agent.yaml")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # lightkube's client


def run(
    config_path: Path,
    node_host: Callable[[AgentConfig], HostOps] | None = None,
    node_facts: Callable[[AgentConfig], HostFacts] | None = None,
    collect_inventory: Callable[[], Inventory] = inventory.collect,
    reimage: Callable[[Agent], None] | None = None,
) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the exit code. ``node_host`` replaces
    systemd for node plans, ``node_facts`` the host's facts for node validation,
    ``collect_inventory`` the inventory it reports and ``reimage`` the reboot after a
    re-image (the SIMULATED agent of :mod:`tether.sim.agent`)."""
    try:
        config = load(config_path)
    except ConfigError as exc:
        logging.getLogger("tether.agent").error("%s", exc)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    logging.getLogger("tether.agent").info("tether agent %s starting", AGENT_VERSION)
    try:
        return Agent(
            config,
            stop=stop,
            node_host=node_host,
            node_facts=node_facts,
            collect_inventory=collect_inventory,
            reimage=reimage,
        ).run()
    except AlreadyRunning as exc:
        logging.getLogger("tether.agent").error("%s", exc)
        return 3


def reset(config_path: Path) -> int:
    config = load(config_path)
    gone = Identity(config.state_dir).reset()
    for path in gone:
        print(f"removed {path}")
    print(
        "the agent will enrol again on its next start (the plane must allow it: "
        "tether host reset-enrolment NAME)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether-agent", description="Tether edge agent")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "reset"):
        p = sub.add_parser(name)
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    sub.add_parser("inventory", help="print what the agent would report")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "run":
            return run(args.config)
        if args.command == "reset":
            return reset(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(inventory.collect().model_dump(mode="json", by_alias=True), indent=2))
    return 0
