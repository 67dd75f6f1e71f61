"""pyrunc (and runc, crun for comparison) driven by conmon, as CRI-O and cri-shim drive them:
conmon runs `<runtime> create`, we `start`, and conmon writes the CRI log and the exit file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from oci.builder import SpecBuilder
from tests.conformance.rootfs import build_busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
CONMON = shutil.which("conmon")
CRI_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d stdout F hello-from-conmon$")


def _binary(name: str) -> str | None:
    if name == "pyrunc":
        script = Path(sys.executable).parent / "pyrunc"
        return str(script) if script.exists() else shutil.which("pyrunc")
    return shutil.which(name)


def _wait_for(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # conmon may be our zombie if it did not double-fork
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)
    return False


@pytest.mark.skipif(CONMON is None, reason="conmon is not installed")
@pytest.mark.parametrize("backend", ["runc", "crun", "pyrunc"])
def test_conmon_runs_container_log_and_exit_code(backend: str, tmp_path: Path) -> None:
    runtime = _binary(backend)
    assert runtime, f"{backend} is not installed"
    cid = f"cm-{uuid.uuid4().hex[:10]}"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    build_busybox_rootfs(bundle / "rootfs")
    cgroup = f"/cri-shim-conformance/{cid}"
    builder = SpecBuilder().rootfs("rootfs").args("sh", "-c", "echo hello-from-conmon; exit 7")
    spec = builder.build(check=False)
    assert spec.linux is not None
    spec.linux.cgroups_path = cgroup
    spec.save(bundle / "config.json")
    root = tmp_path / "runtime-root"
    dirs = {n: tmp_path / n for n in ("exits", "persist", "sock")}
    for d in dirs.values():
        d.mkdir()
    log = tmp_path / "ctr.log"
    argv = [CONMON, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid, "-r", runtime,
            "-b", str(bundle), "-p", str(tmp_path / "pidfile"), "-P", str(tmp_path / "conmon.pid"),
            "-l", f"k8s-file:{log}", "--exit-dir", str(dirs["exits"]), "--persist-dir", str(dirs["persist"]),
            "--socket-dir-path", str(dirs["sock"]), "--runtime-arg", f"--root={root}", "--log-level", "error"]
    conmon_pid = 0
    try:
        subprocess.run(argv, check=True, timeout=30, stdin=subprocess.DEVNULL, capture_output=True)
        conmon_pid = int(_wait_for(tmp_path / "conmon.pid"))
        init_pid = int(_wait_for(tmp_path / "pidfile"))
        assert init_pid > 0
        state = subprocess.run([runtime, f"--root={root}", "state", cid], capture_output=True, text=True)
        assert '"created"' in state.stdout, state
        subprocess.run([runtime, f"--root={root}", "start", cid], check=True, capture_output=True, timeout=30)
        exit_code = _wait_for(dirs["exits"] / cid)
        assert exit_code.strip() == "7"
        lines = log.read_text().splitlines()
        assert any(CRI_LINE.match(ln) for ln in lines), lines
    finally:
        subprocess.run([runtime, f"--root={root}", "delete", "--force", cid], capture_output=True, timeout=30)
        if conmon_pid:
            assert _gone(conmon_pid), f"conmon {conmon_pid} did not exit"
    listed = subprocess.run([runtime, f"--root={root}", "list", "-q"], capture_output=True, text=True)
    assert cid not in listed.stdout
    for ctrl in ("memory", "pids", "cpu", "unified"):
        assert not Path(f"/sys/fs/cgroup/{ctrl}{cgroup}").exists(), f"cgroup left in {ctrl}"
    assert cid not in Path("/proc/self/mountinfo").read_text()
