#!/usr/bin/env python3
"""critest's benchmark operation mix through gRPC, cri-shim beside containerd in one run (issue 11).

    .venv/bin/python hack/bench_cri.py [--cri-shim unix:///run/cri-shim/cri-shim.sock]
        [--containerd unix:///run/containerd/containerd.sock | --no-containerd]
        [-n 100] [--images 50] [--handler runc] [--scale [--scale-pods 100 --scale-per-pod 10]]

Both endpoints must already be running (containerd: ../shared/critest/containerd-up.sh); the
script starts no daemon. The samples alternate between the sides (A B, B A, ...) so noise on a
shared machine hits both alike. Operations, as critest -benchmark (cri-tools v1.36) does them,
one at a time:

- container lifecycle (`-n`): a pod (untimed), then CreateContainer + StartContainer of busybox
  running `top`, ContainerStatus, StopContainer (timeout 60 s; `top` exits on SIGTERM),
  RemoveContainer; the pod is stopped and removed untimed;
- pod lifecycle (`-n`): RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox;
- image cycle (`--images`): PullImage of a 1.5 MB, 2-layer image from the local registry,
  ImageStatus, ListImages, RemoveImage;
- pod + container from scratch (`-n`): RunPodSandbox to a started container (teardown untimed).

Prints median and p95 per operation and each side's median ratio (cri-shim / containerd; < 1:
cri-shim faster), and the RPC floor: an empty call (Version) on each side and on two bare
grpc-python servers the script starts (grpc.aio and the thread-pool server, nothing but
Version): what grpc-python's server costs per call before any work, the cost cri-shim's own
server (cri_shim/server/grpc_server.py) avoids and its `grpc_server = "grpcio"` fallback pays.
`--scale` adds: ListContainers / ListPodSandbox p50/p99 with
`--scale-pods` pods of `--scale-per-pod` containers each (one running `top`, the rest created,
never started; cri-shim runs the runtime's `create` at CreateContainer, so each created one has
its conmon and runtime init, containerd's has no process yet), and before the created ones are
added: the daemon's RSS and PSS at `--scale-pods` pods and memory per running container (daemon
growth plus its monitors: conmon and the pod infra process for cri-shim; containerd-shim-runc-v2
and the pause container for containerd), each side measured alone, then torn down. Benchmarks print; tests
never assert timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cri_shim.config import DEFAULT_SOCKET  # noqa: E402
from cri_shim.criapi import api_pb2 as pb  # noqa: E402
from cri_shim.criapi import api_pb2_grpc  # noqa: E402

IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
PULL_IMAGE = "localhost:5000/k8s-staging-cri-tools/test-image-latest:latest"
STOP_TIMEOUT = 60
CONTAINERD_PIDFILE = Path(os.environ.get("PEERS", "/var/tmp/critest-peers")) / "containerd/containerd.pid"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


@dataclass
class Side:
    name: str
    endpoint: str
    handler: str
    rt: api_pb2_grpc.RuntimeServiceStub
    img: api_pb2_grpc.ImageServiceStub
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, op: str, seconds: float) -> None:
        self.samples.setdefault(op, []).append(seconds * 1000)


def connect(name: str, endpoint: str, handler: str) -> Side | str:
    ch = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 64 << 20)])
    rt = api_pb2_grpc.RuntimeServiceStub(ch)
    try:
        v = rt.Version(pb.VersionRequest(), timeout=5)
    except grpc.RpcError as e:
        return f"{name} at {endpoint}: {e.code().name} {e.details()}"
    print(f"{name}: {v.runtime_name} {v.runtime_version} at {endpoint}")
    return Side(name, endpoint, handler, rt, api_pb2_grpc.ImageServiceStub(ch))


def timed(side: Side, op: str, call: Callable[[], object]) -> object:
    t0 = time.perf_counter()
    r = call()
    side.add(op, time.perf_counter() - t0)
    return r


def pod_config(name: str) -> pb.PodSandboxConfig:
    uid = uuid.uuid4().hex
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="bench-cri", attempt=0),
        linux=pb.LinuxPodSandboxConfig(),
    )


def container_config(name: str) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=IMAGE),
                              command=["top"], linux=pb.LinuxContainerConfig())


def run_pod(side: Side, cfg: pb.PodSandboxConfig) -> str:
    req = pb.RunPodSandboxRequest(config=cfg, runtime_handler=side.handler)
    return side.rt.RunPodSandbox(req).pod_sandbox_id


def drop_pod(side: Side, pod: str) -> None:
    side.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    side.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def ensure_image(side: Side, image: str) -> None:
    if not side.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image))).HasField("image"):
        side.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))


# ------------------------------------------------------------------------------ the samples


def container_lifecycle(side: Side, i: int) -> None:
    cfg = pod_config(f"bench-ctr-pod-{i}-{uuid.uuid4().hex[:6]}")
    pod = run_pod(side, cfg)
    ccfg = container_config(f"bench-ctr-{i}")
    t0 = time.perf_counter()
    cid = timed(side, "CreateContainer", lambda: side.rt.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg))).container_id
    timed(side, "StartContainer", lambda: side.rt.StartContainer(pb.StartContainerRequest(container_id=cid)))
    side.add("CreateContainer + StartContainer", time.perf_counter() - t0)
    timed(side, "ContainerStatus", lambda: side.rt.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid)))
    timed(side, "StopContainer", lambda: side.rt.StopContainer(
        pb.StopContainerRequest(container_id=cid, timeout=STOP_TIMEOUT)))
    timed(side, "RemoveContainer", lambda: side.rt.RemoveContainer(
        pb.RemoveContainerRequest(container_id=cid)))
    side.add("container lifecycle (5 ops)", time.perf_counter() - t0)
    drop_pod(side, pod)


def pod_lifecycle(side: Side, i: int) -> None:
    cfg = pod_config(f"bench-pod-{i}-{uuid.uuid4().hex[:6]}")
    t0 = time.perf_counter()
    pod = timed(side, "RunPodSandbox", lambda: side.rt.RunPodSandbox(
        pb.RunPodSandboxRequest(config=cfg, runtime_handler=side.handler))).pod_sandbox_id
    timed(side, "PodSandboxStatus", lambda: side.rt.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=pod)))
    timed(side, "StopPodSandbox", lambda: side.rt.StopPodSandbox(
        pb.StopPodSandboxRequest(pod_sandbox_id=pod)))
    timed(side, "RemovePodSandbox", lambda: side.rt.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=pod)))
    side.add("pod lifecycle (4 ops)", time.perf_counter() - t0)


def image_cycle(side: Side, i: int) -> None:
    spec = pb.ImageSpec(image=PULL_IMAGE)
    t0 = time.perf_counter()
    ref = timed(side, "PullImage", lambda: side.img.PullImage(pb.PullImageRequest(image=spec))).image_ref
    st = timed(side, "ImageStatus", lambda: side.img.ImageStatus(pb.ImageStatusRequest(image=spec)))
    assert st.HasField("image"), f"{side.name}: pulled image not found"  # type: ignore[attr-defined]
    timed(side, "ListImages", lambda: side.img.ListImages(pb.ListImagesRequest()))
    timed(side, "RemoveImage", lambda: side.img.RemoveImage(
        pb.RemoveImageRequest(image=pb.ImageSpec(image=ref))))
    side.add("image cycle (4 ops)", time.perf_counter() - t0)


def from_scratch(side: Side, i: int) -> None:
    cfg = pod_config(f"bench-scratch-{i}-{uuid.uuid4().hex[:6]}")
    t0 = time.perf_counter()
    pod = run_pod(side, cfg)
    cid = side.rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config("scratch"), sandbox_config=cfg)).container_id
    side.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
    side.add("pod + container from scratch", time.perf_counter() - t0)
    drop_pod(side, pod)


def interleave(sides: list[Side], n: int, sample: Callable[[Side, int], None], label: str) -> None:
    t0 = time.monotonic()
    for i in range(n):
        order = sides if i % 2 == 0 else sides[::-1]
        for s in order:
            sample(s, i)
    print(f"  {label}: {n} samples per side in {time.monotonic() - t0:.0f}s", flush=True)


def empty_call(side: Side, i: int) -> None:
    for _ in range(10):
        timed(side, "Version", lambda: side.rt.Version(pb.VersionRequest()))


# A server with nothing but Version: what grpc-python itself costs per call, for comparison.
BARE_SERVER = """
import asyncio, sys
from concurrent import futures
import grpc
from cri_shim.criapi import api_pb2 as pb, api_pb2_grpc as pbg
reply = pb.VersionResponse(version="0.1.0", runtime_name="bare", runtime_version="0",
                           runtime_api_version="v1")
