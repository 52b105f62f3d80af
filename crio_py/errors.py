"""Errors the domain raises; the server layer maps each to its gRPC status code.

Kept free of grpc so that every layer can raise them. Messages are for people: they name the
object and what to do, never a traceback.
"""

from __future__ import annotations


class CrioError(Exception):
    """Base of every error that becomes a gRPC status. ``code`` is a grpc.StatusCode name."""

    code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(CrioError):
    code = "INVALID_ARGUMENT"


class NotFound(CrioError):
    code = "NOT_FOUND"


class AlreadyExists(CrioError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(CrioError):
    code = "FAILED_PRECONDITION"


class DeadlineExceeded(CrioError):
    code = "DEADLINE_EXCEEDED"


class Unavailable(CrioError):
    code = "UNAVAILABLE"


class Unauthenticated(CrioError):
    code = "UNAUTHENTICATED"


class PermissionDenied(CrioError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(CrioError):
    code = "RESOURCE_EXHAUSTED"


class Internal(CrioError):
    code = "INTERNAL"


class Unimplemented(CrioError):
    code = "UNIMPLEMENTED"
