"""iptables through iptables-save/iptables-restore: one read and one atomic write per change.

The reference plugins run one iptables process per rule; reading the table once and applying a
whole batch with ``iptables-restore --noflush`` is both faster and atomic. Our own plugin
processes serialise on a lock file; a batch that loses a race with someone else (e.g. a chain
created in between) is rebuilt from a fresh read and retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cni_plugins.spec import ERR_INTERNAL, CNIError

LOCK_ENV = "CRIO_PY_CNI_IPTABLES_LOCK"
DEFAULT_LOCK = "/run/crio-py/cni-iptables.lock"


def quote(arg: str) -> str:
    """Quote one argument for an iptables-restore line."""
    if arg and not any(c.isspace() or c in "\"'\\" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rule_line(op: str, chain: str, args: list[str]) -> str:
    """One iptables-restore line, e.g. ``-A CHAIN -s 10.0.0.2/32 -j ACCEPT``."""
    return " ".join([op, chain, *(quote(a) for a in args)])


@dataclass
class Snapshot:
    """A parsed ``iptables-save -t <table>``."""

    chains: set[str]
    rules: list[str]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """Parse iptables-save output of one table."""
        chains, rules = set(), []
        for line in text.splitlines():
            if line.startswith(":"):
                chains.add(line[1:].split(" ", 1)[0])
            elif line.startswith("-A "):
                rules.append(line)
        return cls(chains, rules)

    def rules_of(self, chain: str) -> list[str]:
        """The ``-A chain ...`` lines of one chain, in order."""
        prefix = f"-A {chain} "
        return [r for r in self.rules if r.startswith(prefix)]

    def jumps(self, chain: str, target: str) -> list[str]:
        """Rules in ``chain`` that jump to ``target``."""
        return [r for r in self.rules_of(chain) if r.endswith(f" -j {target}") or f" -j {target} " in r]

    def delete_lines(self, rules: list[str]) -> list[str]:
        """Batch lines deleting exactly these saved rules."""
        return ["-D " + r[3:] for r in rules]


def _binary(v6: bool, what: str) -> str:
    return f"ip6tables-{what}" if v6 else f"iptables-{what}"


def save(table: str, v6: bool = False) -> Snapshot:
    """Read one table."""
    proc = subprocess.run([_binary(v6, "save"), "-t", table], capture_output=True, check=False)
    if proc.returncode != 0:
        raise CNIError(ERR_INTERNAL, f"iptables-save -t {table} failed: {proc.stderr.decode(errors='replace').strip()}")
    return Snapshot.parse(proc.stdout.decode(errors="replace"))


def restore(table: str, lines: list[str], v6: bool = False) -> None:
    """Apply a batch to one table atomically, keeping everything else."""
    data = "\n".join([f"*{table}", *lines, "COMMIT", ""]).encode()
    proc = subprocess.run(
        [_binary(v6, "restore"), "--noflush", "-w", "5"], input=data, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise CNIError(ERR_INTERNAL, f"iptables-restore failed: {proc.stderr.decode(errors='replace').strip()}")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    path = os.environ.get(LOCK_ENV, DEFAULT_LOCK)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def apply(
    table: str,
    build: Callable[[Snapshot], list[str]],
    v6: bool = False,
    attempts: int = 5,
    first: list[str] | None = None,
) -> None:
    """Read ``table``, let ``build`` compute a batch from it, and apply it; retried on races.

    ``first``, when given, is tried before any read: a batch that is right whenever it applies
    cleanly (e.g. it creates a chain with ``-N``, which fails if the chain exists), saving the
    read in the common case.
    """
    with _locked():
        if first:
            try:
                restore(table, first, v6)
                return
            except CNIError:
                pass
        for attempt in range(attempts):
            lines = build(save(table, v6))
            if not lines:
                return
            try:
                restore(table, lines, v6)
                return
            except CNIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))


def chain_ops(snap: Snapshot, chain: str, fresh: bool) -> list[str]:
    """Lines that make ``chain`` exist; ``fresh`` also empties it (iptables-restore flushes declared chains)."""
    if fresh:
        return [f":{chain} - [0:0]"]
    return [] if chain in snap.chains else [f"-N {chain}"]


def remove_chain(snap: Snapshot, chain: str, entry_chains: list[str]) -> list[str]:
    """Lines removing every jump to ``chain`` from ``entry_chains``, then the chain itself."""
    lines: list[str] = []
    for entry in entry_chains:
        lines += snap.delete_lines(snap.jumps(entry, chain))
    if chain in snap.chains:
        lines += [f"-F {chain}", f"-X {chain}"]
    return lines


def remove_if_unused(table: str, top: str, helpers: list[str], v6: bool = False) -> None:
    """Remove the shared chain ``top`` and ``helpers`` once ``top`` holds no rule (no pod uses them).

    ``top`` is deleted without a flush: if a pod's rule lands in it after our read, the batch
    fails instead of dropping that rule, and the retry sees the chain in use.
    """
    entries = ["PREROUTING", "OUTPUT", "POSTROUTING"]

    def build(snap: Snapshot) -> list[str]:
        if top not in snap.chains or snap.rules_of(top):
            return []
        lines: list[str] = []
        for entry in entries:
            lines += snap.delete_lines(snap.jumps(entry, top))
        lines.append(f"-X {top}")
        for chain in helpers:
            lines += remove_chain(snap, chain, entries)
        return lines

    apply(table, build, v6=v6)
