"""Node life cycle on the host: signed artifact manifests, the install tracker, uninstall.

These modules are the foundation the agent uses to install Kubernetes node components
(containerd, kubelet, kubectl, CNI plugins, the credential helper) from a signed manifest,
record what it installed, and remove exactly that again, never touching what it did not
install.
"""
