"""Each hook kind runs, in the right namespace, with the container state on stdin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oci.errors import RuntimeFailure
from tests.conformance.conftest import Harness

pytestmark = pytest.mark.root

# kind -> (runs in the container's mount namespace?, statuses the runtime-spec allows it to see)
HOOKS = {
    "prestart": (False, {"creating", "created"}),
    "createRuntime": (False, {"creating", "created"}),
    "createContainer": (True, {"creating", "created"}),
    "startContainer": (True, {"created", "running"}),
    # runc 1.1 runs poststart before it records "running"
    "poststart": (False, {"created", "running", "stopped"}),
    "poststop": (False, {"stopped"}),
}


_CRUN_IN_CONTAINER = pytest.mark.known_failure(
    "crun", "crun 1.8 hands container-namespace hooks a state with pid 0 and bundle '/'")
KINDS = [pytest.param(k, marks=_CRUN_IN_CONTAINER) if HOOKS[k][0] else k for k in HOOKS]


@pytest.mark.parametrize("kind", KINDS)
def test_hook_runs_with_state(h: Harness, tmp_path: Path, kind: str) -> None:
    in_container, statuses = HOOKS[kind]
    out = tmp_path / "hooks"
    out.mkdir()
    # The same absolute path inside and outside, so a hook writes to `out` whichever root it sees.
    script = (f"cat > {out}/{kind}.json; readlink /proc/self/ns/mnt > {out}/{kind}.mnt; "
              f"echo $HOOKVAR > {out}/{kind}.env")
    b = h.spec("sh", "-c", "echo main-ran; sleep 100").bind_mount(str(out), str(out))
    b.hook(kind, "/bin/sh", ["sh", "-c", script], env=["PATH=/bin:/usr/bin", f"HOOKVAR={kind}-env"],
           timeout=10)
    c = h.start(b)
    h.wait_for_output(c, "main-ran")
    container_mnt = os.readlink(f"/proc/{c.pid}/ns/mnt")
    h.rt.delete(c.id, force=True)  # poststop runs here
    state_file = out / f"{kind}.json"
    assert state_file.exists(), f"{kind} hook did not run"
    state = json.loads(state_file.read_text())
    assert state["id"] == c.id and state["bundle"] == str(c.bundle), state
    assert state["status"] in statuses, state
    if kind != "poststop":
        # inside the container's pid namespace the host pid is not visible: runc reports 1 there
        assert state.get("pid") in ((c.pid, 1) if in_container else (c.pid,)), state
    mnt = (out / f"{kind}.mnt").read_text().strip()
    assert mnt == (container_mnt if in_container else os.readlink("/proc/self/ns/mnt")), kind
    assert (out / f"{kind}.env").read_text().strip() == f"{kind}-env"


def test_failing_prestart_hook_aborts_create(h: Harness) -> None:
    b = h.spec("sh", "-c", "echo should-not-run").hook("prestart", "/bin/false")
    with pytest.raises(RuntimeFailure):
        h.create(b)
