#!/usr/bin/env python3
"""Pull a 5-layer ~50 MB image from a loopback docker-registry: crio-py cold and warm, and
`skopeo copy` of the same image to a local OCI directory in the same run.

Goal: our cold pull <= 1.0x skopeo (which only downloads and verifies; we also decompress,
check each layer's diff id and unpack). The machine may be shared, so the three alternate
within each run, and CPU time (ours in-process, skopeo's as a child) is printed next to the
wall time. Our downloads run ``--parallel`` at a time, by default the daemon's
``registries.max_concurrent_downloads``; skopeo runs its own default (6).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py import config as config_mod
from crio_py.image import ImageManager
from crio_py.state import RecordStore
from tests.support.oci_images import Layer, push_image, tar_of_entries
from tests.support.registry import Registry

REPO = "bench/fifty"


def build_layers(count: int, size: int) -> list[Layer]:
    """Layers of incompressible data (compression would flatter whoever decompresses fastest)."""
    return [Layer(tar_of_entries({f"data/layer{i}.bin": os.urandom(size)})) for i in range(count)]


def our_pull(registry: Registry, root: Path, parallel: int) -> None:
    """One pull by an ImageManager on ``root`` (a fresh root: cold; the same again: warm)."""
    base = config_mod.load(None, None)
    cfg = dataclasses.replace(
        base,
        root=str(root),
        registries=dataclasses.replace(base.registries, insecure=[registry.host], max_concurrent_downloads=parallel),
    )
    ImageManager(lambda: cfg, RecordStore(root)).pull(f"{registry.host}/{REPO}:v1")


def skopeo_pull(registry: Registry, dest: Path) -> None:
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{registry.host}/{REPO}:v1",
         f"oci:{dest}:v1"],
        check=True,
    )


def timed(fn: Callable[[], None], who: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of ``who``: RUSAGE_SELF or RUSAGE_CHILDREN) of ``fn()``."""
    def cpu() -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    cpu0, start = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - start, cpu() - cpu0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--layer-mb", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--parallel", type=int, default=config_mod.load(None, None).registries.max_concurrent_downloads,
                        help="our concurrent layer downloads (default: the daemon's)")
    ns = parser.parse_args()
    registry = Registry().start()
    work = Path(tempfile.mkdtemp(prefix="crio-py-bench-pull-"))
    try:
        layers = build_layers(ns.layers, ns.layer_mb * 1024 * 1024)
        push_image(registry, REPO, "v1", layers)
        total_mb = sum(len(layer.blob) for layer in layers) / 1e6
        # Untimed: the first pull loads the HTTP stack, and the registry reads its blobs once.
        our_pull(registry, work / "warmup", ns.parallel)
        skopeo_pull(registry, work / "warmup-oci")
        samples: dict[str, list[tuple[float, float]]] = {"crio-py cold": [], "crio-py warm": [], "skopeo copy": []}
        for run in range(ns.runs):
            root, oci = work / f"root{run}", work / f"oci{run}"
            ours = partial(our_pull, registry, root, ns.parallel)
            samples["crio-py cold"].append(timed(ours, resource.RUSAGE_SELF))
            samples["crio-py warm"].append(timed(ours, resource.RUSAGE_SELF))
            samples["skopeo copy"].append(timed(partial(skopeo_pull, registry, oci), resource.RUSAGE_CHILDREN))
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(oci, ignore_errors=True)
        print(f"image: {ns.layers} layers, {total_mb:.1f} MB; {ns.runs} runs (median); {ns.parallel} parallel; "
              f"{os.cpu_count()} CPUs")
        medians = {}
        for label, runs in samples.items():
            wall = statistics.median(w for w, _c in runs)
            cpu = statistics.median(c for _w, c in runs)
            medians[label] = (wall, cpu)
            print(f"  {label:<13} {wall * 1000:8.1f} ms  {total_mb / wall:7.1f} MB/s  cpu {cpu * 1000:7.1f} ms")
        (cold_wall, cold_cpu), (sk_wall, sk_cpu) = medians["crio-py cold"], medians["skopeo copy"]
        print(f"ratio cold/skopeo: wall {cold_wall / sk_wall:.2f}x (goal <= 1.0x), cpu {cold_cpu / sk_cpu:.2f}x")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
