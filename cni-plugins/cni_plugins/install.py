"""Write the plugin executables into a CNI plugin directory.

``python -m cni_plugins.install DEST [--python PY]`` writes ``bridge``, ``host-local``,
``loopback`` and ``portmap`` into DEST: tiny launchers whose shebang is ``PY -SE`` (no site
import, no PYTHON* variables: the fastest start-up) and which import this package from where it
lies now. PY must be able to import pyroute2 once site-packages is enabled (the project's venv
interpreter), for the in-process path used when the service is not running.
"""

from __future__ import annotations

import argparse
import os
import sys

from cni_plugins.invoke import MARKER
from cni_plugins.plugins import MODULES

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEMPLATE = """#!{python} -SE
# {marker}: {name} (thin launcher; the work happens in the cni_plugins service or package)
import sys

sys.path.insert(0, {parent!r})
from cni_plugins.client import main

main({name!r})
"""


def launcher(name: str, python: str, parent: str = PACKAGE_PARENT) -> str:
    """The launcher script for plugin ``name``."""
    return TEMPLATE.format(python=python, marker=MARKER.decode(), name=name, parent=parent)


def install(dest: str, python: str = sys.executable) -> list[str]:
    """Write all launchers into ``dest`` atomically; returns their paths."""
    os.makedirs(dest, exist_ok=True)
    paths = []
    for name in MODULES:
        path = os.path.join(dest, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(launcher(name, python))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="cni_plugins.install", description="write the CNI plugin executables")
    parser.add_argument("dest", help="plugin directory, e.g. /opt/crio-py/cni/bin")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the shebang")
    opts = parser.parse_args(argv)
    for path in install(opts.dest, opts.python):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
