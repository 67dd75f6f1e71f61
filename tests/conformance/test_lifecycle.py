"""Lifecycle, state transitions and their errors, exit codes and signals."""

from __future__ import annotations

import shutil
import signal
import uuid

import pytest

from oci.errors import ContainerAlreadyExists, ContainerNotFound, RuntimeFailure, WrongState
from tests.conformance.conftest import CGROUP_PARENT, Harness

pytestmark = pytest.mark.root


def test_create_start_state_delete(h: Harness) -> None:
    c = h.create(h.spec("sh", "-c", "echo started; exec sleep 100"))
    st = h.rt.state(c.id)
    assert st.status == "created" and st.pid and st.pid > 0
    assert st.id == c.id and st.bundle == str(c.bundle)
    assert c.output() == "", "the user process ran before start"
    h.rt.start(c.id)
    h.wait_for_output(c, "started")
    assert h.rt.state(c.id).status == "running"
    assert c.id in {s.id for s in h.rt.list()}
    h.rt.kill(c.id, signal.SIGKILL)
    h.wait(c)
    assert h.rt.state(c.id).status == "stopped"
    h.rt.delete(c.id)
    with pytest.raises(ContainerNotFound):
        h.rt.state(c.id)


def test_start_twice_is_wrong_state(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    with pytest.raises(WrongState):
        h.rt.start(c.id)


def test_start_stopped_is_wrong_state(h: Harness) -> None:
    c = h.start(h.spec("true"))
    h.wait(c)
    with pytest.raises(WrongState):
        h.rt.start(c.id)


def test_delete_running_is_wrong_state_and_force_works(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    with pytest.raises(WrongState):
        h.rt.delete(c.id)
    assert h.rt.state(c.id).status == "running"
    h.rt.delete(c.id, force=True)
    with pytest.raises(ContainerNotFound):
        h.rt.state(c.id)


def test_kill_stopped_is_wrong_state(h: Harness) -> None:
    c = h.start(h.spec("true"))
    h.wait(c)
    with pytest.raises(WrongState):
        h.rt.kill(c.id, signal.SIGKILL)


def test_duplicate_id_already_exists(h: Harness) -> None:
    c = h.create(h.spec("sleep", "100"))
    with pytest.raises(ContainerAlreadyExists):
        h.rt.create(c.id, c.bundle)
    assert h.rt.state(c.id).status == "created"


def test_unknown_container_not_found(h: Harness) -> None:
    for call in (h.rt.state, h.rt.start, h.rt.delete, h.rt.pause):
        with pytest.raises(ContainerNotFound):
            call("no-such-container")
    with pytest.raises(ContainerNotFound):
        h.rt.kill("no-such-container", signal.SIGKILL)


def test_delete_created_container(h: Harness) -> None:
    c = h.create(h.spec("sh", "-c", "echo never"))
    h.rt.delete(c.id, force=True)
    with pytest.raises(ContainerNotFound):
        h.rt.state(c.id)
    assert c.output() == ""


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code(h: Harness, code: int) -> None:
    result = h.run(h.spec("sh", "-c", f"exit {code}"))
    assert (result.code, result.signal) == (code, None), result


def test_sigkill(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    h.rt.kill(c.id, signal.SIGKILL)
    result = h.wait(c)
    assert result.signal == signal.SIGKILL, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, "SIGUSR1", "HUP"], ids=["number", "name", "short-name"])
def test_signal_delivered_to_handler(h: Harness, sig: int | str) -> None:
    # PID 1 ignores signals it has no handler for, so the script installs one
    c = h.start(h.spec("sh", "-c", "trap 'echo got; exit 7' TERM USR1 HUP; echo ready; "
                                   "while true; do sleep 0.05; done"))
    h.wait_for_output(c, "ready")
    h.rt.kill(c.id, sig)
    result = h.wait(c)
    assert result.code == 7 and "got" in result.stdout, result


def test_kill_all_reaches_every_process(h: Harness) -> None:
    c = h.start(h.spec("sh", "-c", "sleep 100 & sleep 100 & echo ready; wait"))
    h.wait_for_output(c, "ready")
    pids = h.rt.pids(c.id)
    assert len(pids) >= 3, pids
    h.rt.kill(c.id, signal.SIGKILL, all=True)
    result = h.wait(c)
    assert result.signal == signal.SIGKILL, result


def test_pids_lists_container_processes(h: Harness) -> None:
    c = h.start(h.spec("sh", "-c", "sleep 100 & echo ready; wait"))
    h.wait_for_output(c, "ready")
    pids = h.rt.pids(c.id)
    assert c.pid in pids and len(pids) >= 2, pids


def test_stdout_and_stderr_go_to_files(h: Harness) -> None:
    result = h.run(h.spec("sh", "-c", "echo out; echo err >&2"))
    assert result.stdout == "out\n" and result.stderr == "err\n", result


def test_state_carries_annotations(h: Harness) -> None:
    c = h.create(h.spec("true").annotation("io.cri-shim.test/key", "value"))
    st = h.rt.state(c.id)
    assert (st.annotations or {}).get("io.cri-shim.test/key") == "value", st


def test_pid_file_written_on_create(h: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = h.create(h.spec("true"))
    pid_file = tmp_path / "init.pid"
    # a second container, created with --pid-file through the adapter
    bundle2 = c.bundle
    cid = c.id + "-p"
    h.rt.create(cid, bundle2, pid_file=pid_file)
    try:
        assert int(pid_file.read_text()) == h.rt.state(cid).pid
    finally:
        h.rt.delete(cid, force=True)


def test_failed_create_leaves_no_pid_file(h: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The pid file tells the caller that create succeeded: a create that fails after its init
    exists (here the init cannot bind-mount a missing source) leaves none behind."""
    bundle = tmp_path / "bad"
    bundle.mkdir()
    shutil.copytree(h.rootfs_template, bundle / "rootfs", symlinks=True)
    cid = f"ct-{uuid.uuid4().hex[:12]}"
    spec = h.spec("true").bind_mount("/no-such-source-dir", "/mnt/x").build(check=False)
    assert spec.linux is not None
    spec.linux.cgroups_path = f"/{CGROUP_PARENT}/{cid}"
    spec.save(bundle / "config.json")
    pid_file = tmp_path / "init.pid"
    with pytest.raises(RuntimeFailure, match="no-such-source-dir"):
        h.rt.create(cid, bundle, pid_file=pid_file)
    assert not pid_file.exists()
    with pytest.raises(ContainerNotFound):
        h.rt.state(cid)
