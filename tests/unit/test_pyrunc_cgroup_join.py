"""How pyrunc create puts the init in its cgroups without a cgroup.procs migration: create forks
the init itself into the cgroup2 directory and its new namespaces with clone3 and the init writes
0 to each v1 `tasks` file; where a set-up process must come first (a user namespace, joined pid
or mount namespaces...), that process does the same for the init it forks, unless that cannot
work (a user namespace, an old kernel); then the parent moves it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from oci.pyrunc import cgroups, init
from oci.pyrunc import syscalls as sc
from oci.pyrunc.errors import PyruncError


def _hybrid(tmp_path: Path) -> dict:
    paths = {}
    for key in ("cpu,cpuacct", "memory", "name=systemd", "unified"):
        d = tmp_path / key.replace("name=", "") / "pod" / "ctr"
        d.mkdir(parents=True)
        paths[key] = str(d)
    return {"mode": "v1", "paths": paths}


def test_join_self_v1_writes_zero_to_every_v1_tasks_file(tmp_path: Path) -> None:
    cg = _hybrid(tmp_path)
    for key in cg["paths"]:
        (Path(cg["paths"][key]) / "tasks").write_text("")
    cgroups.join_self_v1(cg)
    for key, path in cg["paths"].items():
        # the cgroup2 tree has no `tasks` (the init is forked into it instead)
        assert (Path(path) / "tasks").read_text() == ("" if key == "unified" else "0"), key


def test_join_self_v1_names_the_cgroup_it_cannot_join(tmp_path: Path) -> None:
    cg = _hybrid(tmp_path)  # no tasks files: like a cgroup removed under us
    with pytest.raises(PyruncError, match=r"cgroup: open .*/cpu,cpuacct/pod/ctr/tasks"):
        cgroups.join_self_v1(cg)


def test_join_self_v1_does_nothing_on_v2(tmp_path: Path) -> None:
    cgroups.join_self_v1({"mode": "v2", "paths": {"": str(tmp_path)}})
    assert list(tmp_path.iterdir()) == []


def test_v2_path_of_each_layout(tmp_path: Path) -> None:
    v2 = "/sys/fs/cgroup/pod/ctr"
    assert cgroups.v2_path({"mode": "v2", "paths": {"": v2}}) == v2
    assert cgroups.v2_path(_hybrid(tmp_path)) == str(tmp_path / "unified/pod/ctr")
    assert cgroups.v2_path({"mode": "v1", "paths": {"memory": "/sys/fs/cgroup/memory/x"}}) is None


def test_is_unified_looks_for_the_cgroup2_root_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "ROOT", str(tmp_path))
    assert not cgroups.is_unified()
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert cgroups.is_unified()


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which fork the init would get, without forking."""
    calls: list[str] = []

    def fake_fork() -> int:
        calls.append("fork")
        return 4242

    monkeypatch.setattr(init.posix, "fork", fake_fork)
    return calls


