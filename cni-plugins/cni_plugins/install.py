"""Write the plugin executables into a CNI plugin directory.

``python -m cni_plugins.install DEST [--python PY] [--launcher-python FAST]`` writes ``bridge``,
``host-local``, ``loopback`` and ``portmap`` into DEST: tiny launchers that import this package
from where it lies now. Their shebang is ``FAST -SE`` (no site import, no PYTHON* variables):
by default the venv's base interpreter, which starts ~4 ms faster than the venv's own because it
skips the venv lookup, and only needs the standard library to reach the service. Without a
service they re-exec under PY (default: this interpreter), which must have pyroute2.
"""

from __future__ import annotations

import argparse
import os
import sys

from cni_plugins.invoke import MARKER
from cni_plugins.plugins import MODULES

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEMPLATE = """#!{fast} -SE
# {marker}: {name} (thin launcher; the work happens in the cni_plugins service or package)
import sys

sys.path.insert(0, {parent!r})
from cni_plugins.client import main

main({name!r}, {python!r})
"""


def fast_interpreter(python: str) -> str:
    """The base interpreter behind a venv's python (same version, quicker start), else ``python``."""
    base = getattr(sys, "_base_executable", "") if os.path.samefile(python, sys.executable) else ""
    return base if base and os.access(base, os.X_OK) else python


def launcher(name: str, python: str, fast: str = "", parent: str = PACKAGE_PARENT) -> str:
    """The launcher script for plugin ``name``."""
    return TEMPLATE.format(fast=fast or python, marker=MARKER.decode(), name=name, parent=parent, python=python)


def install(dest: str, python: str = sys.executable, fast: str = "") -> list[str]:
    """Write all launchers into ``dest`` atomically; returns their paths."""
    fast = fast or fast_interpreter(python)
    os.makedirs(dest, exist_ok=True)
    paths = []
    for name in MODULES:
        path = os.path.join(dest, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(launcher(name, python, fast))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="cni_plugins.install", description="write the CNI plugin executables")
    parser.add_argument("dest", help="plugin directory, e.g. /opt/crio-py/cni/bin")
    parser.add_argument("--python", default=sys.executable, help="interpreter with pyroute2 (in-process path)")
    parser.add_argument("--launcher-python", default="", help="interpreter for the shebang (fast start-up)")
    opts = parser.parse_args(argv)
    for path in install(opts.dest, opts.python, opts.launcher_python):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
