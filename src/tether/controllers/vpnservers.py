"""Runs the VPN server pass (:func:`tether.services.vpnservers.reconcile_vpn_servers`)
every ``resync_seconds``.

A loop of its own, not part of the nodes controller's network pass: that pass runs only
for imported clusters and works through their API server, while a site's VPN server is
configured from the store alone, and must be up before any node of the site can join.
"""

from __future__ import annotations

import logging
import threading

from tether.controllers.pools import DesiredNotify
from tether.services.vpnservers import reconcile_vpn_servers
from tether.store.db import Database

__all__ = ["VpnServerController"]

log = logging.getLogger(__name__)


class VpnServerController:
    def __init__(
        self, db: Database, *, resync_seconds: float = 5.0, on_desired: DesiredNotify | None = None
    ) -> None:
        self.db = db
        self.resync_seconds = resync_seconds
        self.on_desired = on_desired
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reconcile(self) -> None:
        """One pass; the documents it wrote wake their agents' long polls at once."""
        done = reconcile_vpn_servers(self.db)
        if self.on_desired is not None and done.pushed:
            self.on_desired(dict(done.pushed))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:
                log.exception("VPN server pass failed; retrying")
            self._stop.wait(self.resync_seconds)

    def start(self) -> VpnServerController:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vpn-servers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
