"""Tether: one Kubernetes cluster across the cloud and private sites."""

__version__ = "0.1.0"
