"""crio-py's CNI plugins: bridge, host-local, loopback and portmap.

Kept free of imports: the thin executables import :mod:`cni_plugins.client` and nothing else on
their fast path.
"""
