"""A container root filesystem made of Debian's dynamic busybox and the host's libc, for e2e tests.

Built once into a cache directory shared by test sessions (and by parallel workers: a lock file
serialises the build, a rename publishes it), then copied to wherever a test wants its own rootfs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

LIBS = (
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libresolv.so.2",
    "/lib64/ld-linux-x86-64.so.2",
)
# Directories a runtime spec or a test expects to find; the package only ships /bin and docs.
DIRS = ("proc", "sys", "dev", "etc", "tmp", "mnt", "root", "home", "var", "run")
CACHE_DIR = Path(os.environ.get("CRIO_PY_TEST_CACHE", "/var/tmp/crio-py-test-cache"))


def _download_busybox(workdir: Path) -> Path:
    """Debian's busybox .deb: fetched with apt-get, else the one apt already cached (offline hosts)."""
    try:
        subprocess.run(
            ["apt-get", "download", "busybox"], cwd=workdir, check=True, capture_output=True, timeout=120
        )
        return next(workdir.glob("busybox_*.deb"))
    except (subprocess.SubprocessError, OSError, StopIteration):
        cached = sorted(Path("/var/cache/apt/archives").glob("busybox_*.deb"))
        if not cached:
            raise
        return cached[-1]


def _build(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        deb = _download_busybox(Path(tmp))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, capture_output=True)
    for lib in LIBS:
        target = dest / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target)
    applets = subprocess.run([str(dest / "bin/busybox"), "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = dest / "bin" / applet
        if not link.exists() and not link.is_symlink():
            link.symlink_to("busybox")
    for d in DIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)


def _cached_rootfs() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    ready = CACHE_DIR / "busybox-rootfs"
    if ready.is_dir():
        return ready
    with open(CACHE_DIR / "busybox-rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.is_dir():
            return ready
        staging = Path(tempfile.mkdtemp(prefix="busybox-rootfs.", dir=CACHE_DIR))
        try:
            _build(staging)
            staging.rename(ready)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ready


def busybox_rootfs(dest: Path) -> Path:
    """Fill ``dest`` (created if missing) with a busybox rootfs: /bin applets, libc, empty system dirs.

    The tree is the caller's own copy: it may add files (``/etc/passwd``...) freely.
    """
    shutil.copytree(_cached_rootfs(), dest, symlinks=True, dirs_exist_ok=True)
    return dest
