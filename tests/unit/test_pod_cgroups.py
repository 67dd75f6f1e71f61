"""Issue 11 without root: cgroup naming for both drivers, cgroupfs writes on fake v1/v2 trees,
the cgroup join wrapper, the infra process's command line and life cycle, pod stats readers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cri_shim import cgroup_paths, cgroupfs, config
from cri_shim.cgroup_paths import CgroupPathError
from cri_shim.cgroupfs import Hierarchy
from cri_shim.containers import conmon_cgroup
from cri_shim.containers.spec_gen import PodContext
from cri_shim.errors import Internal, InvalidArgument
from cri_shim.sandboxes import infra
from cri_shim.stats import pod as pod_stats

POD = "p" * 64
CID = "c" * 64
SLICE = "kubepods-besteffort-pod0a1b_2c3d.slice"
SLICE_PATH = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b_2c3d.slice"


# --- naming ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, path", [
    (SLICE, SLICE_PATH),
    ("system.slice", "/system.slice"),
    ("-.slice", "/"),
    ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
])
def test_expand_slice(name: str, path: str) -> None:
    assert cgroup_paths.expand_slice(name) == path


@pytest.mark.parametrize("name", ["a--b.slice", "-a.slice", "a-.slice", "a/b.slice", ".slice", "kubepods",
                                  "x.scope", ""])
def test_expand_slice_refuses(name: str) -> None:
    with pytest.raises(CgroupPathError):
        cgroup_paths.expand_slice(name)


@pytest.mark.parametrize("driver, parent, infra_cg", [
    ("cgroupfs", "/kubepods/besteffort/pod1", f"/kubepods/besteffort/pod1/{POD}"),
    ("cgroupfs", "kubepods/pod1/", f"/kubepods/pod1/{POD}"),
    ("cgroupfs", "", f"/cri-shim/{POD}/{POD}"),
    ("systemd", SLICE, f"{SLICE_PATH}/cri-shim-{POD}.scope"),
    ("systemd", "", f"/cri-shim/{POD}/cri-shim-{POD}.scope"),
])
def test_sandbox_cgroup(driver: str, parent: str, infra_cg: str) -> None:
    assert cgroup_paths.sandbox_cgroup(driver, parent, POD) == infra_cg


@pytest.mark.parametrize("driver, parent", [
    ("systemd", "/kubepods/besteffort/pod1"),  # the systemd driver gets slices
    ("cgroupfs", "/kubepods/../etc"),
    ("cgroupfs", "/kubepods/./x"),
    ("cgroupv3", "/kubepods"),
])
def test_sandbox_cgroup_refuses(driver: str, parent: str) -> None:
    with pytest.raises(InvalidArgument):
        cgroup_paths.sandbox_cgroup(driver, parent, POD)


@pytest.mark.parametrize("driver, setting, parent, path", [
    ("cgroupfs", "pod", "/kubepods/pod1", f"/kubepods/pod1/cri-shim-conmon-{CID}"),
    ("cgroupfs", "pod", "", f"/cri-shim/{POD}/cri-shim-conmon-{CID}"),
    ("cgroupfs", "/cri-shim-runtime/", "/kubepods/pod1", f"/cri-shim-runtime/cri-shim-conmon-{CID}"),
    ("systemd", "pod", SLICE, f"{SLICE_PATH}/cri-shim-conmon-{CID}.scope"),
    ("systemd", "system.slice", SLICE, f"/system.slice/cri-shim-conmon-{CID}.scope"),
])
def test_conmon_cgroup(driver: str, setting: str, parent: str, path: str) -> None:
    assert cgroup_paths.conmon_cgroup(driver, setting, parent, POD, CID) == path


@pytest.mark.parametrize("driver, parent, spec_path, cgroupfs_path", [
    ("cgroupfs", "/kubepods/pod1", f"/kubepods/pod1/{CID}", f"/kubepods/pod1/{CID}"),
    ("cgroupfs", "", f"/cri-shim/{POD}/{CID}", f"/cri-shim/{POD}/{CID}"),
    ("systemd", SLICE, f"{SLICE}:cri-shim:{CID}", f"{SLICE_PATH}/cri-shim-{CID}.scope"),
    ("systemd", "", f"system.slice:cri-shim:{CID}", f"/system.slice/cri-shim-{CID}.scope"),
])
def test_container_cgroup(driver: str, parent: str, spec_path: str, cgroupfs_path: str) -> None:
    assert cgroup_paths.container_cgroups_path(driver, parent, POD, CID) == spec_path
    assert cgroup_paths.container_cgroup(driver, spec_path) == cgroupfs_path


@pytest.mark.parametrize("driver, setting", [
    ("cgroupfs", "relative/path"), ("cgroupfs", "/"), ("cgroupfs", "/a/../b"), ("cgroupfs", ""),
    ("systemd", "/cri-shim-runtime"), ("systemd", "runtime"), ("systemd", "a--b.slice"),
])
def test_conmon_setting_refused(driver: str, setting: str) -> None:
    with pytest.raises(CgroupPathError, match="conmon_cgroup|slice"):
        cgroup_paths.check_conmon_setting(setting, driver)


def test_config_validates_conmon_cgroup() -> None:
    assert config.from_dict({}).conmon_cgroup == "pod"
    config.from_dict({"cgroup_driver": "systemd", "conmon_cgroup": "system.slice"}).validate()
    config.from_dict({"conmon_cgroup": "/cri-shim-runtime"}).validate()
    with pytest.raises(InvalidArgument, match="conmon_cgroup 'system.slice'"):
        config.from_dict({"conmon_cgroup": "system.slice"}).validate()
    assert 'conmon_cgroup = "pod"' in config.to_toml(config.from_dict({}))


# --- hierarchies and cgroupfs writes --------------------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 88 0:32 / /mnt/again rw,relatime - cgroup cgroup rw,memory
91 88 0:50 / /proc rw - proc proc rw
"""
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"


