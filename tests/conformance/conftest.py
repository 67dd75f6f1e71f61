"""Backend conformance harness: the same tests for every runc-compatible runtime.

The test process makes itself a child subreaper (as conmon and containerd-shim do), so a
container's init, orphaned when `runtime create` exits, is re-parented here and its exit status
can be collected with waitpid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oci.blocking import BlockingRuntime
from oci.builder import SpecBuilder
from oci.cli_runtime import CLIRuntime
from oci.errors import ContainerNotFound, OCIRuntimeError
from oci.runtime import Stdio
from tests.conformance import cgroups
from tests.conformance.rootfs import build_busybox_rootfs

BACKENDS = ("runc", "crun", "pyrunc")
CGROUP_PARENT = "cri-shim-conformance"

_PR_SET_CHILD_SUBREAPER = 36


def backend_binary(name: str) -> str | None:
    if name == "pyrunc":
        # the console script of this very install, wherever PATH points
        venv_script = Path(sys.executable).parent / "pyrunc"
        return str(venv_script) if venv_script.exists() else shutil.which("pyrunc")
    return shutil.which(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "known_failure(backend, reason, cgroup=None): strict xfail of this test for one "
        "backend (only on cgroup v2 hosts with cgroup='v2', only on v1 or hybrid ones with 'v1')")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        for mark in item.iter_markers("known_failure"):
            only_on = mark.kwargs.get("cgroup")
            if only_on is not None and only_on != ("v2" if cgroups.UNIFIED_ONLY else "v1"):
                continue
            if mark.args[0] == backend:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{backend}: {mark.args[1]}"))


class ContainerReaper:
    """Reaps zombies of container processes other than the inits the harness waits for.

    Processes a runtime leaves orphaned (detached exec, for instance) are re-parented to us. Until
    we reap them, the dying init of their pid namespace cannot finish exiting, and `delete --force`
    waits on it, so this has to happen concurrently, as a shim's SIGCHLD handler would. Only
    processes of a nested pid namespace are touched: runtime commands are our own children too,
    and asyncio waits for those itself.
    """

    def __init__(self) -> None:
        self.inits: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="container-reaper", daemon=True)
        self._thread.start()

    def _children(self) -> list[int]:
        pids: list[int] = []
        for task in Path("/proc/self/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            for pid in self._children():
                if pid in self.inits:
                    continue
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                zombie = fields.get("State", "").strip().startswith("Z")
                if zombie and len(fields.get("NSpid", "").split()) > 1:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="session", autouse=True)
def reaper() -> Iterator[ContainerReaper]:
    if os.geteuid() != 0:
        pytest.skip("the conformance suite runs real containers and needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    r = ContainerReaper()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_rootfs(tmp_path_factory.mktemp("template") / "rootfs")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    binary = backend_binary(name)
    if binary is None:
        pytest.fail(f"backend {name} is not installed (not in PATH nor in the venv)")
    probe = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip()[-500:]
        pytest.fail(f"backend {name} ({binary}) does not run: {detail}")
    return name


@pytest.fixture(scope="session")
def runtime_root(backend: str) -> Iterator[Path]:
    root = Path(f"/run/cri-shim-conformance/{backend}-{os.getpid()}")
    root.mkdir(parents=True, exist_ok=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(f"{root}.cli", ignore_errors=True)  # CLIRuntime's per-call logs
    with contextlib.suppress(OSError):
        root.parent.rmdir()  # only when no other run is using it
    for d in cgroups.all_cgroup_dirs(CGROUP_PARENT):
        cgroups.remove_tree(d)


@dataclass
class Container:
    id: str
    bundle: Path
    stdout: Path
    stderr: Path
    cgroups_path: str
    pid: int | None = None
    reaped_status: int | None = None

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")


@dataclass
class Exit:
    code: int | None  # exit status, when the process exited
    signal: int | None  # terminating signal, when it was killed
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit={self.code} signal={self.signal} stdout={self.stdout!r} stderr={self.stderr!r}"


@dataclass
class Harness:
    backend: str
    rt: BlockingRuntime
    tmp: Path
    rootfs_template: Path
    reaper: ContainerReaper
    containers: list[Container] = field(default_factory=list)

    def spec(self, *args: str) -> SpecBuilder:
        b = SpecBuilder().rootfs("rootfs")
        return b.args(*args) if args else b

    def create(self, builder: SpecBuilder, *, console_socket: str | None = None,
               stdio: Stdio | None = None) -> Container:
        cid = f"ct-{uuid.uuid4().hex[:12]}"
        bundle = self.tmp / cid
        bundle.mkdir()
        shutil.copytree(self.rootfs_template, bundle / "rootfs", symlinks=True)
        spec = builder.build(check=False)
        if spec.linux is not None and spec.linux.cgroups_path is None:
            spec.linux.cgroups_path = f"/{CGROUP_PARENT}/{cid}"
        spec.save(bundle / "config.json")
        c = Container(cid, bundle, bundle / "stdout", bundle / "stderr",
                      spec.linux.cgroups_path if spec.linux and spec.linux.cgroups_path else "")
        c.stdout.touch()
        c.stderr.touch()
        self.containers.append(c)
        if stdio is None and console_socket is None:
            stdio = Stdio(stdout=c.stdout, stderr=c.stderr)
        self.rt.create(cid, bundle, console_socket=console_socket, stdio=stdio)
        c.pid = self.rt.state(cid).pid
        if c.pid:
            self.reaper.inits.add(c.pid)
        return c

    def start(self, builder: SpecBuilder, **kwargs: object) -> Container:
        c = self.create(builder, **kwargs)  # type: ignore[arg-type]
        self.rt.start(c.id)
        return c

    def wait(self, c: Container, timeout: float = 20.0) -> Exit:
        """Wait for the container's init to exit and return how it ended."""
        assert c.pid
        deadline = time.monotonic() + timeout
        status: int | None = c.reaped_status
        while status is None:
            try:
                pid, st = os.waitpid(c.pid, os.WNOHANG)
            except ChildProcessError:
                # not re-parented to us (a runtime that keeps a monitor); settle for "gone"
                if not Path(f"/proc/{c.pid}").exists():
                    return Exit(None, None, c.output(), c.errors())
                pid, st = 0, 0
            if pid:
                status = st
                c.reaped_status = st
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {c.id} (pid {c.pid}) still running after {timeout}s")
            time.sleep(0.01)
        if os.WIFSIGNALED(status):
            return Exit(None, os.WTERMSIG(status), c.output(), c.errors())
        return Exit(os.WEXITSTATUS(status), None, c.output(), c.errors())

    def run(self, builder: SpecBuilder, timeout: float = 20.0) -> Exit:
        """create, start, wait, delete; returns the exit and output."""
        c = self.start(builder)
        result = self.wait(c, timeout)
        self.rt.delete(c.id)
        return result

    def wait_for_output(self, c: Container, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in (out := c.output()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not in output of {c.id}: {out!r} / stderr {c.errors()!r}")
            time.sleep(0.01)
        return out

    def reachable_by_mapped_root(self) -> None:
        """Let a user namespace's root reach the bundle: pytest's tmp dirs are 0700."""
        for parent in [self.tmp, *self.tmp.parents]:
            if parent == Path("/tmp"):
                break
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:  # only where needed: TMPDIR may sit below a read-only /
                parent.chmod(mode | 0o011)

    def cleanup(self) -> list[str]:
        """Force-delete everything this test created and report what was left behind."""
        leftovers: list[str] = []
        for c in self.containers:
            try:
                self.rt.delete(c.id, force=True)
            except ContainerNotFound:
                pass
            except OCIRuntimeError as e:
                leftovers.append(f"delete --force {c.id}: {e}")
            if c.pid and c.reaped_status is None:
                _reap(c.pid)
            self.reaper.inits.discard(c.pid or 0)
        known = {s.id for s in self.rt.list()}
        mountinfo = Path("/proc/self/mountinfo").read_text()
        for c in self.containers:
            if c.id in known:
                leftovers.append(f"container {c.id} still listed")
            if str(c.bundle) in mountinfo:
                leftovers.append(f"mounts under {c.bundle} left behind")
            if c.pid and Path(f"/proc/{c.pid}").exists() and _is_alive(c.pid):
                leftovers.append(f"process {c.pid} of {c.id} still alive")
            if c.cgroups_path:
                for d in cgroups.all_cgroup_dirs(c.cgroups_path):
                    if d.exists():
                        leftovers.append(f"cgroup {d} left behind")
                        cgroups.remove_tree(d)
        return leftovers


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _reap(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if got:
            return
        time.sleep(0.01)


def _reap_orphans() -> None:
    """Collect zombies of other processes re-parented to us (runtime helpers, hooks)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.fixture
def h(backend: str, runtime_root: Path, rootfs_template: Path, tmp_path: Path,
      reaper: ContainerReaper) -> Iterator[Harness]:
    binary = backend_binary(backend)
    assert binary
    rt = BlockingRuntime(CLIRuntime(binary, runtime_root, name=backend, timeout=60))
    harness = Harness(backend, rt, tmp_path, rootfs_template, reaper)
    try:
        yield harness
    finally:
        leftovers = harness.cleanup()
        _reap_orphans()
        rt.close()
    assert not leftovers, f"{backend} left things behind: {leftovers}"
