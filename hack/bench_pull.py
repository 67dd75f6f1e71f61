#!/usr/bin/env python3
"""Benchmark: cold image pulls of real size, cri-shim beside containerd 1.6, in one run.

    .venv/bin/python hack/bench_pull.py [--runs 3] [--no-containerd] [--fs ext4|host] [--huge-mib N] [--keep]

Builds the images itself (seeded random data, nothing downloaded), pushes them to a
Debian docker-registry it starts on 127.0.0.1:5055, starts a cri-shim daemon of its own
(everything under --dir, default /var/lib/cri-shim-bench/pull: socket, state, root, a CNI conf dir with bridge
crishimbp0 on 10.92.0.0/16) and a containerd (../shared/critest/containerd-up.sh, only if
none is running; stopped again only if this script started it), then pulls, cold (the image
removed after each pull, so its blobs and snapshots go too; then a pause and a sync so that
no deletion is still running when the next pull is timed), interleaving the two sides:

  large-gzip   6 layers x 50 files of 1 MiB (half random, half text): ~26 MB gzip each,
               300 MiB unpacked
  large-zstd   the same layers, zstd (application/vnd.oci.image.layer.v1.tar+zstd)
  small-files  2 layers x 10,000 files of ~3 KB in 100 directories (59 MB unpacked)
  5x large     5 concurrent cold pulls of large-gzip (one download expected)
  large+small  large-gzip and small-files pulled at the same time (do they starve?):
               the time until both are done, and each one's own time in the detail lines
  huge-gzip    with --huge-mib N: one layer of N files of 1 MiB (does memory grow with it?)

Both sides are driven through the same CRI gRPC client (runtime.v1 ImageService).

`--fs ext4` (the default) first mounts a fresh ext4 made with mkfs.ext4's defaults (so with a
journal, as on any node) from a sparse file beside --dir, keeps everything there, and removes
it at the end; `--fs host` uses --dir as it is. The reason: an ext4 *without* a journal (this
kind of sandbox's root) refuses to reuse an inode freed in the last 60-360 s and scans past
every one of them on each create, so a remove-then-pull-again loop measures the file
system's recent history more than the pull (a 20,000-file pull varied 1.8-11.8 s there).

Prints every run, then a table of medians with the ratio cri-shim / containerd (< 1: cri-shim
is faster) and each daemon's peak RSS above its idle RSS during the pulls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a script under hack/: the tests package is not installed

from cri_shim.criapi import api_pb2 as pb  # noqa: E402
from cri_shim.criapi import api_pb2_grpc  # noqa: E402
from tests.support import testimages  # noqa: E402
from tests.support.cni import write_bridge_network  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

# Where both daemons keep their images. On a node that is /var/lib; on this kind of sandbox
# /tmp and /var/tmp cost 10-50x more per file created than the rest of the same ext4 file
# system (a monitor on those trees, it seems), which swamps a many-small-files pull: so not
# there. `file_create_cost` prints what each directory costs.
BASE = Path("/var/lib/cri-shim-bench/pull")
PORT = 5055
CRITEST = ROOT.parent / "shared" / "critest"
CONTAINERD_SOCK = "/run/containerd/containerd.sock"
BRIDGE = "crishimbp0"


# --- images --------------------------------------------------------------------------------------

def large_layer(i: int, files: int = 50) -> bytes:
    rnd = random.Random(1000 + i)
    t = testimages.TarBuilder().dir(f"big{i}")
    for j in range(files):
        half = 512 << 10
        text = (b"layer %d file %d: the quick brown fox jumps over the lazy dog\n" % (i, j)) * 9000
        t.file(f"big{i}/f{j:02d}", rnd.randbytes(half) + text[:half])
    return t.bytes()


def small_layer(i: int) -> bytes:
    rnd = random.Random(2000 + i)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"kube", b"node", b"pod", b"image", b"layer", b"shim"]
    t = testimages.TarBuilder().dir(f"small{i}")
    for d in range(100):
        t.dir(f"small{i}/d{d:02d}")
        for f in range(100):
            body = b" ".join(rnd.choice(words) for _ in range(420))[:2900 + rnd.randrange(200)]
            t.file(f"small{i}/d{d:02d}/f{f:02d}.txt", body)
    return t.bytes()


def build_and_push(host: str, huge_mib: int = 0) -> dict[str, str]:
    """Push the images (a registry that already has them skips the blobs); return name -> ref."""
    p = testimages.Pusher(host)
    t = time.perf_counter()
    big = [large_layer(i) for i in range(6)]
    small = [small_layer(i) for i in range(2)]
    with ThreadPoolExecutor(2) as ex:  # gzip and zstd release the GIL
        gz = list(ex.map(lambda b: testimages.Layer(b, level=1), big))
        zs = list(ex.map(lambda b: testimages.Layer(b, zstd=True), big))
        sm = list(ex.map(lambda b: testimages.Layer(b, level=6), small))
        for layer in gz + zs + sm:
            ex.submit(lambda x: x.blob, layer)
    p.image("bench/large", "gzip", gz)
    p.image("bench/large", "zstd", zs)
    p.image("bench/small", "gzip", sm)
    print(f"images built and pushed in {time.perf_counter() - t:.1f} s: "
          f"large {sum(len(x.blob) for x in gz) / 1e6:.0f} MB gzip / "
          f"{sum(len(x.blob) for x in zs) / 1e6:.0f} MB "
          f"zstd / {sum(len(x.tar) for x in gz) / 1e6:.0f} MB unpacked; small "
          f"{sum(len(x.blob) for x in sm) / 1e6:.1f} MB gzip / {sum(len(x.tar) for x in sm) / 1e6:.0f} MB "
          "unpacked, 20,000 files", flush=True)
    refs = {"large-gzip": f"{host}/bench/large:gzip", "large-zstd": f"{host}/bench/large:zstd",
            "small-files": f"{host}/bench/small:gzip"}
    if huge_mib:
        huge = testimages.Layer(large_layer(99, huge_mib), level=1)
        p.image("bench/huge", f"gzip-{huge_mib}m", [huge])
        refs["huge-gzip"] = f"{host}/bench/huge:gzip-{huge_mib}m"
        print(f"huge: one layer of {len(huge.tar) >> 20} MiB unpacked, {len(huge.blob) / 1e6:.0f} MB gzip",
              flush=True)
    return refs


# --- the two daemons -----------------------------------------------------------------------------

class Side:
    def __init__(self, name: str, endpoint: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.channel = grpc.insecure_channel(endpoint)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)

    def pull(self, ref: str) -> float:
        t = time.perf_counter()
        self.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=600)
        return time.perf_counter() - t

    def remove(self, ref: str) -> None:
        self.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
        return 0


class RssPeak:
    """Samples a process's RSS every 10 ms while a block runs."""

    def __init__(self, side: Side) -> None:
        self.side, self.peak, self._stop = side, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.side.rss())
            time.sleep(0.01)

    def __enter__(self) -> RssPeak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def start_cri_shim(host: str) -> tuple[subprocess.Popen[bytes], Side]:
    for d in ("root", "state"):
        shutil.rmtree(BASE / d, ignore_errors=True)
    write_bridge_network(BASE / "net.d", "bench-pull", BRIDGE, "10.92.0.0/16", BASE / "cni-ipam")
    sock = BASE / "cri.sock"
    (BASE / "config.toml").write_text(
        f'socket = "{sock}"\nstate_dir = "{BASE}/state"\nroot_dir = "{BASE}/root"\n'
        f'[cni]\nconf_dir = "{BASE}/net.d"\nbin_dirs = ["/usr/lib/cni"]\n'
        f'[images]\ninsecure_registries = ["{host}"]\n')
    log = open(BASE / "cri-shim.log", "ab")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    argv = [sys.executable, "-m", "cri_shim", "serve", "--config", str(BASE / "config.toml")]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=ROOT, env=env)
    log.close()
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"cri-shim did not start; see {BASE / 'cri-shim.log'}")
        time.sleep(0.05)
    return proc, Side("cri-shim", f"unix:{sock}", proc.pid)


