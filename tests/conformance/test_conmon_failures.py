"""A refused create under conmon, as cri-shim runs it: conmon's sync pipe (_OCI_SYNCPIPE) must
carry {"pid": -1, "message": ...} with the runtime's own words at once, not after the CRI
client's 60 s timeout, and nothing of the container may remain."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from oci.builder import SpecBuilder
from tests.conformance import cgroups
from tests.conformance.capabilities import outside_bounding_set
from tests.conformance.conftest import CGROUP_PARENT, backend_binary
from tests.conformance.rootfs import build_busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
CONMON = shutil.which("conmon")
FAST = 5.0  # seconds: every runtime under conmon answers in well under 0.2 s


def _read_line(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"conmon reported nothing within {timeout}s (got {data!r})")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _case_builder(case: str) -> tuple[SpecBuilder, str]:
    """(the broken spec, what the message must mention)"""
    b = SpecBuilder().rootfs("rootfs")
    if case == "missing-executable":
        return b.args("/no/such/binary"), "/no/such/binary"
    missing = outside_bounding_set()
    if not missing:
        pytest.skip("the runtime holds every capability here: none can be asked for in vain")
    return b.args("true").add_capabilities(missing[0]), "cap"


@pytest.mark.skipif(CONMON is None, reason="conmon is not installed")
@pytest.mark.parametrize("case", ["missing-executable", "capability-outside-bounding-set"])
@pytest.mark.parametrize("backend", ["runc", "crun", "pyrunc"])
def test_conmon_reports_a_refused_create_at_once(backend: str, case: str, tmp_path: Path) -> None:
    runtime = backend_binary(backend)
    assert runtime, f"{backend} is not installed"
    assert CONMON
    cid = f"cmf-{uuid.uuid4().hex[:10]}"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    build_busybox_rootfs(bundle / "rootfs")
    builder, mention = _case_builder(case)
    spec = builder.build(check=False)
    assert spec.linux is not None
    cgroup = f"/{CGROUP_PARENT}/{cid}"
    spec.linux.cgroups_path = cgroup
    spec.save(bundle / "config.json")
    root = tmp_path / "runtime-root"
    dirs = {n: tmp_path / n for n in ("exits", "persist", "sock")}
    for d in dirs.values():
        d.mkdir()
    argv = [CONMON, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid, "-r", runtime, "-b", str(bundle),
            "-p", str(bundle / "pidfile"), "-P", str(bundle / "conmon.pid"),
            "-l", f"k8s-file:{tmp_path}/ctr.log", "--exit-dir", str(dirs["exits"]),
            "--persist-dir", str(dirs["persist"]),
            "--socket-dir-path", str(dirs["sock"]), "--runtime-arg", f"--root={root}", "--log-level", "error"]
    r, w = os.pipe()
    t0 = time.monotonic()
    try:
        conmon = subprocess.Popen(argv, pass_fds=(w,), env=dict(os.environ, _OCI_SYNCPIPE=str(w)),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True, cwd=bundle)
        os.close(w)
        line = _read_line(r, 3 * FAST)
        took = time.monotonic() - t0
        conmon.wait(timeout=3 * FAST)
    finally:
        os.close(r)
    msg = json.loads(line)
    assert msg.get("pid", msg.get("data")) == -1, msg  # conmon 2.1 says "data", as cri-shim reads it
    assert took < FAST, f"conmon took {took:.2f}s to report the refused create"
    assert mention.lower() in msg["message"].lower(), msg
    if backend == "pyrunc" and case != "missing-executable":
        assert outside_bounding_set()[0] in msg["message"], msg
    state = subprocess.run([runtime, f"--root={root}", "state", cid], capture_output=True, text=True,
                           timeout=30)
    assert state.returncode != 0, state.stdout
    assert not (root / cid).exists(), "state directory left behind"
    assert not [d for d in cgroups.all_cgroup_dirs(cgroup) if d.exists()], "cgroup left behind"
    assert cid not in Path("/proc/self/mountinfo").read_text()
