"""crio-py: a hackable Kubernetes CRI runtime."""

__version__ = "0.1.0"