def containerd_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "containerd"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def start_containerd(host: str) -> tuple[bool, Side]:
    """(whether this script started it, the side). An already running one is used as it is."""
    started = False
    pid = containerd_pid()
    cdir = Path(os.environ.get("CRITEST_CONTAINERD_DIR", "/var/tmp/critest-peers/containerd"))
    if pid is None:
        subprocess.run([str(CRITEST / "containerd-up.sh")], check=True)
        started, pid = True, containerd_pid()
        assert pid is not None
    else:
        print(f"containerd already running (pid {pid}): using it, leaving it running", flush=True)
        conf = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--config" in conf:
            cdir = Path(conf[conf.index(b"--config") + 1].decode()).parent
    # The registry over plain http (hosts.toml is read on every pull; no restart needed).
    hd = cdir / "certs.d" / host
    hd.mkdir(parents=True, exist_ok=True)
    (hd / "hosts.toml").write_text(f'server = "http://{host}"\n[host."http://{host}"]\n'
                                   '  capabilities = ["pull", "resolve"]\n')
    return started, Side("containerd", f"unix://{CONTAINERD_SOCK}", pid)


# --- measuring ---------------------------------------------------------------------------------

Scenario = Callable[[Side], list[float]]  # one cold run: [wall time, detail...]


def single(ref: str) -> Scenario:
    def run(side: Side) -> list[float]:
        t = side.pull(ref)
        side.remove(ref)
        return [t]
    return run


