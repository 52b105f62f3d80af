"""Which runtime failures are the request's fault: those are INVALID_ARGUMENT, not INTERNAL.

runc resolves the container's command in its rootfs during ``create`` (in runc init), so a
command the image does not have fails there, in words like
``exec: "x": executable file not found in $PATH``. That is the request's (or the image's) doing,
and kubelet shows the message to the user; the same message as INTERNAL would say the runtime broke.
"""

from __future__ import annotations

import re

from crio_py.errors import CrioError, Internal, InvalidArgument

_COMMAND_FAULT = re.compile(
    r'exec: "[^"]*": (executable file not found in \$PATH|permission denied|no such file or directory|is a directory'
    r"|exec format error|not a directory)"
)


def create_error(message: str) -> CrioError:
    """The error for a failed runtime create: InvalidArgument when the command cannot be executed."""
    if _COMMAND_FAULT.search(message):
        return InvalidArgument(f"{message} (the command cannot be run from the container's image)")
    return Internal(message)
