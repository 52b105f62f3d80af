"""Registries: image references and the OCI distribution (registry v2) client."""