class Sync(pbg.RuntimeServiceServicer):
    def Version(self, request, context):
        return reply
class Aio(pbg.RuntimeServiceServicer):
    async def Version(self, request, context):
        return reply
async def aio():
    server = grpc.aio.server()
    pbg.add_RuntimeServiceServicer_to_server(Aio(), server)
    server.add_insecure_port("unix:" + sys.argv[2])
    await server.start()
    await server.wait_for_termination()
if sys.argv[1] == "aio":
    asyncio.run(aio())
else:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pbg.add_RuntimeServiceServicer_to_server(Sync(), server)
    server.add_insecure_port("unix:" + sys.argv[2])
    server.start()
    server.wait_for_termination()
"""


def bare_floor(kind: str, calls: int) -> float:
    """Median ms of Version on a bare grpc-python server (`aio` or `sync`) started here."""
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/bare.sock"
        proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, kind, sock],
                                cwd=Path(__file__).resolve().parent.parent)
        try:
            side = None
            deadline = time.monotonic() + 20
            while side is None:
                got = connect(f"bare grpc {kind} server", f"unix://{sock}", "") if Path(sock).exists() else ""
                side = got if isinstance(got, Side) else None
                if side is None and time.monotonic() > deadline:
                    raise SystemExit(f"the bare {kind} server did not start")
                time.sleep(0.05)
            for i in range(max(1, calls // 10)):
                empty_call(side, i)
            return statistics.median(side.samples["Version"])
        finally:
            proc.terminate()
            proc.wait()


# ------------------------------------------------------------------------------ the table

ROWS: list[tuple[str, list[str]]] = [
    ("CreateContainer + StartContainer", ["CreateContainer + StartContainer"]),
    ("  CreateContainer / StartContainer", ["CreateContainer", "StartContainer"]),
    ("ContainerStatus", ["ContainerStatus"]),
    ("StopContainer (`top`, exits on SIGTERM)", ["StopContainer"]),
    ("RemoveContainer", ["RemoveContainer"]),
    ("container lifecycle (5 ops)", ["container lifecycle (5 ops)"]),
    ("PullImage (1.5 MB, 2 layers, localhost)", ["PullImage"]),
    ("ImageStatus / ListImages", ["ImageStatus", "ListImages"]),
    ("RemoveImage", ["RemoveImage"]),
    ("RunPodSandbox", ["RunPodSandbox"]),
    ("PodSandboxStatus", ["PodSandboxStatus"]),
    ("StopPodSandbox", ["StopPodSandbox"]),
    ("RemovePodSandbox", ["RemovePodSandbox"]),
    ("pod lifecycle (4 ops)", ["pod lifecycle (4 ops)"]),
    ("pod + container from scratch", ["pod + container from scratch"]),
    ("Version (an empty call: the RPC floor)", ["Version"]),
]


def fmt(v: float) -> str:
    return f"{v:.2f}" if v < 1 else f"{v:.1f}"


def report(sides: list[Side]) -> None:
    ours = next(s for s in sides if s.name == "cri-shim")
    base = next((s for s in sides if s.name == "containerd"), None)
    print("\nmedian (p95) in ms; ratio = cri-shim median / containerd median")
    print(f"| operation | {' | '.join(s.name for s in sides)} | ratio |")
    print("|---|" + "---:|" * (len(sides) + 1))
    for label, ops in ROWS:
        if not all(op in ours.samples for op in ops):
            continue
        cells = []
        for s in sides:
            cells.append(" / ".join(
                f"{fmt(statistics.median(s.samples[op]))} ({fmt(pct(s.samples[op], 0.95))})" for op in ops))
        ratio = ""
        if base is not None:
            med = statistics.median
            ratio = " / ".join(f"{med(ours.samples[op]) / med(base.samples[op]):.2f}" for op in ops)
        print(f"| {label} | {' | '.join(cells)} | {ratio} |")


# ------------------------------------------------------------------------------ scale


def proc_mem_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def socket_owner(endpoint: str) -> int:
    """The pid of the process listening on a unix socket endpoint (from /proc/net/unix)."""
    path = endpoint.removeprefix("unix://")
    inode = ""
    with open("/proc/net/unix") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path:
                inode = parts[6]
    if not inode:
        raise RuntimeError(f"nobody listens on {path}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    raise RuntimeError(f"no process holds {path}")


def monitors(side: Side) -> list[int]:
    """The per-container / per-pod helper processes of a side (cri-shim: conmon and the pod
    infra processes it started; containerd: its shims and their pause containers)."""
    daemon = socket_owner(side.endpoint)
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        joined = b" ".join(cmd)
        if side.name == "containerd":
            sock = side.endpoint.removeprefix("unix://").encode()
            if b"containerd-shim-runc-v2" in cmd[0] and sock in joined:
                out.append(int(pid))
                out += [int(c) for c in _children(int(pid)) if _comm(c) == "pause"]
        elif cmd[0].endswith(b"conmon") and _state_dir_of(daemon) in joined:
            out.append(int(pid))
        elif _ppid(status) == daemon:
            out.append(int(pid))  # pod infra (namespace pin) processes the daemon started
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            kids += [int(x) for x in f.read().split()]
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ppid(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def _state_dir_of(daemon: int) -> bytes:
    cmd = Path(f"/proc/{daemon}/cmdline").read_bytes().split(b"\0")
    for i, a in enumerate(cmd):
        if a == b"--config" and i + 1 < len(cmd):
            for line in Path(cmd[i + 1].decode()).read_text().splitlines():
                if line.strip().startswith("state_dir"):
                    return line.split("=", 1)[1].strip().strip('"').encode()
    return b"/run/cri-shim"


def mem_total(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for p in pids:
        try:
            r, s = proc_mem_kib(p)
        except OSError:
            continue
        rss += r
        pss += s
    return rss, pss


def scale(side: Side, pods: int, per_pod: int, calls: int) -> None:
    """Two phases: `pods` pods with one running container each (memory: the daemon at that
    many pods, and per running container), then `per_pod - 1` more created (never started)
    containers in each pod (ListContainers / ListPodSandbox latency)."""
    daemon = socket_owner(side.endpoint)
    before_rss, before_pss = proc_mem_kib(daemon)
    before_mon = mem_total(monitors(side))
    t0 = time.monotonic()
    made: list[tuple[str, pb.PodSandboxConfig]] = []
    try:
        for p in range(pods):
            cfg = pod_config(f"bench-scale-{p}-{uuid.uuid4().hex[:6]}")
            pod = run_pod(side, cfg)
            made.append((pod, cfg))
            cid = side.rt.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config("c0"), sandbox_config=cfg)).container_id
            side.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        built = time.monotonic() - t0
        time.sleep(2)  # let allocator caches settle before reading memory
        rss, pss = proc_mem_kib(daemon)
        mon = monitors(side)
        mon_rss, mon_pss = mem_total(mon)
        per_rss = (rss - before_rss + mon_rss - before_mon[0]) / pods
        per_pss = (pss - before_pss + mon_pss - before_mon[1]) / pods
        print(f"{side.name}: {pods} pods with one running container each, built in {built:.0f}s")
        print(f"  daemon RSS {rss / 1024:.1f} MiB (PSS {pss / 1024:.1f}), was {before_rss / 1024:.1f} MiB "
              f"before; {len(mon)} monitor processes RSS {mon_rss / 1024:.1f} MiB (PSS {mon_pss / 1024:.1f})")
        print(f"  per running container (daemon growth + monitors, / {pods}): RSS {per_rss / 1024:.2f} MiB, "
              f"PSS {per_pss / 1024:.2f} MiB")
        t0 = time.monotonic()
        for pod, cfg in made:
            for c in range(1, per_pod):
                side.rt.CreateContainer(pb.CreateContainerRequest(
                    pod_sandbox_id=pod, config=container_config(f"c{c}"), sandbox_config=cfg))
        n = len(side.rt.ListContainers(pb.ListContainersRequest()).containers)
        lc: list[float] = []
        lp: list[float] = []
        for _ in range(calls):
            t = time.perf_counter()
            side.rt.ListContainers(pb.ListContainersRequest())
            lc.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            side.rt.ListPodSandbox(pb.ListPodSandboxRequest())
            lp.append((time.perf_counter() - t) * 1000)
        rss2, pss2 = proc_mem_kib(daemon)
        print(f"  + {n - pods} created containers ({n} in all) in {time.monotonic() - t0:.0f}s; daemon RSS "
              f"{rss2 / 1024:.1f} MiB (PSS {pss2 / 1024:.1f})")
        print(f"  ListContainers p50 {pct(lc, 0.5):.2f} ms  p99 {pct(lc, 0.99):.2f} ms   "
              f"ListPodSandbox p50 {pct(lp, 0.5):.2f} ms  p99 {pct(lp, 0.99):.2f} ms  ({calls} calls each)")
    finally:
        for pod, _ in made:
            try:
                drop_pod(side, pod)
            except grpc.RpcError as e:
                print(f"  cleanup of pod {pod}: {e.code().name} {e.details()}")


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cri-shim", default=f"unix://{DEFAULT_SOCKET}")
    ap.add_argument("--containerd", default="unix:///run/containerd/containerd.sock")
    ap.add_argument("--no-containerd", action="store_true", help="measure cri-shim alone")
    ap.add_argument("--handler", default="", help="cri-shim's runtime handler (default: its default, runc)")
    ap.add_argument("-n", type=int, default=100, help="container and pod lifecycles per side")
    ap.add_argument("--images", type=int, default=50, help="image pull cycles per side")
    ap.add_argument("--only", default="", help="comma list of: containers,pods,images,scratch,floor")
    ap.add_argument("--scale", action="store_true", help="also the scale figures (slow)")
    ap.add_argument("--scale-only", action="store_true", help="only the scale figures")
    ap.add_argument("--scale-pods", type=int, default=100)
    ap.add_argument("--scale-per-pod", type=int, default=10)
    ap.add_argument("--scale-calls", type=int, default=200)
    a = ap.parse_args()
    wanted = [("cri-shim", a.cri_shim, a.handler)]
    if not a.no_containerd:
        wanted.append(("containerd", a.containerd, ""))
    sides: list[Side] = []
    for name, ep, handler in wanted:
        got = connect(name, ep, handler)
        if isinstance(got, str):
            print(f"skipped: {got}")
        else:
            sides.append(got)
    if not any(s.name == "cri-shim" for s in sides):
        sys.exit("cri-shim does not answer")
    for s in sides:
        ensure_image(s, IMAGE)
    if not a.scale_only:
        only = set(a.only.split(",")) if a.only else {"containers", "pods", "images", "scratch", "floor"}
        # One warm-up of each kind, not recorded.
        for s in sides:
            for fn in (container_lifecycle, pod_lifecycle, image_cycle, from_scratch):
                fn(s, -1)
            s.samples.clear()
        if "containers" in only:
            interleave(sides, a.n, container_lifecycle, "container lifecycles")
        if "pods" in only:
            interleave(sides, a.n, pod_lifecycle, "pod lifecycles")
        if "images" in only:
            interleave(sides, a.images, image_cycle, "image cycles")
        if "scratch" in only:
            interleave(sides, a.n, from_scratch, "pod + container from scratch")
        if "floor" in only:
            interleave(sides, a.n * 2, empty_call, "empty calls (Version x10)")
        report(sides)
        if "floor" in only:
            bare = {kind: bare_floor(kind, a.n * 20) for kind in ("aio", "sync")}
            print(f"\nthe same Version call on a bare grpc-python {grpc.__version__} server (no interceptor, "
                  f"no handler work), started here: grpc.aio {fmt(bare['aio'])} ms, "
                  f"sync (thread pool) {fmt(bare['sync'])} ms")
    if a.scale or a.scale_only:
        print()
        for s in sides:
            scale(s, a.scale_pods, a.scale_per_pod, a.scale_calls)


if __name__ == "__main__":
    main()
