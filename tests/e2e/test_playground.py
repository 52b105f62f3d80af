"""The playground image (Dockerfile.playground) builds and runs its demo: tests/e2e/playground.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).with_name("playground.sh")
SKIP = 77


@pytest.mark.timeout(1500)
def test_playground_image_builds_and_its_demo_serves_a_page() -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1400,
        env={**os.environ, "PYTHON": sys.executable},
    )
    if proc.returncode == SKIP:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "playground demo passed" in proc.stdout
