#!/usr/bin/env python3
"""Pull a 5-layer ~50 MB image from a loopback docker-registry: crio-py cold and warm, and
`skopeo copy` of the same image to a local OCI directory in the same run.

Goal: our cold pull <= 1.0x skopeo (which only downloads and verifies; we also unpack).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def our_pull(registry: Registry, root: Path) -> float:
    base = config_mod.load(None, None)
    cfg = dataclasses.replace(
        base,
        root=str(root),
        registries=dataclasses.replace(base.registries, insecure=[registry.host]),
    )
    images = ImageManager(lambda: cfg, RecordStore(root))
    start = time.perf_counter()
    images.pull(f"{registry.host}/{REPO}:v1")
    return time.perf_counter() - start


def skopeo_pull(registry: Registry, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{registry.host}/{REPO}:v1",
         f"oci:{dest}:v1"],
        check=True,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--layer-mb", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    ns = parser.parse_args()
    registry = Registry().start()
    work = Path(tempfile.mkdtemp(prefix="crio-py-bench-pull-"))
    try:
        layers = build_layers(ns.layers, ns.layer_mb * 1024 * 1024)
        push_image(registry, REPO, "v1", layers)
        total_mb = sum(len(layer.blob) for layer in layers) / 1e6
        cold, warm, skopeo = [], [], []
        for run in range(ns.runs):
            root = work / f"root{run}"
            cold.append(our_pull(registry, root))
            warm.append(our_pull(registry, root))
            skopeo.append(skopeo_pull(registry, work / f"oci{run}"))
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(work / f"oci{run}", ignore_errors=True)
        print(f"image: {ns.layers} layers, {total_mb:.1f} MB, {ns.runs} runs (median)")
        for label, samples in (("crio-py cold", cold), ("crio-py warm", warm), ("skopeo copy", skopeo)):
            t = statistics.median(samples)
            print(f"  {label:<13} {t * 1000:8.1f} ms  {total_mb / t:7.1f} MB/s")
        print(f"ratio cold/skopeo: {statistics.median(cold) / statistics.median(skopeo):.2f}x (goal <= 1.0x)")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
