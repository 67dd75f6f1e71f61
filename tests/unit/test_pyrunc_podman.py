"""What podman asks of pyrunc that cri-shim does not: --systemd-cgroup refused with a clear
message (pyrunc has only the cgroupfs driver), --preserve-fds on create, run and exec, and no
other descriptor leaking into the container process."""

from __future__ import annotations

import ast
import fcntl
import os
from pathlib import Path

import pytest

from oci.pyrunc import args as cli_args
from oci.pyrunc import cli, process
from oci.pyrunc.errors import PyruncError


@pytest.mark.parametrize("verb", ["create", "run"])
def test_systemd_cgroup_is_refused_with_the_way_out(verb: str) -> None:
    a = cli_args.parse(["--root", "/run/r", "--systemd-cgroup", verb, "--bundle", "/b", "id1"])
    assert a.systemd_cgroup
    with pytest.raises(PyruncError, match="--systemd-cgroup is not supported") as e:
        cli.VERBS[verb](a)
    assert "--cgroup-manager cgroupfs" in str(e.value) and 'cgroup_driver = "cgroupfs"' in str(e.value)


@pytest.mark.parametrize("argv", [["state", "id1"], ["kill", "id1", "9"], ["delete", "--force", "id1"],
                                  ["exec", "--detach", "id1", "true"], ["ps", "--format", "json", "id1"]])
def test_systemd_cgroup_still_reaches_existing_containers(argv: list[str]) -> None:
    """Only creating a container needs a cgroup driver: the other verbs accept the flag."""
    a = cli_args.parse(["--systemd-cgroup", *argv])
    cli.VERBS[a.command](a)


def test_systemd_cgroup_refusal_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.json"
    rc = cli.main(["--log", str(log), "--log-format", "json", "--systemd-cgroup", "create", "--bundle",
                   str(tmp_path), "id1"])
    assert rc == 1
    assert "--systemd-cgroup is not supported" in log.read_text()
    assert "--systemd-cgroup is not supported" in capsys.readouterr().err


def test_preserve_fds_is_parsed_for_create_run_and_exec() -> None:
    for argv in (["create", "--preserve-fds", "2", "id1"], ["run", "--preserve-fds=2", "-d", "id1"],
                 ["exec", "--preserve-fds", "2", "--detach", "id1", "true"]):
        a = cli_args.parse(argv)
        assert cli.VERBS[a.command](a).preserve_fds == 2  # type: ignore[attr-defined]
    a = cli_args.parse(["exec", "--preserve-fds", "two", "id1", "true"])
    with pytest.raises(PyruncError, match="invalid --preserve-fds 'two'"):
        cli.VERBS["exec"](a)


def _cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


def _in_child(preserve: int, no_close_range: bool) -> list[bool]:
    """Run close_extra_fds in a forked child, as the container's last step runs it, with fds
    3..11 open and inheritable; report which of 0..5, 11 and the report pipe are close-on-exec."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.dup2(w, 20, inheritable=True)
            for fd in range(3, 12):
                os.dup2(0, fd, inheritable=True)
            if no_close_range:
                from oci.pyrunc import syscalls as sc

                def enosys(first: int, last: int, flags: int) -> None:
                    raise OSError(38, "close_range: Function not implemented")
                sc.close_range = enosys
            process.PRESERVE_FDS = preserve
            process.close_extra_fds()
            os.write(20, repr([_cloexec(fd) for fd in (0, 1, 2, 3, 4, 5, 11, 20)]).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    os.close(r)
    return ast.literal_eval(got)


@pytest.mark.parametrize("no_close_range", [False, True], ids=["close_range", "proc-fallback"])
def test_close_extra_fds_keeps_stdio_and_the_preserved_ones(no_close_range: bool) -> None:
    assert _in_child(2, no_close_range) == [False, False, False, False, False, True, True, True]
    assert _in_child(0, no_close_range) == [False, False, False, True, True, True, True, True]
