"""exec into a running container with its own user, env, cwd; exit codes; errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from oci.errors import ContainerNotFound, OCIRuntimeError, WrongState
from oci.runtime import Stdio
from oci.spec import Capabilities, Process, User
from tests.conformance.conftest import Harness
from tests.conformance.rootfs import APP_GID, APP_UID, EXTRA_GID

pytestmark = pytest.mark.root


def _proc(*args: str, **kw: object) -> Process:
    kw.setdefault("env", ["PATH=/bin"])
    return Process(args=list(args), **kw)  # type: ignore[arg-type]


def test_exec_user_env_cwd(h: Harness, tmp_path: Path) -> None:
    c = h.start(h.spec("sleep", "100"))
    out = tmp_path / "exec.out"
    proc = _proc("sh", "-c", "id -u; id -g; grep ^Groups: /proc/self/status; echo $EXECVAR; pwd; echo $$",
                 env=["PATH=/bin", "EXECVAR=from-exec"], cwd="/home/app",
                 user=User(uid=APP_UID, gid=APP_GID, additional_gids=[EXTRA_GID]))
    code = h.rt.exec(c.id, proc, stdio=Stdio(stdout=out))
    lines = out.read_text().splitlines()
    assert code == 0
    assert lines[:2] == [str(APP_UID), str(APP_GID)], lines
    assert lines[2].split()[1:] == [str(EXTRA_GID)], lines
    assert lines[3:5] == ["from-exec", "/home/app"], lines
    assert lines[5] != "1", "exec'd process must not be the container's init"


def test_exec_joins_container_namespaces(h: Harness, tmp_path: Path) -> None:
    c = h.start(h.spec("sleep", "100").hostname("exec-target"))
    out = tmp_path / "exec.out"
    h.rt.exec(c.id, _proc("sh", "-c", "hostname; readlink /proc/self/ns/mnt; readlink /proc/self/ns/net"),
              stdio=Stdio(stdout=out))
    hostname, mnt, net = out.read_text().split()
    assert hostname == "exec-target"
    assert mnt == os.readlink(f"/proc/{c.pid}/ns/mnt") and net == os.readlink(f"/proc/{c.pid}/ns/net")


def test_exec_exit_code(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    assert h.rt.exec(c.id, _proc("sh", "-c", "exit 3")) == 3
    assert h.rt.exec(c.id, _proc("true")) == 0


def test_exec_capabilities_of_its_own(h: Harness, tmp_path: Path) -> None:
    c = h.start(h.spec("sleep", "100"))
    out = tmp_path / "exec.out"
    caps = Capabilities(bounding=["CAP_KILL"], effective=["CAP_KILL"], permitted=["CAP_KILL"])
    h.rt.exec(c.id, _proc("grep", "^CapEff", "/proc/self/status", capabilities=caps), stdio=Stdio(stdout=out))
    assert int(out.read_text().split()[1], 16) == 1 << 5  # CAP_KILL


def test_exec_detached_with_pid_file(h: Harness, tmp_path: Path) -> None:
    c = h.start(h.spec("sleep", "100"))
    pid_file = tmp_path / "exec.pid"
    assert h.rt.exec(c.id, _proc("sleep", "100"), detach=True, pid_file=pid_file) == 0
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while pid not in h.rt.pids(c.id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid in h.rt.pids(c.id)


def test_exec_missing_binary_fails(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    try:
        code = h.rt.exec(c.id, _proc("/no/such/binary"))
    except OCIRuntimeError as e:
        assert "no such file" in str(e).lower() or "not found" in str(e).lower(), e
    else:
        assert code != 0  # crun reports it as the process's exit status (127)
    assert h.rt.state(c.id).status == "running"


def test_exec_into_stopped_is_wrong_state(h: Harness) -> None:
    c = h.start(h.spec("true"))
    h.wait(c)
    with pytest.raises(WrongState):
        h.rt.exec(c.id, _proc("true"))


def test_exec_into_unknown_is_not_found(h: Harness) -> None:
    with pytest.raises(ContainerNotFound):
        h.rt.exec("no-such-container", _proc("true"))


@pytest.mark.parametrize("ns", ["host-users", "user-namespace", "cgroup-namespace"])
def test_exec_process_is_in_the_containers_cgroups(h: Harness, tmp_path: Path, ns: str) -> None:
    """In every hierarchy, the cgroup2 one of a hybrid host included. pyrunc's set-up process
    moves itself into v1 through `tasks` and forks into cgroup2 with clone3, or, in a container
    with a user or cgroup namespace, joins through cgroup.procs before entering them."""
    b = h.spec("sleep", "100")
    if ns == "user-namespace":
        b.user_namespace([(0, 100000, 65536)], [(0, 100000, 65536)])
        b.remove_mount("/sys/fs/cgroup")
        h.reachable_by_mapped_root()
    elif ns == "cgroup-namespace":
        b.namespace("cgroup")
    c = h.start(b)
    out = tmp_path / "exec.out"
    # the exec'd shell reports its host pid through the container's /proc: read its cgroups there
    code = h.rt.exec(c.id, _proc("sh", "-c", "cat /proc/self/cgroup"), stdio=Stdio(stdout=out))
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines, lines
    # inside a cgroup namespace the container's cgroup is the root
    want = "/" if ns == "cgroup-namespace" else c.cgroups_path
    assert all(line.split(":", 2)[2] == want for line in lines), (want, lines)
