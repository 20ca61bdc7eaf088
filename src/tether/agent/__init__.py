"""The Tether edge agent: enrols its host, heartbeats, renews its certificate, applies
desired state. Runs on the host (``tether agent run --config /etc/tether/agent.yaml``),
makes only outbound connections, and talks to the plane's agent server over mutual TLS.

It imports nothing of the plane's server side (store, services, api): only the pure
wire models in :mod:`tether.domain.agent`.
"""

import tether

AGENT_VERSION = tether.__version__