def test_parse_mountinfo_hybrid_and_unified() -> None:
    hs = cgroupfs.parse_mountinfo(HYBRID)
    assert hs == [
        Hierarchy(Path("/sys/fs/cgroup/cpu"), 1, ("cpu",)),
        Hierarchy(Path("/sys/fs/cgroup/cpuset"), 1, ("cpuset",)),
        Hierarchy(Path("/sys/fs/cgroup/memory"), 1, ("memory",)),  # mounted twice, listed once
        Hierarchy(Path("/sys/fs/cgroup/systemd"), 1, ("name=systemd",)),
        Hierarchy(Path("/sys/fs/cgroup/unified"), 2),
    ]
    assert cgroupfs.parse_mountinfo(UNIFIED) == [Hierarchy(Path("/sys/fs/cgroup"), 2)]
    assert cgroupfs.dirs("/kubepods/pod1/abc", cgroupfs.parse_mountinfo(UNIFIED)) == [
        Path("/sys/fs/cgroup/kubepods/pod1/abc")]


def fake_v1(tmp_path: Path) -> list[Hierarchy]:
    cpuset = tmp_path / "cpuset"
    cpuset.mkdir(parents=True)
    (cpuset / "cpuset.cpus").write_text("0-3\n")
    (cpuset / "cpuset.mems").write_text("0\n")
    (tmp_path / "memory").mkdir()
    return [Hierarchy(cpuset, 1, ("cpuset",)), Hierarchy(tmp_path / "memory", 1, ("memory",))]


def test_create_and_remove_on_v1(tmp_path: Path) -> None:
    hs = fake_v1(tmp_path)
    procs = cgroupfs.create("/kubepods/pod1/abc", hs)
    assert procs == [tmp_path / "cpuset/kubepods/pod1/abc/cgroup.procs",
                     tmp_path / "memory/kubepods/pod1/abc/cgroup.procs"]
    assert cgroupfs.create("/kubepods/pod1/abc", hs) == procs  # existing is fine
    assert cgroupfs.remove("/kubepods/pod1/abc", hs) == []
    assert not (tmp_path / "memory/kubepods/pod1/abc").exists()
    assert (tmp_path / "memory/kubepods/pod1").is_dir()  # parents belong to the kubelet
    assert cgroupfs.remove("/kubepods/pod1/abc", hs) == []  # already gone
    with pytest.raises(ValueError):
        cgroupfs.create("/kubepods/../x", hs)


def test_remove_reports_a_busy_cgroup(tmp_path: Path) -> None:
    hs = fake_v1(tmp_path)
    cgroupfs.create("/a", hs)
    (tmp_path / "memory/a/leftover").mkdir()  # rmdir of a non-empty directory fails as EBUSY would
    assert cgroupfs.remove("/a", hs, timeout=0.05) == [f"{tmp_path / 'memory/a'}: still in use"]


def test_new_v1_cpuset_gets_the_parents_cpus(tmp_path: Path) -> None:
    parent = tmp_path / "p"
    child = parent / "c"
    child.mkdir(parents=True)
    for d, cpus, mems in ((parent, "0-3\n", "0\n"), (child, "", "")):
        (d / "cpuset.cpus").write_text(cpus)
        (d / "cpuset.mems").write_text(mems)
    cgroupfs._init_cpuset(child)
    assert (child / "cpuset.cpus").read_text() == "0-3" and (child / "cpuset.mems").read_text() == "0"


