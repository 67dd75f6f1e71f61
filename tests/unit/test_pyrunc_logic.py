"""pyrunc pure logic, no root: signals, mount options, seccomp translation, cgroup value
mapping, state file atomicity, command-line parsing."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest

from oci.pyrunc import args as cli_args
from oci.pyrunc import caps, cgroups, fs, mounts, seccomp, state
from oci.pyrunc import syscalls as sc
from oci.pyrunc.errors import ALREADY_EXISTS, NOT_EXIST, PyruncError
from oci.pyrunc.signals import parse_signal


@pytest.mark.parametrize("text,num", [("KILL", 9), ("SIGKILL", 9), ("sigterm", 15), ("9", 9), ("HUP", 1),
                                       ("SIGRTMIN+1", signal.SIGRTMIN + 1), ("RTMAX-2", signal.SIGRTMAX - 2)])
def test_signal_names_and_numbers(text: str, num: int) -> None:
    assert parse_signal(text) == num


@pytest.mark.parametrize("bad", ["NOPE", "0", "999", "SIGRTMIN+99", ""])
def test_bad_signals(bad: str) -> None:
    with pytest.raises(PyruncError):
        parse_signal(bad)


def test_mount_options_flags_propagation_and_data() -> None:
    flags, prop, data = mounts.parse_options(["nosuid", "noexec", "ro", "rslave", "mode=755", "size=65536k"])
    assert flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_RDONLY
    assert prop == [sc.MS_SLAVE | sc.MS_REC]
    assert data == "mode=755,size=65536k"


def test_mount_options_clear_flags_and_rbind() -> None:
    flags, _, _ = mounts.parse_options(["ro", "rw", "rbind", "nodev", "dev"])
    assert flags == sc.MS_BIND | sc.MS_REC


def test_mount_validate_rejects_bad_mounts() -> None:
    with pytest.raises(PyruncError, match="destination"):
        mounts.validate([{"type": "tmpfs", "source": "tmpfs"}])
    with pytest.raises(PyruncError, match="unknown filesystem type"):
        mounts.validate([{"destination": "/x", "type": "no-such-fs", "source": "x"}])
    with pytest.raises(PyruncError, match="no type"):
        mounts.validate([{"destination": "/x", "source": "/y"}])
    mounts.validate([{"destination": "/x", "source": "/y", "options": ["rbind", "ro"]}])


def test_secure_join_stays_in_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "escape").symlink_to("/../../etc")
    (tmp_path / "rel").symlink_to("../../../etc")
    assert mounts.secure_join(str(tmp_path), "/escape/passwd") == str(tmp_path / "etc/passwd")
    assert mounts.secure_join(str(tmp_path), "rel/x") == str(tmp_path / "etc/x")
    assert mounts.secure_join(str(tmp_path), "/../../a") == str(tmp_path / "a")


def test_seccomp_translation() -> None:
    spec = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["enosys"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ],
    }
    default, arches, rules = seccomp.translate(spec)
    assert default == seccomp.ACT_ERRNO | errno.ENOSYS
    assert arches == ["x86_64", "x86"]
    assert ("read", seccomp.ACT_ALLOW, []) in rules
    assert ("mkdir", seccomp.ACT_ERRNO | errno.EACCES, []) in rules
    # two conditions on one argument become two rules (OR), not one (AND)
    assert [r for r in rules if r[0] == "personality"] == [
        ("personality", seccomp.ACT_ALLOW, [(0, 4, 0, 0)]),
        ("personality", seccomp.ACT_ALLOW, [(0, 4, 8, 0)])]
    assert ("clone", seccomp.ACT_ALLOW, [(0, 7, 0x7E020000, 0)]) in rules
    assert not [r for r in rules if r[0] == "enosys"]  # same as the default: skipped


def test_seccomp_errno_default_is_eperm_and_notify_unsupported() -> None:
    assert seccomp.action("SCMP_ACT_ERRNO", None) == seccomp.ACT_ERRNO | errno.EPERM
    with pytest.raises(PyruncError, match="NOTIFY"):
        seccomp.action("SCMP_ACT_NOTIFY", None)
    with pytest.raises(PyruncError, match="operator"):
        seccomp.translate({"defaultAction": "SCMP_ACT_ALLOW",
                           "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                         "args": [{"index": 0, "op": "SCMP_CMP_BOGUS"}]}]})


def test_cgroup_v1_settings() -> None:
    res = {"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
           "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
           "pids": {"limit": 32}, "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
           "blockIO": {"weight": 500},
           "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                           "access": "rwm"}]}
    out = cgroups.v1_settings(res, current_memsw=None)
    files = [(c, f) for c, f, _ in out]
    assert ("cpu", "cpu.shares", "512") in out
    assert files.index(("cpu", "cpu.cfs_period_us")) < files.index(("cpu", "cpu.cfs_quota_us"))
    # growing: memsw before the memory limit so that memsw >= limit holds throughout
    memsw = files.index(("memory", "memory.memsw.limit_in_bytes"))
    assert memsw < files.index(("memory", "memory.limit_in_bytes"))
    assert ("memory", "memory.soft_limit_in_bytes", str(32 << 20)) in out
    assert ("pids", "pids.max", "32") in out
    assert ("hugetlb", "hugetlb.2MB.limit_in_bytes", str(4 << 20)) in out
    assert ("blkio", "blkio.weight", "500") in out
    devs = [(f, v) for c, f, v in out if c == "devices"]
    assert devs == [("devices.deny", "a *:* rwm"), ("devices.deny", "a *:* rwm"),
                    ("devices.allow", "c 1:3 rwm")]


def test_cgroup_v1_shrinking_memory_sets_limit_before_memsw() -> None:
    out = cgroups.v1_settings({"memory": {"limit": 32 << 20, "swap": 32 << 20}}, current_memsw=256 << 20)
    assert [f for _, f, _ in out] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_cgroup_v2_settings() -> None:
    res = {"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
           "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20},
           "pids": {"limit": -1}, "blockIO": {"weight": 10},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}
    out = dict(cgroups.v2_settings(res))
    assert out["cpu.weight"] == "39"  # runc's shares -> weight conversion
    assert out["cpu.max"] == "50000 100000"
    assert out["cpuset.cpus"] == "0-1"
    assert out["memory.max"] == str(64 << 20)
    assert out["memory.swap.max"] == str(32 << 20)  # spec swap is memory+swap
    assert out["memory.low"] == str(16 << 20)
    assert out["pids.max"] == "max"
    assert out["io.weight"] == "default 1"
    assert out["hugetlb.2MB.max"] == "0"
    assert dict(cgroups.v2_settings({"cpu": {"period": 50000}}))["cpu.max"] == "max 50000"


def test_cgroup_v2_swap_below_limit_is_an_error() -> None:
    with pytest.raises(PyruncError):
        cgroups.v2_settings({"memory": {"limit": 100, "swap": 50}})


def test_device_rule_wildcards() -> None:
    assert cgroups.device_rule({"type": "c", "major": 136, "access": "rwm"}) == "c 136:* rwm"
    assert cgroups.device_rule({"allow": False}) == "a *:* rwm"


def test_capability_masks() -> None:
    unknown: list[str] = []
    mask = caps.to_mask(["CAP_CHOWN", "CAP_KILL", "NET_RAW", "CAP_NOT_A_THING"], unknown)
    assert mask == (1 << 0) | (1 << 5) | (1 << 13)
    assert unknown == ["CAP_NOT_A_THING"]


def test_state_write_is_atomic(tmp_path: Path) -> None:
    root = str(tmp_path)
    state.reserve(root, "c1")
    with pytest.raises(PyruncError, match=ALREADY_EXISTS):
        state.reserve(root, "c1")
    rec = {"id": "c1", "pid": 0, "bundle": "/b"}
    state.save(root, rec)
    state.save(root, {**rec, "pid": 42})
    assert state.load(root, "c1")["pid"] == 42
    assert sorted(os.listdir(tmp_path / "c1")) == ["state.json"]  # no temp file left behind
    assert json.loads((tmp_path / "c1" / "state.json").read_text())["id"] == "c1"
    with pytest.raises(PyruncError, match=NOT_EXIST):
        state.load(root, "nope")
    with pytest.raises(PyruncError):
        state.container_dir(root, "../etc")


def test_state_of_a_dead_pid_is_stopped(tmp_path: Path) -> None:
    rec = {"id": "c1", "pid": os.getpid(), "pid_start": -1, "bundle": "/b"}
    assert state.status(str(tmp_path), rec) == "stopped"  # start time differs: recycled pid
    rec["pid_start"] = state.proc_start_time(os.getpid())
    assert state.alive(rec)


def test_cli_conmon_create_line() -> None:
    a = cli_args.parse(["--root=/run/r", "--log", "/l.json", "--log-format", "json", "--systemd-cgroup",
                        "create", "--bundle", "/b", "--pid-file", "/p", "--console-socket=/s", "--no-pivot",
                        "id1"])
    assert (a.command, a.root, a.log, a.log_format) == ("create", "/run/r", "/l.json", "json")
    assert a.opts == {"bundle": "/b", "pid_file": "/p", "console_socket": "/s", "no_pivot": True}
    assert a.positional == ["id1"]


def test_cli_exec_trailing_args_and_repeated_env() -> None:
    a = cli_args.parse(["exec", "-d", "--pid-file", "/p", "-e", "A=1", "--env", "B=2", "-u", "1000:1000",
                        "--cwd", "/tmp", "id1", "sh", "-c", "echo -n x"])
    assert a.opts["env"] == ["A=1", "B=2"] and a.opts["detach"] is True and a.opts["user"] == "1000:1000"
    assert a.positional == ["id1", "sh", "-c", "echo -n x"]
    b = cli_args.parse(["exec", "-dt", "--process", "/proc.json", "id1"])
    assert b.opts == {"detach": True, "tty": True, "process": "/proc.json"}


def test_cli_rejects_unknown_flags_and_kill_all() -> None:
    with pytest.raises(PyruncError, match="not defined"):
        cli_args.parse(["start", "--bogus", "id"])
    a = cli_args.parse(["kill", "--all", "id", "KILL"])
    assert a.opts == {"all": True} and a.positional == ["id", "KILL"]


def test_update_flags_to_resources() -> None:
    res = cli_args.update_resources({"memory": "64m", "cpu_shares": "512", "cpu_quota": "20000",
                                     "cpuset_cpus": "0", "pids_limit": "10"})
    assert res == {"memory": {"limit": 64 << 20}, "cpu": {"shares": 512, "quota": 20000, "cpus": "0"},
                   "pids": {"limit": 10}}
    assert cli_args.parse_size("1g") == 1 << 30 and cli_args.parse_size("-1") == -1
    with pytest.raises(PyruncError):
        cli_args.parse_size("lots")


def test_console_socket_beyond_sun_path_still_binds_and_connects(tmp_path: Path) -> None:
    # a state dir under a long root with a 64-digit container id is past unix sockets' 108 bytes
    from oci.pyrunc import console

    deep = tmp_path / ("d" * 60) / ("e" * 64)
    deep.mkdir(parents=True)
    path = str(deep / "console-1.sock")
    assert len(path) > 108
    srv, bound = console.listen(path)
    try:
        assert bound.startswith("/proc/self/fd/")
        fd = console.connect(path)
        conn, _ = srv.accept()
        conn.close()
        os.close(fd)
        assert (deep / "console-1.sock").exists()
    finally:
        srv.close()


def test_recursive_mount_options() -> None:
    # rro and friends are applied with mount_setattr(AT_RECURSIVE) after the mount, never as flags
    flags, _, data = mounts.parse_options(["rbind", "ro", "rro", "rnosuid", "rexec"])
    assert data == "" and flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY
    attr_set, attr_clr = mounts.recursive_attrs(["rro", "rnosuid", "rexec"])
    assert attr_set == sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID and attr_clr == sc.MOUNT_ATTR_NOEXEC
    assert mounts.recursive_attrs(["rro", "rrw"]) == (0, sc.MOUNT_ATTR_RDONLY)  # the last one wins
    assert "rro" in mounts.MOUNT_OPTIONS


MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]
USERNS = {"namespaces": [{"type": "user"}, {"type": "mount"}], "uidMappings": MAP, "gidMappings": MAP}


@pytest.mark.parametrize(("mount", "linux", "message"), [
    ({"destination": "/v", "type": "tmpfs", "source": "tmpfs", "uidMappings": MAP, "gidMappings": MAP},
     USERNS, "only supported for bind mounts"),
    ({"destination": "/v", "type": "bind", "source": "/x", "uidMappings": MAP, "gidMappings": MAP},
     {"namespaces": [{"type": "mount"}]}, "need the container to have a user namespace"),
    ({"destination": "/v", "type": "bind", "source": "/x", "uidMappings": MAP}, USERNS,
     "both uidMappings and gidMappings"),
    ({"destination": "/v", "type": "bind", "source": "/x", "gidMappings": MAP,
      "uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}]}, USERNS, "positive size"),
    ({"destination": "/v", "type": "bind", "source": "/x", "options": ["idmap"]},
     {"namespaces": [{"type": "user"}, {"type": "mount"}]}, "needs linux.uidMappings"),
])
def test_idmapped_mount_refusals(mount: dict, linux: dict, message: str) -> None:
    with pytest.raises(PyruncError, match=message):
        mounts.validate([mount], linux)


def test_idmapped_mounts_accepted() -> None:
    mounts.validate([{"destination": "/v", "type": "bind", "source": "/x", "options": ["rbind", "ridmap"],
                      "uidMappings": MAP, "gidMappings": MAP}], USERNS)
    # idmap without mappings of its own takes the joined user namespace's
    mounts.validate([{"destination": "/v", "source": "/x", "options": ["bind", "idmap"]}],
                    {"namespaces": [{"type": "user", "path": "/proc/1/ns/user"}, {"type": "mount"}]})
    assert mounts.parse_options(["rbind", "idmap", "ro"])[0] & sc.MS_RDONLY


@pytest.mark.parametrize("parts", [
    ("/run/pyrunc", "c1"), ("/run/pyrunc/", "c1", "exec.fifo"), ("rel", "a", "b"), ("/a", "/abs", "c"),
    ("", "x"), ("a", ""), ("a/", "", "b"), ("/",), ("", "")])
def test_fs_join_is_os_path_join(parts: tuple[str, ...]) -> None:
    assert fs.join(*parts) == os.path.join(*parts)


def test_fs_exists_and_isdir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("d")
    for name in ("f", "d", "l", "missing"):
        p = str(tmp_path / name)
        assert (fs.exists(p), fs.isdir(p)) == (os.path.exists(p), os.path.isdir(p)), name
    assert not fs.exists("nul\0byte") and not fs.isdir("nul\0byte")


PATHS = ["", "/", "//", "///", "a", "a/", "/a", "/a/", "a/b", "/a/b/", "a//b", "//a/b", "///a/b", "./a",
         "a/./b", "a/../b", "../a", "../../a/..", "/..", "/../a", "a/b/../../..", "/a/b/../../../c",
         ".", "..", "a/..", "//..", "a/b/.", "/a/./b/../c//d/"]


@pytest.mark.parametrize("path", PATHS)
def test_fs_lexical_helpers_are_os_path_s(path: str) -> None:
    assert fs.normpath(path) == os.path.normpath(path)
    assert fs.split(path) == os.path.split(path)
    assert fs.dirname(path) == os.path.dirname(path)
    assert fs.basename(path) == os.path.basename(path)
    assert fs.abspath(path) == os.path.abspath(path)


def test_fs_file_type_helpers(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("d")
    (tmp_path / "dangling").symlink_to("missing")
    for name in ("f", "d", "l", "dangling", "missing"):
        p = str(tmp_path / name)
        assert (fs.lexists(p), fs.isfile(p), fs.islink(p)) == (
            os.path.lexists(p), os.path.isfile(p), os.path.islink(p)), name
    assert not fs.lexists("nul\0byte") and not fs.isfile("nul\0byte") and not fs.islink("nul\0byte")


def test_fs_realpath_resolves_as_the_kernel_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "real" / "up").symlink_to("..")
    monkeypatch.chdir(tmp_path)
    for p in (str(tmp_path / "link" / "sub"), "link/sub", "link/up/link", "real/sub/../sub", "."):
        assert fs.realpath(p) == os.path.realpath(p), p
    # what cannot be opened comes back absolute, for the caller's own "does not exist"
    assert fs.realpath("missing/x") == str(tmp_path / "missing" / "x")


def test_fs_realpath_without_proc_is_the_absolute_path(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fs.posix, "readlink", no_proc)
    assert fs.realpath("a/../b") == str(tmp_path / "b")
    assert fs.realpath(".") == str(tmp_path)


def test_fs_ismount(tmp_path: Path) -> None:
    (tmp_path / "l").symlink_to("/proc")
    for p in ("/", "/proc", str(tmp_path), str(tmp_path / "l"), str(tmp_path / "missing")):
        assert fs.ismount(p) == os.path.ismount(p), p


def test_fs_makedirs(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        leaf = tmp_path / "a" / "b" / "c"
        fs.makedirs(str(leaf), 0o700)
        assert leaf.is_dir() and (leaf.stat().st_mode & 0o777) == 0o700
        assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755  # parents: the default mode
        fs.makedirs(str(leaf), 0o700)  # already there: fine
        fs.makedirs(str(tmp_path / "a") + "/", 0o700)
    finally:
        os.umask(old)
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError):
        fs.makedirs(str(tmp_path / "f"))
    with pytest.raises(NotADirectoryError):
        fs.makedirs(str(tmp_path / "f" / "x" / "y"))


def test_cgroup_remove_takes_sub_cgroups_first_and_ignores_what_is_gone(tmp_path: Path) -> None:
    """remove rmdirs each hierarchy's directory, after the cgroups the container made under it;
    one already gone (or never made) is no error. A plain directory stands in for cgroupfs,
    whose directories are empty of files as far as rmdir is concerned."""
    plain, nested = tmp_path / "memory" / "c1", tmp_path / "pids" / "c1"
    plain.mkdir(parents=True)
    (nested / "sub" / "deeper").mkdir(parents=True)
    (nested / "other").mkdir()
    cgroups.remove({"mode": "v1", "paths": {"memory": str(plain), "pids": str(nested),
                                            "cpu": str(tmp_path / "cpu" / "c1")}})
    assert not plain.exists() and not nested.exists()
    assert (tmp_path / "memory").is_dir() and (tmp_path / "pids").is_dir()


def test_cgroup_remove_reports_a_cgroup_that_stays_busy(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    busy = tmp_path / "memory" / "c1"
    busy.mkdir(parents=True)
    (busy / "tasks").write_text("")  # a file keeps a plain directory from going: rmdir fails each time
    monkeypatch.setattr(cgroups.time, "sleep", lambda s: None)
    with pytest.raises(PyruncError, match=f"cgroup {busy} still busy"):
        cgroups.remove({"mode": "v1", "paths": {"memory": str(busy)}})
    assert busy.is_dir()