def test_init_is_cloned_into_the_cgroup2_directory(tmp_path: Path, forks: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def clone(fd: int, flags: int = 0) -> int:
        seen.append(Path(f"/proc/self/fd/{fd}").resolve().as_posix())
        return 4343

    monkeypatch.setattr(sc, "clone_into_cgroup", clone)
    cg = _hybrid(tmp_path)
    assert init._fork_init(cg, joined_elsewhere=False) == (4343, True)
    assert seen == [cg["paths"]["unified"]] and forks == []


def test_no_cgroup2_tree_is_a_plain_fork(forks: list[str]) -> None:
    v1_only = {"mode": "v1", "paths": {"memory": "/nonexistent"}}
    assert init._fork_init(v1_only, joined_elsewhere=False) == (4242, True)


def test_a_user_or_joined_cgroup_namespace_never_tries_clone3(tmp_path: Path, forks: list[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A user namespace's root may not write to the host's cgroups, a joined cgroup namespace may
    hide the cgroup (nsdelegate), and a clone3 refused after the pid was taken would leave the new
    pid namespace without a pid 1 for good: fork, and the parent moves the init."""
    monkeypatch.setattr(sc, "clone_into_cgroup", lambda fd, flags=0: pytest.fail("clone3 tried"))
    assert init._fork_init(_hybrid(tmp_path), joined_elsewhere=True) == (4242, False)


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.E2BIG, errno.EINVAL])
def test_kernels_without_clone_into_cgroup_fall_back(tmp_path: Path, forks: list[str], err: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, flags: int = 0) -> int:
        raise OSError(err, "clone3")

    monkeypatch.setattr(sc, "clone_into_cgroup", refuse)
    assert init._fork_init(_hybrid(tmp_path), joined_elsewhere=False) == (4242, False)


def test_a_refusal_by_the_cgroup_is_an_error_naming_it(tmp_path: Path, forks: list[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, flags: int = 0) -> int:
        raise OSError(errno.EAGAIN, "clone3")

    monkeypatch.setattr(sc, "clone_into_cgroup", refuse)
    cg = _hybrid(tmp_path)
    with pytest.raises(PyruncError, match=f"forking the init into cgroup {cg['paths']['unified']}: "):
        init._fork_init(cg, joined_elsewhere=False)
    assert forks == []



NEW = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
V2 = {"mode": "v2", "paths": {"": "/sys/fs/cgroup/pod/ctr"}}


def _cfg(namespaces: list[dict], mounts: list[dict] | None = None) -> dict:
    return {"linux": {"namespaces": namespaces}, "mounts": mounts or []}


def test_create_forks_the_init_itself_into_its_new_namespaces(tmp_path: Path) -> None:
    """No set-up process between create and the init: clone3 makes the new namespaces."""
    want = sc.CLONE_NEWPID | sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS | sc.CLONE_NEWNS
    assert init.direct_flags(_cfg(NEW), V2) == want
    assert init.direct_flags(_cfg(NEW), _hybrid(tmp_path)) == want
    # a new cgroup namespace is the init's own step once in its cgroups; joined net, ipc and
    # uts namespaces (a pod's) it enters itself: none is a clone flag
    pod = [{"type": "network", "path": "/proc/1/ns/net"}, {"type": "ipc", "path": "/proc/1/ns/ipc"},
           {"type": "uts", "path": "/proc/1/ns/uts"}]
    namespaces = [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}, *pod]
    assert init.direct_flags(_cfg(namespaces), V2) == sc.CLONE_NEWPID | sc.CLONE_NEWNS
    assert init.direct_flags(_cfg([{"type": "mount"}]), V2) == sc.CLONE_NEWNS  # the host's pid namespace


@pytest.mark.parametrize("namespaces, mounts", [
    (NEW + [{"type": "user"}], None),
    ([n for n in NEW if n["type"] != "pid"] + [{"type": "pid", "path": "/proc/1/ns/pid"}], None),
    ([n for n in NEW if n["type"] != "mount"] + [{"type": "mount", "path": "/proc/1/ns/mnt"}], None),
    (NEW + [{"type": "user", "path": "/proc/1/ns/user"}], None),
    (NEW + [{"type": "cgroup", "path": "/proc/1/ns/cgroup"}], None),
    (NEW + [{"type": "time"}], None),
    (NEW, [{"destination": "/v", "source": "/x", "options": ["bind", "idmap"]}]),
], ids=["user", "joined-pid", "joined-mount", "joined-user", "joined-cgroup", "time", "idmapped-mount"])
def test_what_needs_the_set_up_process(namespaces: list[dict], mounts: list[dict] | None) -> None:
    """A user namespace (entered, with id maps written by the parent, before the init is
    forked), time offsets (set for the children of whoever unshares), a pid, mount or cgroup
    namespace joined by path, idmapped mounts (made from the host's mount namespace)."""
    assert init.direct_flags(_cfg(namespaces, mounts), V2) is None


def test_no_cgroup2_tree_needs_the_set_up_process() -> None:
    pure_v1 = {"mode": "v1", "paths": {"memory": "/sys/fs/cgroup/memory/x"}}
    assert init.direct_flags(_cfg(NEW), pure_v1) is None
