"""Which runtime failures are the request's fault: those are INVALID_ARGUMENT, not INTERNAL.

runc resolves the container's command in its rootfs during ``create`` (in runc init) and an
exec's command in ``exec``, so a command the image does not have fails there, in words like
``exec: "x": executable file not found in $PATH``. That is the request's (or the image's) doing,
and kubelet shows the message to the user; the same message as INTERNAL would say the runtime broke.
"""

from __future__ import annotations

import re

from crio_py.errors import CrioError, Internal, InvalidArgument

_COMMAND_FAULT = re.compile(
    r'exec: "[^"]*": (executable file not found|permission denied|no such file or directory|is a directory'
    r"|exec format error|not a directory)"
)


def is_command_fault(message: str) -> bool:
    """Whether a runtime's create or exec failed because its command cannot be executed."""
    return _COMMAND_FAULT.search(message) is not None


def create_error(message: str) -> CrioError:
    """The error for a failed runtime create: InvalidArgument when the command cannot be executed."""
    if is_command_fault(message):
        return InvalidArgument(f"{message} (the command cannot be run from the container's image)")
    return Internal(message)
