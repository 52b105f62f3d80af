"""Start a pod monitor: ``python -S -I <repo>/conmon/__main__.py --pod-dir D --pod-id P [--listen-fd N]``.

Run as a script with ``-S -I`` (no site, no environment, no user paths) the monitor starts in
about the time of a bare interpreter; it puts its own repository on sys.path below. The
``crio-py-conmon`` console script runs the same main().

Detaching: unless ``--foreground``, the monitor leaves its session (setsid) and forks; the first
process exits at once, so the daemon reaps it and the monitor, reparented to init, outlives the
daemon. With the daemon's own fork that is the classic double fork. ``--listen-fd`` is the
control socket, bound by the daemon so that it can connect before the monitor is up.
"""

import sys

if not __package__:
    sys.path.insert(0, __file__.rpartition("/")[0].rpartition("/")[0] or ".")

USAGE = "usage: conmon --pod-dir DIR --pod-id ID [--listen-fd N] [--foreground]\n"


def _parse(argv: list[str]) -> dict[str, str]:
    """Options as a dict; argparse would cost the monitor re, gettext and a few ms."""
    opts: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg == "--foreground":
            opts["foreground"] = "1"
        elif arg in ("--pod-dir", "--pod-id", "--listen-fd"):
            value = next(args, None)
            if value is None:
                raise ValueError(f"{arg} needs a value")
            opts[arg[2:]] = value
        else:
            raise ValueError(f"unknown argument {arg!r}")
    for required in ("pod-dir", "pod-id"):
        if required not in opts:
            raise ValueError(f"--{required} is required")
    return opts


def _detach() -> None:
    import posix

    if posix.getsid(0) != posix.getpid():
        posix.setsid()
    if posix.fork() != 0:
        posix._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Run a pod monitor until a shutdown request; the exit status of the (first) process."""
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
        listen_fd = int(opts.get("listen-fd", "-1"))
    except ValueError as e:
        sys.stderr.write(f"conmon: {e}\n{USAGE}")
        return 2
    if "foreground" not in opts:
        _detach()
    from conmon.server import serve

    return serve(opts["pod-dir"], opts["pod-id"], listen_fd)


if __name__ == "__main__":
    sys.exit(main())
