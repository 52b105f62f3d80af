"""Structured logging: logfmt or JSON lines, one event per line.

Modules log with the standard library (``logging.getLogger(__name__)``) and pass context as
``extra={"pod_id": ..., "rpc": ...}``; every such field is rendered as a key of the event.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from typing import Any

# Libraries that log every request at info; an operator wants those only when debugging.
CHATTY_LIBRARIES = ("httpx", "httpcore")
# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    out: dict[str, Any] = {
        "time": f"{ts}.{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
    if record.exc_info:
        out["error_trace"] = logging.Formatter().formatException(record.exc_info)
    return out


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    """``time=... level=info logger=... msg="..." key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class _InfoIsDebug(logging.Filter):
    """Turns a library's info events into debug ones (kept only when the level is debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def setup(level: str, fmt: str) -> None:
    """Send the ``crio_py`` loggers to stderr in ``fmt`` at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name in CHATTY_LIBRARIES:
        library = logging.getLogger(name)
        library.filters[:] = [f for f in library.filters if not isinstance(f, _InfoIsDebug)] + [_InfoIsDebug()]
    set_level(level)


def destination() -> str:
    """Where this process's log (its stderr) goes, said so that an operator can go and read it."""
    try:
        st = os.fstat(2)
    except OSError:
        return "nowhere (stderr is closed)"
    journal = os.environ.get("JOURNAL_STREAM", "")
    if journal == f"{st.st_dev}:{st.st_ino}":
        return "the systemd journal (journalctl -u crio-py)"
    if stat.S_ISREG(st.st_mode):
        try:
            return os.readlink("/proc/self/fd/2")
        except OSError:
            return "a file (stderr)"
    if os.isatty(2):
        return f"the terminal {os.ttyname(2)}"
    kind = "pipe" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "device"
    return f"stderr, a {kind} read by whatever started the daemon"


def set_level(level: str) -> None:
    """Change the log level live (SIGHUP)."""
    logging.getLogger().setLevel(level.upper())