def concurrent(refs: list[str]) -> Scenario:
    def run(side: Side) -> list[float]:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(refs)) as ex:
            each = list(ex.map(side.pull, refs))
        wall = time.perf_counter() - t0
        for ref in dict.fromkeys(refs):
            side.remove(ref)
        return [wall, *each]
    return run


def settle() -> None:
    """Let the last run's removal finish on disk before the next pull is timed: containerd
    removes snapshots in the background after RemoveImage returns, cri-shim before, so
    without this one side's pull pays for the other's deletes."""
    time.sleep(1.0)
    os.sync()
    time.sleep(0.5)


def file_create_cost(where: Path, n: int = 500) -> float:
    """Microseconds to create, write (3 KB) and close one file in a fresh directory under where."""
    d = Path(tempfile.mkdtemp(prefix="create-cost-", dir=where))
    try:
        data = b"x" * 3000
        t0 = time.perf_counter()
        for i in range(n):
            fd = os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.close(fd)
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def journaled_ext4(where: Path, size_gib: int = 8) -> Iterator[None]:
    """A fresh ext4 (mkfs defaults: with a journal) from a sparse file, mounted on where."""
    image = where.with_name(where.name + ".ext4")
    where.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(where):
        subprocess.run(["umount", "-l", str(where)], check=True)
    with open(image, "wb") as f:
        f.truncate(size_gib << 30)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
        try:
            yield
        finally:
            if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], check=False)
    finally:
        image.unlink(missing_ok=True)


def journal_state(where: Path) -> str:
    dev = os.stat(where).st_dev
    name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name
    opts = Path(f"/proc/fs/ext4/{name}/options")
    if not opts.exists():
        return "not ext4"
    journaled = Path("/proc/fs/jbd2").exists() and any(
        p.name.startswith(f"{name}-") for p in Path("/proc/fs/jbd2").iterdir())
    return f"ext4 on {name}, {'with' if journaled else 'WITHOUT'} a journal"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-containerd", action="store_true", help="measure cri-shim alone")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--keep", action="store_true", help="leave cri-shim and the registry running")
    ap.add_argument("--dir", type=Path, default=BASE,
                    help="where cri-shim's (and a containerd started here: <dir>/containerd) state goes")
    ap.add_argument("--huge-mib", type=int, default=0,
                    help="also pull an image of one layer this large (MiB unpacked; bounded memory?)")
    ap.add_argument("--fs", choices=("ext4", "host"), default="ext4",
                    help="ext4: a fresh journaled ext4 mounted on --dir for the run; host: --dir as it is")
    a = ap.parse_args()
    if a.fs == "ext4" and a.keep:
        ap.error("--keep needs --fs host (the fresh file system goes away at the end)")
    if a.fs == "host":
        run(a)
        return
    with journaled_ext4(a.dir):
        run(a)


