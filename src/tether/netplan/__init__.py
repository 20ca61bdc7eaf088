"""Pure network planning: CIDR checks, routes, VPN/BGP/CNI configs (no I/O)."""
