"""bench/compare.py --quick (the smoke form of the crio-py vs containerd bench) runs end to end,
prints both runtimes for every figure, and leaves nothing behind. It never judges a ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crio_py import cgroups
from tests.support.daemon import REPO

pytestmark = pytest.mark.e2e


def test_compare_quick_measures_both_runtimes_and_cleans_up(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "compare.py"), "--quick", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    data = json.loads((tmp_path / "r.json").read_text())
    figures = {row["figure"]: row for row in data["rows"]}
    wanted = ("lifecycle cycle p50", "loaded cycle p50", "ExecSync true p50", "pull cold p50",
              "daemon+helpers PSS, 3 pods", "per-pod helper PSS, 3 pods", "ListContainers (3 pods) p50")  # fmt: skip
    for figure in wanted:
        row = figures[figure]
        assert row["crio-py"] > 0 and row["containerd"] > 0, row
        assert row["figure"] in out.stdout
    # Every pod had its helper on both sides: monitors for crio-py, shims for containerd.
    assert "3 vs 3 helpers" in figures["daemon+helpers PSS, 3 pods"]["note"]

    made = data["made"]
    assert not Path(made["work"]).exists()
    for bridge in made["bridges"]:
        assert not Path(f"/sys/class/net/{bridge}").exists()
    for parent in made["cgroup_parents"]:
        assert cgroups.find_cgroup_dirs(parent) == {}
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if made["work"].encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                left.append(pid)
        except OSError:
            continue
    assert left == []
