#!/usr/bin/env python3
"""Benchmark: RunPodSandbox -> started container, per backend; ListContainers with 200 containers.

    .venv/bin/python hack/bench_pods.py [--pods 20] [--backends runc,crun,pyrunc] [--containers 200]

A real daemon on a temp socket, a private CNI bridge network, busybox from a local registry.
For each backend, `--pods` pods are started one after another; each sample is the wall time
from RunPodSandbox to StartContainer returning for one `sleep` container. Then `--containers`
containers (runc) are kept running and ListContainers is timed over 200 calls.
Prints p50/p95 per backend and the ratio of each backend's p50 to runc's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a script under hack/: the tests package is not installed

from cri_shim.criapi import api_pb2 as pb  # noqa: E402
from tests.e2e.daemon import DaemonProcess  # noqa: E402
from tests.support import testimages  # noqa: E402
from tests.support.cni import write_bridge_network  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def pod_config(name: str) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="bench", uid=name),
                              hostname=name)
    cfg.linux.security_context.namespace_options.pid = pb.CONTAINER
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--backends", default="runc,crun,pyrunc")
    ap.add_argument("--containers", type=int, default=200)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    bridge = f"cshb{uuid.uuid4().hex[:6]}"
    write_bridge_network(work / "net.d", "bench", bridge, "10.253.0.0/16", work / "ipam")
    reg = start_registry(work / "registry")
    (work / "d").mkdir()
    d = DaemonProcess(work / "d", f'[cni]\nconf_dir = "{work / "net.d"}"\nbin_dirs = ["/usr/lib/cni"]\n')
    try:
        testimages.push_standard(reg.host)
        image = reg.image("busybox:latest")
        d.start()
        d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
        rt = d.runtime

        def create(pod: str, cfg: pb.PodSandboxConfig, name: str) -> str:
            ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                      image=pb.ImageSpec(image=image), command=["sleep", "3600"])
            req = pb.CreateContainerRequest(pod_sandbox_id=pod, sandbox_config=cfg, config=ccfg)
            return rt.CreateContainer(req).container_id

        def start_pod(name: str, handler: str) -> tuple[str, float]:
            cfg = pod_config(name)
            t = time.perf_counter()
            req = pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler)
            pod = rt.RunPodSandbox(req).pod_sandbox_id
            cid = create(pod, cfg, "c")
            rt.StartContainer(pb.StartContainerRequest(container_id=cid))
            return pod, time.perf_counter() - t

        results: dict[str, list[float]] = {}
        backends = a.backends.split(",")
        for i in range(a.pods):  # interleaved so machine drift hits every backend alike
            for b in backends:
                pod, dt = start_pod(f"{b}-{i}", b)
                results.setdefault(b, []).append(dt)
                rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
        base = statistics.median(results.get("runc") or next(iter(results.values())))
        print(f"RunPodSandbox -> container started, {a.pods} pods per backend")
        for b, xs in results.items():
            p50 = statistics.median(xs)
            print(f"  {b:7s} p50 {p50 * 1000:7.1f} ms   p95 {pct(xs, 0.95) * 1000:7.1f} ms   "
                  f"ratio to runc {p50 / base:.2f}x")

        print(f"starting {a.containers} containers for the ListContainers measurement ...", flush=True)
        per_pod = 20
        pods = []
        for p in range(-(-a.containers // per_pod)):
            cfg = pod_config(f"many-{p}")
            pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
            pods.append(pod)
            for c in range(min(per_pod, a.containers - p * per_pod)):
                cid = create(pod, cfg, f"c{c}")
                rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        lat = []
        for _ in range(200):
            t = time.perf_counter()
            n = len(rt.ListContainers(pb.ListContainersRequest()).containers)
            lat.append(time.perf_counter() - t)
        assert n == a.containers, n
        print(f"ListContainers with {n} containers: p50 {statistics.median(lat) * 1000:.2f} ms   "
              f"p95 {pct(lat, 0.95) * 1000:.2f} ms")
        for pod in pods:
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        d.cleanup()
        reg.stop()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
