"""Generate the CRI Python stubs from proto/runtime/v1/api.proto.

Run ``python -m crio_py.cri.generate`` after updating the proto; ``--check`` compares a fresh
generation with the committed stubs and exits 1 when they differ (the test run uses it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE_DIR.parent.parent / "proto" / "runtime" / "v1"
STUBS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    """Write the stubs into ``out_dir`` with package-relative imports."""
    from grpc_tools import protoc  # dev-only dependency

    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_DIR / "api.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # grpc_tools emits a top-level import that only works with the output dir on sys.path.
    grpc_file = out_dir / "api_pb2_grpc.py"
    text = grpc_file.read_text()
    grpc_file.write_text(text.replace("import api_pb2 as api__pb2", "from . import api_pb2 as api__pb2"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    ns = parser.parse_args(argv)
    if not ns.check:
        generate(PACKAGE_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [n for n in STUBS if (Path(tmp) / n).read_bytes() != (PACKAGE_DIR / n).read_bytes()]
    if stale:
        print(f"stale CRI stubs: {', '.join(stale)}; run: python -m crio_py.cri.generate", file=sys.stderr)
        return 1
    print("CRI stubs are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
