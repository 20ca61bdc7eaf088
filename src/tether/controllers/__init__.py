"""Controllers: long-running loops that keep the plane and its clusters in agreement.

- :mod:`tether.controllers.watch`: the resumable list-then-watch loop they share.
- :mod:`tether.controllers.nodes`: Node readiness -> host and pool health.
- :mod:`tether.controllers.csr`: approves or denies kubelet CSRs of Tether hosts.
- :mod:`tether.controllers.manager`: runs both for every imported cluster.
- :mod:`tether.controllers.heartbeats`: marks hosts Unreachable after missed heartbeats
  (run by the agent server).

Controllers are level-triggered: each pass recomputes the desired state from what it
lists and what the store holds, so a restart or a repeated event never applies a
change twice.
"""