def run(a: argparse.Namespace) -> None:
    global BASE
    BASE = a.dir
    BASE.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CRITEST_CONTAINERD_DIR", str(BASE / "containerd"))
    cost = file_create_cost(BASE)
    print(f"{BASE}: {journal_state(BASE)}; file creation there: {cost:.0f} us per 3 KB file", flush=True)
    reg = Registry(BASE / "registry", PORT)
    reg.start()
    proc = None
    started_containerd = False
    try:
        refs = build_and_push(reg.host, a.huge_mib)
        proc, ours = start_cri_shim(reg.host)
        sides = [ours]
        if not a.no_containerd:
            started_containerd, theirs = start_containerd(reg.host)
            sides.append(theirs)
        lg, sm = refs["large-gzip"], refs["small-files"]
        scenarios: dict[str, Scenario] = {
            "large-gzip": single(lg), "large-zstd": single(refs["large-zstd"]), "small-files": single(sm),
            "5x large-gzip": concurrent([lg] * 5), "large+small": concurrent([lg, sm]),
        }
        if "huge-gzip" in refs:
            scenarios["huge-gzip"] = single(refs["huge-gzip"])
        if a.only:
            scenarios = {k: v for k, v in scenarios.items() if k in a.only.split(",")}
        idle = {s.name: s.rss() for s in sides}
        peak = {s.name: 0 for s in sides}
        peaks: dict[tuple[str, str], int] = {}  # (scenario, side) -> its own peak
        results: dict[tuple[str, str], list[list[float]]] = {}
        try:
            for name, scen in scenarios.items():
                for s in sides:  # warm-up: first-use costs (connections, imports) are not pulls
                    scen(s)
                for run in range(a.runs):
                    for s in (sides if run % 2 == 0 else list(reversed(sides))):
                        settle()
                        with RssPeak(s) as rp:
                            r = scen(s)
                        peak[s.name] = max(peak[s.name], rp.peak)
                        peaks[(name, s.name)] = max(peaks.get((name, s.name), 0), rp.peak)
                        results.setdefault((name, s.name), []).append(r)
                        each = " ".join(f"{x:.2f}" for x in r[1:])
                        detail = f"  (each: {each})" if each else ""
                        print(f"{name:14s} run {run + 1} {s.name:10s} {r[0]:6.2f} s{detail}", flush=True)
        finally:  # what was measured is printed even when a side goes away mid-run
            out = io.StringIO()
            names = [s.name for s in sides]
            out.write("\n| image | " + " | ".join(f"{n} (median s)" for n in names)
                      + (" | ratio cri-shim/containerd |" if len(sides) == 2 else " |") + "\n")
            out.write("|---" * (len(sides) + 1 + (len(sides) == 2)) + "|\n")
            for name in scenarios:
                if any((name, n) not in results for n in names):
                    continue
                meds = [statistics.median(r[0] for r in results[(name, n)]) for n in names]
                row = f"| {name} | " + " | ".join(f"{m:.2f}" for m in meds)
                if len(sides) == 2:
                    row += f" | {meds[0] / meds[1]:.2f}"
                out.write(row + " |\n")
            for n in names:
                out.write(f"\npeak RSS {n}: {peak[n] / 2**20:.0f} MiB (idle {idle[n] / 2**20:.0f} MiB, "
                          f"+{(peak[n] - idle[n]) / 2**20:.0f} MiB); per scenario: " + ", ".join(
                              f"{sc} +{(v - idle[n]) / 2**20:.0f}" for (sc, side), v in peaks.items()
                              if side == n))
            print(out.getvalue() + "\n", flush=True)
    finally:
        if proc is not None and not a.keep:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        if started_containerd:
            subprocess.run([str(CRITEST / "containerd-down.sh")], check=False)
        if not a.keep:
            reg.stop()


if __name__ == "__main__":
    main()
