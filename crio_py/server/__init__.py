"""The gRPC layer: thin handlers that validate requests, call the domain and map errors."""
