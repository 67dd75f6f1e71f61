"""conmon argument building and sync-pipe parsing; cgroup usage on fake v1 and v2 trees."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cri_shim.containers import conmon
from cri_shim.errors import Internal, NotFound
from cri_shim.server.interceptor import status_for
from cri_shim.stats import cgroups as cgroup_stats


def args(tmp_path: Path, **kw) -> conmon.ConmonArgs:
    base = dict(conmon="conmon", runtime_path="/usr/sbin/runc", runtime_args=("--root=/run/r",),
                container_id="abc", name="web", bundle=tmp_path, log_path="/var/log/pods/p/web/0.log",
                exit_dir=tmp_path / "exits", persist_dir=tmp_path / "persist", socket_dir=tmp_path / "s")
    base.update(kw)
    return conmon.ConmonArgs(**base)


def test_argv(tmp_path: Path) -> None:
    a = args(tmp_path, stdin=True, terminal=True).argv()
    assert a[0] == "conmon"
    assert a[a.index("-r") + 1] == "/usr/sbin/runc"
    assert a[a.index("--runtime-arg") + 1] == "--root=/run/r" and "k8s-file:/var/log/pods/p/web/0.log" in a
    assert "-i" in a and "--leave-stdin-open" in a and "-t" in a
    assert "-i" not in args(tmp_path).argv()


def test_sync_success(tmp_path: Path) -> None:
    assert conmon.parse_sync(b'{"pid": 4242}\n', args(tmp_path)) == 4242


def test_sync_failure_carries_runtime_message(tmp_path: Path) -> None:
    with pytest.raises(Internal, match="runtime create failed: exec: \"nope\": not found"):
        conmon.parse_sync(b'{"pid": -1, "message": "exec: \\"nope\\": not found"}\n', args(tmp_path))


def test_sync_empty_uses_conmon_log(tmp_path: Path) -> None:
    (tmp_path / "conmon.log").write_text("conmon: runtime binary missing")
    with pytest.raises(Internal, match="conmon exited without reporting: conmon: runtime binary missing"):
        conmon.parse_sync(b"", args(tmp_path))


def test_exit_file(tmp_path: Path) -> None:
    assert conmon.read_exit_code(tmp_path, "abc") is None
    (tmp_path / "abc").write_text("137")
    code, when = conmon.read_exit_code(tmp_path, "abc")  # type: ignore[misc]
    assert code == 137 and when > 0


def test_cgroup_v2_usage(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    d = tmp_path / "kubepods" / "c1"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (d / "memory.current").write_text("10000\n")
    (d / "memory.stat").write_text("anon 4000\ninactive_file 3000\npgfault 7\npgmajfault 1\n")
    u = cgroup_stats.read_usage("/kubepods/c1", tmp_path)
    got = (u.cpu_ns, u.memory_usage, u.working_set, u.rss, u.page_faults)
    assert got == (1_500_000, 10000, 7000, 4000, 7)


def test_cgroup_v1_usage(tmp_path: Path) -> None:
    (tmp_path / "cpuacct" / "k" / "c1").mkdir(parents=True)
    (tmp_path / "cpuacct" / "k" / "c1" / "cpuacct.usage").write_text("99\n")
    m = tmp_path / "memory" / "k" / "c1"
    m.mkdir(parents=True)
    (m / "memory.usage_in_bytes").write_text("5000\n")
    (m / "memory.stat").write_text("total_inactive_file 6000\ntotal_rss 100\n")
    u = cgroup_stats.read_usage("k/c1", tmp_path)
    assert (u.cpu_ns, u.memory_usage, u.working_set, u.rss) == (99, 5000, 0, 100)


def test_status_mapping() -> None:
    assert status_for(NotFound("pod x not found"), "M") == (grpc.StatusCode.NOT_FOUND, "pod x not found")
    assert status_for(TimeoutError(), "M")[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    code, msg = status_for(ValueError("boom"), "RunPodSandbox")
    assert code == grpc.StatusCode.INTERNAL and "RunPodSandbox" in msg and "boom" in msg
    from oci import errors as oci_errors
    from oci.spec import SpecError

    assert status_for(oci_errors.ContainerNotFound("container c1 does not exist"), "M")[0] == \
        grpc.StatusCode.NOT_FOUND
    assert status_for(oci_errors.ContainerAlreadyExists("c1"), "M")[0] == grpc.StatusCode.ALREADY_EXISTS
    assert status_for(oci_errors.WrongState("c1 is running"), "M") == \
        (grpc.StatusCode.FAILED_PRECONDITION, "c1 is running")
    # Other errors of the oci layer are INTERNAL with their own message (no "internal error:" prefix).
    assert status_for(oci_errors.RuntimeTimeout("runc state c1 timed out"), "M") == \
        (grpc.StatusCode.INTERNAL, "runc state c1 timed out")
    assert status_for(SpecError("bad"), "M") == (grpc.StatusCode.INTERNAL, str(SpecError("bad")))

    class Lookalike(Exception):  # the class decides, not its name
        pass

    Lookalike.__name__, Lookalike.__module__ = "WrongState", "oci.errors"
    assert status_for(Lookalike("x"), "M")[0] == grpc.StatusCode.INTERNAL
    assert "internal error" in status_for(Lookalike("x"), "M")[1]
