"""hack/vm-tests.py without a VM: arguments, kernel choice, the vng command line, the guest's
bootstrap and environment, the cgroup v2 check, and its exit statuses when it cannot run."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "vm-tests.py"
_spec = importlib.util.spec_from_file_location("vm_tests", SCRIPT)
assert _spec and _spec.loader
vm = importlib.util.module_from_spec(_spec)
sys.modules["vm_tests"] = vm  # dataclasses look their module up by name
_spec.loader.exec_module(vm)


def test_options_then_pytest_arguments() -> None:
    o = vm.parse_args(["--memory", "3G", "--cpus=1", "--timeout", "60", "--", "-k", "oom", "tests/x.py"])
    assert (o.memory, o.cpus, o.timeout, o.pytest_args) == ("3G", 1, 60.0, ["-k", "oom", "tests/x.py"])


def test_first_unknown_argument_starts_pytest_arguments() -> None:
    o = vm.parse_args(["--kernel", "/k", "tests/conformance", "--memory", "1G"])
    assert o.kernel == "/k" and o.memory == "2G"
    assert o.pytest_args == ["tests/conformance", "--memory", "1G"]


def test_everything_after_double_dash_is_pytest_even_our_options() -> None:
    assert vm.parse_args(["--", "--cpus", "4"]).pytest_args == ["--cpus", "4"]
    assert vm.parse_args(["--dry-run"]).dry_run


@pytest.mark.parametrize("argv, message", [
    (["--cpus", "0"], "positive"),
    (["--cpus", "two"], "positive"),
    (["--memory", "lots"], "size"),
    (["--timeout", "soon"], "seconds"),
    (["--timeout", "-5"], "positive"),
    (["--kernel"], "needs a value"),
])
def test_bad_options(argv: list[str], message: str) -> None:
    with pytest.raises(vm.UsageError, match=message):
        vm.parse_args(argv)


def test_no_pytest_arguments_means_the_ci_selection() -> None:
    argv = vm.pytest_argv([])
    assert argv[-len(vm.CGROUP_V2_SELECTION):] == vm.CGROUP_V2_SELECTION
    assert "timeout=300" in argv and "faulthandler_timeout=280" in argv and "no:cacheprovider" in argv
    assert vm.pytest_argv(["-k", "oom"])[-2:] == ["-k", "oom"]
    # every entry of the selection exists: a renamed test must not silently drop out of CI
    root = SCRIPT.parents[1]
    for entry in vm.CGROUP_V2_SELECTION:
        path, _, name = entry.partition("::")
        assert (root / path).is_file(), entry
        assert not name or f"def {name}(" in (root / path).read_text(), entry


def test_newest_kernel_by_version_not_by_string(tmp_path: Path) -> None:
    for v in ("6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-28-amd64"):
        (tmp_path / f"vmlinuz-{v}").touch()
    assert vm.find_kernel(str(tmp_path / "vmlinuz-*")) == str(tmp_path / "vmlinuz-6.1.0-10-amd64")
    assert vm.find_kernel(str(tmp_path / "nothing-*")) is None


def test_vng_command(tmp_path: Path) -> None:
    opts = vm.parse_args(["--memory", "1536M", "--cpus", "1"])
    cmd = vm.vng_command("/v/vng", "/boot/vmlinuz-x", opts, tmp_path, "/c/.venv/bin/python")
    assert cmd[:3] == ["/v/vng", "--run", "/boot/vmlinuz-x"]
    for flag in ("--disable-kvm", "--force-9p", "--disable-monitor"):
        assert flag in cmd
    assert cmd[cmd.index("--memory") + 1] == "1536M" and cmd[cmd.index("--cpus") + 1] == "1"
    assert cmd[cmd.index("--rwdir") + 1] == str(tmp_path)
    assert any(a.startswith("--qemu-opts=") and f"mount_tag={vm.CACHED_TAG}" in a
               and "readonly=on" in a for a in cmd)
    script = cmd[cmd.index("--exec") + 1]
    assert script.splitlines()[-1] == "exec " + shlex.join(
        ["/c/.venv/bin/python", str(SCRIPT), "--guest", str(tmp_path)])


def test_guest_bootstrap_binds_cached_trees_before_python_starts(tmp_path: Path) -> None:
    script = vm.guest_bootstrap(["/usr", "/my checkout"], ["python", "x"])
    lines = script.splitlines()
    assert "cache=loose" in lines[1] and vm.CACHED_TAG in lines[1]
    assert f"mount --bind '{vm.GUEST_CACHED_ROOT}/my checkout' '/my checkout' || exit 125" in script
    assert lines[-1] == "exec python x"
    subprocess.run(["sh", "-n", "-c", script], check=True)  # valid sh


def test_cached_binds_add_the_python_installation(tmp_path: Path) -> None:
    (tmp_path / ".venv").mkdir()
    cfg = tmp_path / ".venv" / "pyvenv.cfg"
    cfg.write_text("home = /opt/py/3.11/bin\ninclude-system-site-packages = false\n")
    assert vm.cached_binds(tmp_path) == ["/usr", str(tmp_path), "/opt/py/3.11"]
    cfg.write_text("home = /usr/bin\n")
    assert vm.cached_binds(tmp_path) == ["/usr", str(tmp_path)]


def test_cgroup_v2_only_check() -> None:
    v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,relatime 0 0\nproc /proc proc rw 0 0\n"
    hybrid = v2 + "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    assert vm.cgroup_v2_only(v2, "cgroup2fs") is None
    assert "not cgroup2fs" in vm.cgroup_v2_only(v2, "tmpfs")
    assert "/sys/fs/cgroup/memory" in vm.cgroup_v2_only(hybrid, "cgroup2fs")


def test_guest_env() -> None:
    env = vm.guest_env({"PATH": "/x", "virtme_foo": "1", "TERM": "linux"}, "/run/s", color=False)
    assert env["PATH"].startswith(str(SCRIPT.parents[1] / ".venv" / "bin") + ":")
    assert env["TMPDIR"] == "/run/s/tmp" and env["HOME"] == "/run/s/home"
    assert env["PY_COLORS"] == "0" and env["TERM"] == "linux" and "virtme_foo" not in env
    assert float(env["CRI_SHIM_TEST_TIME_SCALE"]) > 1
    assert "PY_COLORS" not in vm.guest_env({}, "/run/s", color=True)


def test_cannot_run_is_125_and_bad_usage_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert vm.main(["--vng", "/nonexistent/vng", "--kernel", "/nonexistent/vmlinuz"]) == 125
    err = capsys.readouterr().err
    assert "vng" in err and "/nonexistent/vmlinuz" in err and "CRI_SHIM_VM_TESTS=1 hack/setup-host.sh" in err
    assert vm.main(["--cpus", "none"]) == 2
    assert vm.main(["--help"]) == 0 and "cgroup v2" in capsys.readouterr().out


def test_run_tests_sh_runs_the_lane_only_when_asked() -> None:
    text = (SCRIPT.parent / "run-tests.sh").read_text()
    assert "CRI_SHIM_VM_TESTS" in text and "vm-tests.py" in text
    assert "CRI_SHIM_VM_TESTS=1" in (SCRIPT.parents[1] / ".ci" / "run").read_text()


def _fake_guest(tmp_path: Path, script: str) -> list[str]:
    """A stand-in for vng: a shell script whose output is the console."""
    path = tmp_path / "fake-vng"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return [str(path)]


def test_silent_guest_is_wedged_and_killed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = _fake_guest(tmp_path, "echo booted; sleep 60; echo never\n")
    t0 = time.monotonic()
    status = vm._boot_and_stream(cmd, cmd[0], timeout=30, results=tmp_path, silence_limit=0.5)
    assert status == vm.WEDGED and time.monotonic() - t0 < 10
    out = capsys.readouterr()
    assert "booted" in out.out and "never" not in out.out
    assert "printed nothing for 0s" in out.err or "printed nothing for 1s" in out.err


def test_talking_guest_runs_to_its_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # output keeps coming more often than the silence limit: the guest is left alone
    cmd = _fake_guest(tmp_path, f"for i in 1 2 3 4; do echo tick $i; sleep 0.3; done; "
                                f"echo 0 > {tmp_path}/{vm.STATUS_FILE}\n")
    status = vm._boot_and_stream(cmd, cmd[0], timeout=30, results=tmp_path, silence_limit=1.0)
    assert status == 0 and "tick 4" in capsys.readouterr().out


def test_guest_past_the_deadline_times_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = _fake_guest(tmp_path, "while true; do echo busy; sleep 0.1; done\n")
    status = vm._boot_and_stream(cmd, cmd[0], timeout=1.0, results=tmp_path, silence_limit=5.0)
    assert status == vm.TIMED_OUT and "ran past --timeout" in capsys.readouterr().err
