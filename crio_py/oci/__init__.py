"""The OCI runtime layer: calls to runc (or any runc-compatible CLI) and the handler registry."""

from crio_py.oci.registry import RuntimeRegistry
from crio_py.oci.runtime import DEFAULT_TIMEOUT, MAX_EXEC_OUTPUT, ExecResult, InteractiveExec, OCIRuntime

__all__ = ["DEFAULT_TIMEOUT", "MAX_EXEC_OUTPUT", "ExecResult", "InteractiveExec", "OCIRuntime", "RuntimeRegistry"]
