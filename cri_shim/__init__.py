"""cri-shim: a Kubernetes CRI runtime in Python."""

__version__ = "0.1.0"
