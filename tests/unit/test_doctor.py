"""`cri-shim doctor`: each judgement over made-up host facts, and a real run's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri_shim import doctor
from cri_shim.cli import main
from cri_shim.doctor import FAIL, OK, WARN


def test_cgroup_modes() -> None:
    assert doctor.cgroup_mode("cgroup2fs", []) == "v2"
    assert doctor.cgroup_mode("tmpfs", [("/sys/fs/cgroup/unified", "cgroup2", "rw")]) == "hybrid"
    assert doctor.cgroup_mode("tmpfs", [("/sys/fs/cgroup/memory", "cgroup", "rw,memory")]) == "v1"


def test_cgroup_controllers() -> None:
    ok = list(doctor.check_cgroups("v2", set(), {"cpu", "cpuset", "memory", "pids", "io"}, set(), ["runc"]))
    assert [f.status for f in ok] == [OK]
    missing = list(doctor.check_cgroups("v2", set(), {"cpu", "io"}, set(), ["runc"]))
    assert missing[0].status == FAIL and "cpuset, memory, pids" in missing[0].message
    v1 = set(doctor.V1_NEEDED)
    assert [f.status for f in doctor.check_cgroups("v1", v1 - {"pids"}, set(), set(), [])] == [FAIL]
    # crun and a hybrid host whose cgroup2 root delegates controllers: crun refuses to start
    hybrid = list(doctor.check_cgroups("hybrid", v1, set(), {"hugetlb"}, ["runc", "crun"]))
    assert [f.status for f in hybrid] == [OK, WARN] and "hugetlb" in hybrid[1].message
    assert [f.status for f in doctor.check_cgroups("hybrid", v1, set(), set(), ["crun"])] == [OK]


def test_overlay_idmap_caps_disk_socket() -> None:
    assert doctor.check_overlay("nodev\toverlay\n", "overlayfs").status == OK
    assert doctor.check_overlay("nodev\ttmpfs\n", "overlayfs").status == FAIL
    assert doctor.check_overlay("nodev\ttmpfs\n", "native").status == WARN
    assert doctor.check_idmap("6.1.0-57-amd64").status == OK
    assert doctor.check_idmap("5.15.0").status == WARN and "overlay" in doctor.check_idmap("5.15.0").message
    assert doctor.check_idmap("4.19.0").status == WARN
    assert doctor.check_sys_resource("000001ffffffffff").status == OK
    assert doctor.check_sys_resource("000001fffeffffff").status == WARN  # bit 24 cleared
    assert doctor.check_free_space("/var", 100 << 30).status == OK
    assert doctor.check_free_space("/var", 2 << 30).status == WARN
    assert doctor.check_free_space("/var", 100 << 20).status == FAIL
    assert doctor.check_socket("/run/x.sock", False, 0, 0).status == OK
    assert doctor.check_socket("/run/x.sock", True, 0o660, 0).status == OK
    bad = doctor.check_socket("/run/x.sock", True, 0o666, 0)
    assert bad.status == FAIL and "chmod 0660" in bad.fix


def test_systemd_cgroup_driver_needs_a_runtime_that_has_it() -> None:
    pyrunc = {"linux": {"cgroup": {"v1": True, "v2": True, "systemd": False}}}
    runc = {"linux": {"cgroup": {"v1": True, "v2": True, "systemd": True}}}
    f = doctor.check_cgroup_driver("pyrunc", "systemd", pyrunc, FAIL)
    assert f is not None and f.status == FAIL and "no systemd cgroup driver" in f.message
    assert 'cgroup_driver = "cgroupfs"' in f.fix
    assert doctor.check_cgroup_driver("pyrunc", "cgroupfs", pyrunc, FAIL) is None
    assert doctor.check_cgroup_driver("runc", "systemd", runc, FAIL) is None
    assert doctor.check_cgroup_driver("crun", "systemd", None, FAIL) is None  # no `features`: unknown


def test_doctor_exit_status_follows_blocking_problems(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'socket = "{tmp_path}/cri.sock"\nroot_dir = "{tmp_path}/root"\n')
    status = main(["doctor", "--config", str(good)])
    out = capsys.readouterr().out
    assert "handler runc" in out and "monitor" in out and "blocking problem(s)" in out
    assert status == (1 if "\nFAIL" in "\n" + out else 0)
    # a default handler whose binary does not exist is blocking, and the fix says how
    bad = tmp_path / "bad.toml"
    bad.write_text(f'socket = "{tmp_path}/cri.sock"\ndefault_runtime = "ghost"\n'
                   f'[runtimes.ghost]\nbinary = "/nonexistent/ghost-runtime"\n')
    assert main(["doctor", "--config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  handler ghost: binary '/nonexistent/ghost-runtime' not found" in out
    assert "fix: install it" in out
