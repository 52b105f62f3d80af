"""CRI runtime/v1 protocol stubs generated from ``proto/runtime/v1/api.proto``.

``api_pb2`` holds the messages (usable by every layer); ``api_pb2_grpc`` holds the service
plumbing and is imported by the server layer only.
"""
