"""Small facts about host processes."""

from __future__ import annotations


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has exited; only its reaping is left)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