def test_v2_enables_controllers_on_the_way_down(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    (root / "kubepods").mkdir(parents=True)
    for d in (root, root / "kubepods"):
        (d / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    (root / "kubepods" / "cgroup.subtree_control").write_text("memory\n")
    procs = cgroupfs.create("/kubepods/abc", [Hierarchy(root, 2)])
    assert procs == [root / "kubepods/abc/cgroup.procs"]
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"  # untouched
    assert (root / "kubepods/cgroup.subtree_control").read_text() == "+cpu +pids"


def test_join_argv_puts_the_process_in_before_it_runs(tmp_path: Path) -> None:
    files = [tmp_path / "a.procs", tmp_path / "b.procs"]
    out = subprocess.run(cgroupfs.join_argv(files, ["sh", "-c", "echo $$"]), capture_output=True,
                         text=True, check=True).stdout
    assert [f.read_text() for f in files] == [out, out]
    assert cgroupfs.join_argv([], ["conmon", "-c", "x"]) == ["conmon", "-c", "x"]
    failed = subprocess.run(cgroupfs.join_argv([tmp_path / "no/such/dir"], ["true"]), capture_output=True)
    assert failed.returncode != 0


# --- infra process --------------------------------------------------------------------------


def test_infra_argv() -> None:
    pins = {"net": Path("/run/p/ns/net"), "ipc": Path("/run/p/ns/ipc")}
    argv = infra.infra_argv("catatonit", pins, True, [Path("/cg/a/cgroup.procs")])
    assert argv == ["/bin/sh", "-ec", cgroupfs.JOIN_SCRIPT, "cgroup-join", "/cg/a/cgroup.procs", "--",
                    "nsenter", "--net=/run/p/ns/net", "--ipc=/run/p/ns/ipc",
                    "unshare", "--pid", "--fork", "--kill-child", "catatonit", "-P"]
    assert infra.infra_argv("catatonit", {}, False, []) == ["catatonit", "-P"]


def test_process_identity() -> None:
    me = os.getpid()
    start = infra.start_time(me)
    assert start is not None and infra.is_running(me, start)
    assert not infra.is_running(me, start + 1)  # same pid, another process
    assert infra.start_time(2**22 + 1) is None


@pytest.mark.skipif(shutil.which("catatonit") is None, reason="catatonit is not installed")
def test_infra_life_cycle(tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"
    pidfile = tmp_path / "infra.pid"

    async def scenario() -> None:
        rec = await infra.start("catatonit", {}, False, [procs], pidfile, tmp_path / "infra.log")
        assert procs.read_text().strip() == str(rec.pid)  # joined before catatonit ran
        assert Path(f"/proc/{rec.pid}/comm").read_text().strip() == "catatonit"
        assert os.getsid(rec.pid) == rec.pid  # its own session
        assert infra.find(pidfile) == rec
        text = pod_stats.infra_net_dev(rec.pid, rec.start)
        assert "lo:" in text and pod_stats.infra_net_dev(rec.pid, rec.start + 1) == ""
        await infra.stop(pidfile, "")
        assert infra.start_time(rec.pid) is None and not pidfile.exists()
        assert infra.find(pidfile) is None
        await infra.stop(pidfile, "")  # idempotent
        with pytest.raises(Internal, match="exited at start: .*nonexistent/catatonit"):
            await infra.start("/nonexistent/catatonit", {}, False, [procs], pidfile, tmp_path / "bad.log")
        with pytest.raises(Internal, match="cannot run /nonexistent/catatonit"):
            await infra.start("/nonexistent/catatonit", {}, False, [], pidfile, tmp_path / "bad.log")

    asyncio.run(scenario())


def test_waiting_for_processes_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """_wait_gone: through pidfds, an exit ends the wait; our exited child is reaped."""
    opened: list[int] = []
    real_pidfd_open = os.pidfd_open

    def pidfd_open(pid: int, flags: int = 0) -> int:
        opened.append(real_pidfd_open(pid, flags))
        return opened[-1]

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)

    def still_a_pidfd(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            return False

    async def scenario() -> None:
        child = subprocess.Popen(["sleep", "30"])
        other = subprocess.Popen(["sleep", "30"])
        try:
            # One keeps running: the wait gives up at its timeout.
            assert not await infra._wait_gone([child.pid, other.pid], 0.2)
            asyncio.get_running_loop().call_later(0.05, child.kill)
            asyncio.get_running_loop().call_later(0.05, other.kill)
            began = time.monotonic()
            assert await infra._wait_gone([child.pid, other.pid], 30)
            assert time.monotonic() - began < 20  # the exits ended the wait, not its timeout
            # Reaped by the wait itself: no zombie is left, and the pid is no longer ours.
            with pytest.raises(ChildProcessError):
                os.waitpid(child.pid, os.WNOHANG)
            assert await infra._wait_gone([child.pid], 0.2)  # gone already
            assert await infra._wait_gone([], 0.2)
        finally:
            for p in (child, other):
                if p.returncode is None and infra.start_time(p.pid) is not None:
                    p.kill()
        # every pidfd closed (its number may have been reused since, by something else)
        assert len(opened) >= 2 and not any(still_a_pidfd(fd) for fd in opened)

    asyncio.run(scenario())


def test_waiting_without_pidfds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without pidfd_open (before 5.3): the same wait, by polling."""

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    async def scenario() -> None:
        child = subprocess.Popen(["sleep", "30"])
        try:
            assert not await infra._wait_gone([child.pid], 0.1)
            asyncio.get_running_loop().call_later(0.05, child.kill)
            assert await infra._wait_gone([child.pid], 30)
            with pytest.raises(ChildProcessError):
                os.waitpid(child.pid, os.WNOHANG)
        finally:
            if infra.start_time(child.pid) is not None:
                child.kill()

    asyncio.run(scenario())


# --- conmon's cgroup and pod stats -----------------------------------------------------------


def test_conmon_cgroup_prepare_and_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hs = fake_v1(tmp_path / "cg")
    monkeypatch.setattr(cgroupfs, "hierarchies", lambda: hs)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pod = PodContext(id=POD, cgroup_parent="/kubepods/pod1")

    async def scenario() -> None:
        procs = await conmon_cgroup.prepare(config.from_dict({}), pod, CID, bundle)
        assert procs == tuple(h.mountpoint / f"kubepods/pod1/cri-shim-conmon-{CID}/cgroup.procs" for h in hs)
        await conmon_cgroup.remove(bundle)
        assert not any(p.parent.exists() for p in procs)
        await conmon_cgroup.remove(tmp_path / "no-bundle")  # nothing recorded: nothing to do

    asyncio.run(scenario())


def test_pod_cgroup_usage_on_v2(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    d = tmp_path / "kubepods" / "pod1"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    (d / "memory.current").write_text("10000\n")
    (d / "memory.stat").write_text("anon 4000\ninactive_file 3000\n")
    (d / "memory.max").write_text("17000\n")
    rates = pod_stats.CpuRates()
    cpu, mem = pod_stats.pod_cgroup_usage("/kubepods/pod1", 10**9, rates, tmp_path) or (None, None)
    assert cpu is not None and mem is not None
    assert (cpu.timestamp, cpu.usage_core_nano_seconds.value) == (10**9, 2_500_000)
    assert not cpu.HasField("usage_nano_cores")  # a rate needs a previous sample
    assert (mem.timestamp, mem.usage_bytes.value, mem.working_set_bytes.value, mem.rss_bytes.value,
            mem.available_bytes.value) == (10**9, 10000, 7000, 4000, 10000)
    (d / "cpu.stat").write_text("usage_usec 7500\n")  # 5 ms of CPU in the next half second
    cpu, _ = pod_stats.pod_cgroup_usage("/kubepods/pod1", 15 * 10**8, rates, tmp_path) or (None, None)
    assert cpu is not None and cpu.usage_nano_cores.value == 10_000_000  # 1% of a core
    rates.forget("/kubepods/pod1")
    assert rates.rate("/kubepods/pod1", 2 * 10**9, 7_500_000) is None
    assert pod_stats.pod_cgroup_usage("/kubepods/missing", 42, None, tmp_path) is None


def test_pod_cgroup_of_a_sandbox() -> None:
    from cri_shim.sandboxes.manager import Sandbox
    from cri_shim.sandboxes.store import SandboxMeta, SandboxState

    def sandbox(infra_cgroup: str) -> Sandbox:
        meta = SandboxMeta(id=POD, name="n", namespace="ns", uid="u", attempt=0, config=b"",
                           handler="runc", dir="/run/p", created_at=0, infra_cgroup=infra_cgroup)
        return Sandbox(meta, SandboxState())

    assert sandbox(f"/kubepods/pod1/{POD}").pod_cgroup == "/kubepods/pod1"
    assert sandbox(f"{SLICE_PATH}/cri-shim-{POD}.scope").pod_cgroup == SLICE_PATH
    assert sandbox(f"/{POD}").pod_cgroup == ""  # parent "/": the machine, not the pod
    assert sandbox("").pod_cgroup == ""  # made before the infra process
