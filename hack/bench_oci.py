#!/usr/bin/env python3
"""Benchmark the OCI backends: create + start + wait + delete of a container running `true`.

    sudo .venv/bin/python hack/bench_oci.py [--runs 20] [--backends runc,crun,pyrunc]

Runs are interleaved (round-robin, rotating the order each round) so drift on the machine hits
every backend alike. Each runtime command is spawned directly and reaped with wait4, so the
peak RSS is that of the runtime's own processes (create, start, delete, and the container init,
which is the runtime until it execs `true`); the adapter's Python overhead is not counted.
Each round also times each runtime's bare process start, so the table can show what a cycle costs
beyond the three starts it cannot avoid.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oci.builder import SpecBuilder  # noqa: E402
from tests.conformance.rootfs import build_busybox_rootfs  # noqa: E402

CGROUP_PARENT = "cri-shim-bench"


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    peak_rss_kib: list[int] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    process_start: list[float] = field(default_factory=list)


def start_probe(name: str, binary: str) -> list[str]:
    """The command that only starts the runtime's process and ends: `--version` for the Go and
    C runtimes; for pyrunc its launcher's interpreter doing nothing (`-c pass`), the floor of
    every pyrunc command."""
    if name != "pyrunc":
        return [binary, "--version"]
    with open(binary) as f:
        shebang = f.readline()[2:].split()
    return [*shebang, "-c", "pass"]


def time_cmd(argv: list[str]) -> float:
    t0 = time.perf_counter()
    run_cmd(argv)
    return time.perf_counter() - t0


def find_binary(name: str) -> str | None:
    if name == "pyrunc":
        venv = Path(sys.executable).parent / "pyrunc"
        return str(venv) if venv.exists() else shutil.which("pyrunc")
    return shutil.which(name)


GNU_TIME = "/usr/bin/time"
_RSS_FILE = Path(tempfile.gettempdir()) / f"bench-oci-rss-{os.getpid()}"


def run_cmd(argv: list[str]) -> tuple[int, int]:
    """Run to completion; return (exit status, max RSS in KiB).

    A process forked from this (large) Python process keeps its high-water RSS across exec, so
    wait4 on it would report Python's size. GNU time forks the runtime from a small process and
    reports the runtime's own peak.
    """
    timed = os.path.exists(GNU_TIME)
    cmd = [GNU_TIME, "-f", "%M", "-o", str(_RSS_FILE), *argv] if timed else argv
    # stderr to a file, not a pipe: `create` hands its stdio to the container, which would hold
    # a pipe open and make us wait for EOF until the container exits
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err.read().decode().strip()}")
    rss = int(_RSS_FILE.read_text().split()[-1]) if timed else 0
    return proc.returncode, rss


PHASES = ("create", "start", "wait", "delete")


def one_cycle(binary: str, root: Path, bundle: Path, phases: dict[str, list[float]] | None = None,
              ) -> tuple[float, int]:
    cid = f"bench-{uuid.uuid4().hex[:10]}"
    base = [binary, "--root", str(root)]
    pid_file = bundle / f"{cid}.pid"
    t0 = time.perf_counter()
    _, rss_create = run_cmd(base + ["create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid])
    init_pid = int(pid_file.read_text())
    t1 = time.perf_counter()
    _, rss_start = run_cmd(base + ["start", cid])
    t2 = time.perf_counter()
    try:
        _, _, init_usage = os.wait4(init_pid, 0)  # we are the subreaper: the init is ours to reap
        rss_init = init_usage.ru_maxrss
    except ChildProcessError:  # runtime kept the init under its own monitor
        while Path(f"/proc/{init_pid}").exists():
            time.sleep(0.001)
        rss_init = 0
    t3 = time.perf_counter()
    _, rss_delete = run_cmd(base + ["delete", cid])
    t4 = time.perf_counter()
    wall = t4 - t0
    if phases is not None:
        for name, took in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            phases.setdefault(name, []).append(took)
    pid_file.unlink(missing_ok=True)
    return wall, max(rss_create, rss_start, rss_init, rss_delete)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--backends", default="runc,crun,pyrunc")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates real containers)", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: container inits re-parent to us

    backends: dict[str, str] = {}
    for name in args.backends.split(","):
        binary = find_binary(name)
        probe = subprocess.run([binary, "--version"], capture_output=True) if binary else None
        if binary is None or probe is None or probe.returncode != 0:
            print(f"{name}: not available, left out")
            continue
        backends[name] = binary
    if not backends:
        return 1

    work = Path(tempfile.mkdtemp(prefix="bench-oci-"))
    try:
        rootfs = build_busybox_rootfs(work / "rootfs-template")
        bundles: dict[str, Path] = {}
        for name in backends:
            bundle = work / f"bundle-{name}"
            bundle.mkdir()
            shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
            (SpecBuilder().args("true").rootfs("rootfs").cgroups_path(f"/{CGROUP_PARENT}/{name}")
             .build().save(bundle / "config.json"))
            bundles[name] = bundle
            one_cycle(backends[name], work / f"root-{name}", bundle)  # warm-up: page cache, cgroup parents
        samples = {name: Samples() for name in backends}
        order = list(backends)
        for i in range(args.runs):
            rotated = order[i % len(order):] + order[: i % len(order)]
            for name in rotated:
                wall, rss = one_cycle(backends[name], work / f"root-{name}", bundles[name],
                                      samples[name].phases)
                samples[name].wall.append(wall)
                samples[name].peak_rss_kib.append(rss)
                samples[name].process_start.append(time_cmd(start_probe(name, backends[name])))
    finally:
        for name, binary in backends.items():  # a failed run must not leave containers behind
            root = work / f"root-{name}"
            if root.exists():
                base = [binary, "--root", str(root)]
                ids = subprocess.run([*base, "list", "-q"], capture_output=True, text=True)
                for cid in ids.stdout.split():
                    subprocess.run([*base, "delete", "--force", cid], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        _RSS_FILE.unlink(missing_ok=True)
        # the parent sits at the top of each hierarchy (cgroupsPath /cri-shim-bench/<backend>);
        # a recursive glob would walk other processes' cgroups, which vanish under it
        top = Path("/sys/fs/cgroup")
        for d in [top / CGROUP_PARENT] + [m / CGROUP_PARENT for m in top.iterdir() if m.is_dir()]:
            if not d.is_dir():
                continue
            for child in sorted(d.glob("*"), reverse=True):
                if child.is_dir():
                    try:
                        child.rmdir()
                    except OSError:
                        pass
            try:
                d.rmdir()
            except OSError:
                pass

    ref = statistics.median(samples["runc"].wall) if "runc" in samples else None
    ref_rss = max(samples["runc"].peak_rss_kib) if "runc" in samples else None
    print(f"\ncreate+start+wait+delete of `true`, {args.runs} interleaved runs per backend")
    print(f"{'backend':<8} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'x runc':>7} "
          f"{'peak RSS MiB':>13} {'x runc':>7}")
    for name, s in samples.items():
        med = statistics.median(s.wall)
        peak = max(s.peak_rss_kib)
        ratio = f"{med / ref:.2f}" if ref else "-"
        rss_ratio = f"{peak / ref_rss:.2f}" if ref_rss else "-"
        print(f"{name:<8} {med * 1000:>10.1f} {min(s.wall) * 1000:>8.1f} {max(s.wall) * 1000:>8.1f} "
              f"{ratio:>7} {peak / 1024:>13.1f} {rss_ratio:>7}")
    print("\nmedian ms per command (wait: from start's return to the init's exit)")
    print(f"{'backend':<8} " + " ".join(f"{p:>8}" for p in PHASES))
    for name, s in samples.items():
        print(f"{name:<8} " + " ".join(f"{statistics.median(s.phases[p]) * 1000:>8.1f}" for p in PHASES))
    print("\nprocess start alone, spawned the same way (runc, crun: --version; pyrunc: its interpreter"
          " running `pass`),\nand the cycle's time beyond its three runtime starts (create, start, delete)")
    print(f"{'backend':<8} {'start ms':>9} {'cycle - 3 starts':>17}")
    for name, s in samples.items():
        start = statistics.median(s.process_start)
        print(f"{name:<8} {start * 1000:>9.1f} {(statistics.median(s.wall) - 3 * start) * 1000:>17.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
