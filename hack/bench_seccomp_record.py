#!/usr/bin/env python3
"""Benchmark: the seccomp recorder's tracing overhead, and the size of what it records.

    .venv/bin/python hack/bench_seccomp_record.py [--handlers pyrunc,runc] [-n 3] [--requests 200]
        [--loops 200]

A real daemon on a temp socket, a private CNI bridge network, busybox from a local registry.
For each handler, each workload runs `-n` times untraced and `-n` times recorded
(seccomp-recorder.cri-shim.io/profile), alternating:

- script: a busybox shell loop (`--loops` iterations of echo > file, cat, a subshell), timed
  from the container's started_at to its finished_at (both from the daemon: the start is taken
  after the tracer has attached, the end is conmon's exit time);
- httpd: busybox httpd (PID 1 of its container, recorded or not) serves `--requests` GETs to
  wget in a second, untraced container of the pod (over the pod's loopback); timed as the
  ExecSync of the request loop. httpd forks a child per connection, so every request is traced;
- attach: StartContainer's own time, traced vs untraced (the tracer's start and its attach).

Prints each workload's median wall time traced and untraced and their ratio, then the recorded
profiles' allow-list sizes beside RuntimeDefault's (every x86_64 call python-ptrace's table and
the unified numbers name, minus the calls it denies to a container without extra capabilities).
Benchmarks print; tests never assert timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a script under hack/: the tests package is not installed

from cri_shim.containers.seccomp_profiles import runtime_default  # noqa: E402
from cri_shim.criapi import api_pb2 as pb  # noqa: E402
from cri_shim.seccomp_recorder import profile, syscall_names  # noqa: E402
from cri_shim.seccomp_recorder.annotation import ANNOTATION  # noqa: E402
from tests.e2e.daemon import DaemonProcess  # noqa: E402
from tests.support import testimages  # noqa: E402
from tests.support.cni import write_bridge_network  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

SERVE = ("mkdir -p /tmp/www && echo hello > /tmp/www/index.html && "
         "exec httpd -f -p 127.0.0.1:8080 -h /tmp/www")


def script(loops: int) -> str:
    return (f"i=0; while [ $i -lt {loops} ]; do i=$((i+1)); echo $i > /tmp/f; cat /tmp/f > /dev/null; "
            "(true); done; echo done")


def runtime_default_allowed() -> int:
    denied: set[str] = set()
    for rule in runtime_default([]).syscalls or []:
        denied.update(rule.names)
    return len(syscall_names.all_names(syscall_names.AUDIT_ARCH_X86_64) - denied)


def wait_listening(pid: int, port: int) -> None:
    want = f":{port:04X}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[1].endswith(want) and f[3] == "0A":
                return
        time.sleep(0.01)
    raise RuntimeError(f"httpd (pid {pid}) never listened")


def bench_handler(d: DaemonProcess, image: str, handler: str, a: argparse.Namespace, logs: Path,
                  results: dict[str, dict[str, list[float]]]) -> None:
    rt = d.runtime
    pcfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"bench-{handler}", namespace="bench", uid=uuid.uuid4().hex),
        log_directory=str(logs))
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pcfg, runtime_handler=handler)).pod_sandbox_id
    seq = 0

    def add(what: str, key: str, seconds: float) -> None:
        results.setdefault(f"{handler} {what}", {}).setdefault(key, []).append(seconds)

    def create(command: list[str], record: str) -> str:
        nonlocal seq
        seq += 1
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=f"c{seq}"),
                                 image=pb.ImageSpec(image=image), command=command, log_path=f"c{seq}.log")
        if record:
            cfg.annotations[ANNOTATION] = f"of:{record}"
        return rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=cfg, sandbox_config=pcfg)).container_id

    def start(cid: str, key: str) -> None:
        t0 = time.perf_counter()
        rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        add("attach (StartContainer)", key, time.perf_counter() - t0)

    def status(cid: str, verbose: bool = False) -> pb.ContainerStatusResponse:
        return rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=verbose))

    def finish(cid: str) -> pb.ContainerStatus:
        rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
        st = status(cid).status
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        return st

    client = create(["sleep", "3600"], "")
    rt.StartContainer(pb.StartContainerRequest(container_id=client))
    loop = (f"i=0; while [ $i -lt {a.requests} ]; do i=$((i+1)); "
            "wget -q -O /dev/null http://127.0.0.1:8080/index.html || exit 1; done")
    for _ in range(a.n):
        for key in ("untraced", "traced"):
            cid = create(["sh", "-c", script(a.loops)], f"script-{handler}.json" if key == "traced" else "")
            start(cid, key)
            while status(cid).status.state != pb.CONTAINER_EXITED:
                time.sleep(0.01)
            st = finish(cid)
            assert st.exit_code == 0, st
            add(f"script ({a.loops} loops)", key, (st.finished_at - st.started_at) / 1e9)
            cid = create(["sh", "-c", SERVE], f"httpd-{handler}.json" if key == "traced" else "")
            start(cid, key)
            wait_listening(int(json.loads(status(cid, True).info["info"])["pid"]), 8080)
            t0 = time.perf_counter()
            got = rt.ExecSync(pb.ExecSyncRequest(container_id=client, cmd=["sh", "-c", loop], timeout=300))
            add(f"httpd ({a.requests} requests)", key, time.perf_counter() - t0)
            assert got.exit_code == 0, got
            finish(cid)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--handlers", default="pyrunc,runc")
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--loops", type=int, default=200)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-seccomp-"))
    bridge = f"cshs{uuid.uuid4().hex[:6]}"
    write_bridge_network(work / "net.d", "bench", bridge, "10.252.0.0/16", work / "ipam")
    recordings = work / "recordings"
    reg = start_registry(work / "registry")
    (work / "d").mkdir()
    d = DaemonProcess(work / "d", f'[cni]\nconf_dir = "{work / "net.d"}"\nbin_dirs = ["/usr/lib/cni"]\n'
                                  f'[seccomp]\nrecorder_dir = "{recordings}"\n')
    results: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, int] = {}
    try:
        testimages.push_standard(reg.host)
        image = reg.image("busybox:latest")
        d.start()
        d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
        for handler in a.handlers.split(","):
            bench_handler(d, image, handler, a, work / "logs", results)
            for name in (f"script-{handler}.json", f"httpd-{handler}.json"):
                sizes[name] = len(profile.allowed(json.loads((recordings / name).read_text())))
    finally:
        d.cleanup()
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nseccomp recorder overhead (median of {a.n}; this machine: 2 cores, shared)")
    print(f"{'workload':40} {'untraced':>10} {'traced':>10} {'ratio':>7}")
    for name, by in results.items():
        u, t = statistics.median(by["untraced"]), statistics.median(by["traced"])
        print(f"{name:40} {u * 1000:8.0f}ms {t * 1000:8.0f}ms {t / u:6.2f}x")
    print(f"\nprofile sizes (allowed calls); RuntimeDefault allows {runtime_default_allowed()} "
          "(every named x86_64 call minus its deny list)")
    for name, n in sizes.items():
        print(f"  {name:28} {n:4d}")


if __name__ == "__main__":
    main()
