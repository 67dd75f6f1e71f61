#!/usr/bin/env python3
"""Benchmark: pull + unpack of a ~200 MB, 5-layer image from a local registry.

    .venv/bin/python hack/bench_pull.py [--runs 3] [--layer-mb 50]

Side by side, interleaved, in the same invocation:
  cri-shim   PullImage through a real daemon (download, verify, unpack to snapshots)
  baseline   skopeo copy docker://... oci:DIR, then umoci unpack (the same two steps done
             by separate standard tools)
Layers are random (incompressible) data, gzip-compressed, generated locally.
Prints each run, the medians and the ratio cri-shim / baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a script under hack/: the tests package is not installed

from cri_shim.criapi import api_pb2 as pb  # noqa: E402
from tests.e2e.daemon import DaemonProcess  # noqa: E402
from tests.support import testimages  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402


def big_layer(i: int, mb: int) -> testimages.Layer:
    t = testimages.TarBuilder().dir(f"data{i}")
    for j in range(4):
        t.file(f"data{i}/chunk{j}", os.urandom(mb * (1 << 20) // 4))
    return testimages.Layer(t.bytes(), level=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layer-mb", type=int, default=50)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    reg = start_registry(work / "registry")
    daemon = None
    try:
        print(f"building 5 layers of {a.layer_mb} MB ...", flush=True)
        layers = [testimages.busybox_base()] + [big_layer(i, a.layer_mb) for i in range(4)]
        for layer in layers:
            layer.level = 1  # random data does not compress; do not spend time trying
        pusher = testimages.Pusher(reg.host)
        pusher.image("bench/big", "latest", layers)
        total = sum(len(layer.blob) for layer in layers)
        ref = reg.image("bench/big:latest")
        print(f"image {ref}: {len(layers)} layers, {total / 1e6:.0f} MB compressed", flush=True)
        (work / "d").mkdir()
        daemon = DaemonProcess(work / "d")
        daemon.start()
        ours, theirs = [], []
        for run in range(a.runs):
            for which in (("cri-shim", "baseline") if run % 2 == 0 else ("baseline", "cri-shim")):
                if which == "cri-shim":
                    t = time.perf_counter()
                    req = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
                    image_id = daemon.images.PullImage(req).image_ref
                    ours.append(time.perf_counter() - t)
                    daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
                else:
                    layout, bundle = work / "layout", work / "bundle"
                    t = time.perf_counter()
                    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                                    f"oci:{layout}:latest"], check=True)
                    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
                                   check=True, capture_output=True)
                    theirs.append(time.perf_counter() - t)
                    shutil.rmtree(layout)
                    shutil.rmtree(bundle)
                print(f"run {run + 1} {which:8s} {(ours if which == 'cri-shim' else theirs)[-1]:6.2f} s",
                      flush=True)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        print(f"\nmedian cri-shim {mo:.2f} s   skopeo+umoci {mt:.2f} s   ratio {mo / mt:.2f}x "
              f"({total / 1e6 / mo:.0f} MB/s vs {total / 1e6 / mt:.0f} MB/s)")
    finally:
        if daemon:
            daemon.cleanup()
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
