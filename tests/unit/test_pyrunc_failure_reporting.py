"""pyrunc's failure reporting between forked processes, no root: the sync channel stops waiting
when the writer dies even if a copy of its pipe lives on elsewhere, `child.run` reports every
kind of failure and never returns, and the pre-fork checks name what cannot be granted."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from oci.pyrunc import caps, child, idmap, log, process
from oci.pyrunc.create import check_process
from oci.pyrunc.errors import PyruncError
from oci.pyrunc.sync import Channel, pair

LIMIT = 5.0  # seconds; every wait here should end in milliseconds


def _fork(fn: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


@pytest.fixture
def channels() -> Iterator[tuple[Channel, Channel]]:
    """A channel pair, and an alarm that turns a hang into a failure instead of a stuck suite."""
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"still waiting after {2 * LIMIT}s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 2 * LIMIT)
    parent, kid = pair()
    try:
        yield parent, kid
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        parent.close()
        kid.close()


def _timed_recv(chan: Channel) -> tuple[str | None, float]:
    start = time.monotonic()
    msg = chan.recv()
    return msg, time.monotonic() - start


def test_recv_returns_when_the_watched_writer_dies_though_a_copy_of_the_pipe_lives_on(
        channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels
    r, w = os.pipe()

    def writer() -> None:
        # a grandchild that inherited the write end and never uses it: EOF can never come
        holder = os.fork()
        if holder == 0:
            os.close(w)
            time.sleep(60)
            os._exit(0)
        os.write(w, str(holder).encode())
        os._exit(3)  # dies without a word on the channel

    pid = _fork(writer)
    holder = int(os.read(r, 32))
    os.close(r)
    os.close(w)
    try:
        kid.close()  # our own copy, as the parent closes it after fork
        parent.watch(pid)
        msg, took = _timed_recv(parent)
        assert msg is None
        assert took < LIMIT
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            os.waitpid(holder, 0)
        except ChildProcessError:
            pass


def test_a_message_written_just_before_exit_is_still_read(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels
    pid = _fork(lambda: kid.send("PID 42"))
    kid.close()
    parent.watch(pid)
    os.waitpid(pid, 0)  # dead and reaped before we even look
    assert parent.recv() == "PID 42"
    assert parent.recv() is None


def test_watching_a_process_that_is_already_gone(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels
    pid = _fork(lambda: None)
    os.waitpid(pid, 0)
    parent.watch(pid)  # pidfd_open fails with ESRCH: the channel must not wait for EOF then
    msg, took = _timed_recv(parent)
    assert msg is None and took < LIMIT


def test_pending_error_is_read_without_waiting(channels: tuple[Channel, Channel]) -> None:
    """The parent's own step failed (ESRCH moving a dead init into its cgroup): the child's
    error, already in the pipe, is the one to report; with none there, do not wait for one."""
    parent, kid = channels
    assert parent.pending_error() is None  # the writer is alive and silent: no blocking
    kid.send("PID 7")
    kid.send("ERR bind mount source /no-such-dir: No such file or directory")
    assert parent.pending_error() == "bind mount source /no-such-dir: No such file or directory"


def test_a_closed_channel_refuses_to_write_to_a_reused_descriptor(channels: tuple[Channel, Channel]) -> None:
    _, kid = channels
    kid.close()
    assert kid.closed
    with pytest.raises(OSError) as info:
        kid.send("READY")
    assert info.value.errno == errno.EBADF


def _run_in_child(work: Callable[[], object], chan: Channel, parent: Channel,
                  stderr_fd: int | None = None) -> int:
    """child.run in a forked child; returns its wait status. A return from child.run would
    write 'RETURNED' on the channel."""
    pid = os.fork()
    if pid == 0:
        parent.close()
        if stderr_fd is not None:
            os.dup2(stderr_fd, 2)
        try:
            child.run(chan, work)
        finally:
            os.write(chan.wfd if not chan.closed else 2, b"RETURNED\n")
            os._exit(99)
    chan.close()
    parent.watch(pid)
    return pid


def _status(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_child_run_reports_our_errors_verbatim_and_exits_nonzero(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels

    def fail() -> None:
        raise PyruncError("unable to apply caps: CAP_SYS_RESOURCE is not in the capability bounding set")

    pid = _run_in_child(fail, kid, parent)
    assert parent.recv() == "ERR unable to apply caps: CAP_SYS_RESOURCE is not in the capability bounding set"
    assert parent.recv() is None
    assert _status(pid) == 1


def test_child_run_reports_bugs_with_where_they_happened(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels

    def bug() -> None:
        {}["missing"]  # noqa: B018 - the point is the KeyError

    pid = _run_in_child(bug, kid, parent)
    msg = parent.recv()
    assert msg is not None and msg.startswith("ERR KeyError: 'missing' (test_pyrunc_failure_reporting.py:")
    assert _status(pid) == 1


def test_child_run_survives_an_exception_that_cannot_be_printed(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    def fail() -> None:
        raise Unprintable()

    pid = _run_in_child(fail, kid, parent)
    assert parent.recv() == "ERR Unprintable"
    assert _status(pid) == 1


def test_child_run_exits_zero_without_returning(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels
    pid = _run_in_child(lambda: None, kid, parent)
    assert parent.recv() is None  # no RETURNED line: run() never came back
    assert _status(pid) == 0


def test_child_run_is_silent_when_the_parent_gave_up(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels

    def give_up() -> None:
        raise SystemExit(1)

    pid = _run_in_child(give_up, kid, parent)
    assert parent.recv() is None
    assert _status(pid) == 1


def test_child_run_reports_on_stderr_once_the_channel_is_closed(channels: tuple[Channel, Channel]) -> None:
    parent, kid = channels
    r, w = os.pipe()

    def after_ready() -> None:
        kid.close()
        raise PyruncError("exec /bin/sh: no such file or directory")

    pid = _run_in_child(after_ready, kid, parent, stderr_fd=w)
    os.close(w)
    assert _status(pid) == child.LATE_FAILURE
    assert os.read(r, 4096) == b"pyrunc: exec /bin/sh: no such file or directory\n"
    os.close(r)


def test_describe_os_errors() -> None:
    e = PermissionError(errno.EACCES, "Permission denied", "/proc/self/oom_score_adj")
    assert child.describe(e) == "/proc/self/oom_score_adj: Permission denied"
    assert child.describe(OSError(errno.EPERM, "capset: Operation not permitted")) == \
        "capset: Operation not permitted"


# --- the checks made before forking ------------------------------------------------------

ALL_BUT_SYS_RESOURCE = ((1 << 41) - 1) & ~(1 << caps.NUMBERS["CAP_SYS_RESOURCE"])


def test_missing_capabilities_are_named_in_number_order() -> None:
    want = {"bounding": ["CAP_SYS_RESOURCE"], "effective": ["CAP_SYS_RESOURCE", "CAP_CHOWN"],
            "permitted": ["sys_time", "CAP_CHOWN"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_BPF"]}
    held = (1 << caps.NUMBERS["CAP_CHOWN"])
    assert caps.missing(want, held, held, 40) == ["CAP_KILL", "CAP_SYS_RESOURCE", "CAP_SYS_TIME"]
    # the bounding and ambient lists cannot make capset fail, and caps beyond the kernel's are ignored
    assert caps.missing({"bounding": ["CAP_SYS_RESOURCE"], "ambient": ["CAP_BPF"]}, 0, 0, 40) == []
    assert caps.missing({"effective": ["CAP_CHECKPOINT_RESTORE"]}, 0, 0, 39) == []


def test_unavailable_message_keeps_runc_words_and_names_the_capability() -> None:
    msg = caps.unavailable_message(["CAP_SYS_RESOURCE"], ALL_BUT_SYS_RESOURCE)
    assert msg.startswith("unable to apply caps: CAP_SYS_RESOURCE is not in the capability bounding set")
    assert msg.endswith("operation not permitted")
    both = caps.unavailable_message(["CAP_SYS_RESOURCE", "CAP_SYS_TIME"], (1 << 41) - 1)
    assert "CAP_SYS_RESOURCE, CAP_SYS_TIME are not in the permitted capabilities" in both


def _proc(**user: object) -> dict[str, object]:
    return {"user": user, "capabilities": {k: ["CAP_CHOWN", "CAP_SYS_RESOURCE"]
                                           for k in ("bounding", "effective", "permitted")}}


def test_check_process_refuses_capabilities_the_runtime_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "held", lambda: (ALL_BUT_SYS_RESOURCE, ALL_BUT_SYS_RESOURCE))
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    with pytest.raises(PyruncError, match="CAP_SYS_RESOURCE is not in the capability bounding set"):
        check_process(_proc(uid=0, gid=0), {"namespaces": [{"type": "mount"}]})
    # a user namespace starts with every capability: capset there is the kernel's business
    check_process(_proc(uid=0, gid=0), {"namespaces": [{"type": "user", "path": "/proc/1/ns/user"}]})


def test_check_process_refuses_users_outside_the_id_mappings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "held", lambda: (0, 0))  # not consulted with a new user namespace
    maps = [{"containerID": 0, "hostID": 100000, "size": 10}]
    linux = {"namespaces": [{"type": "user"}], "uidMappings": maps, "gidMappings": maps}
    check_process(_proc(uid=0, gid=0, additionalGids=[9]), linux)
    with pytest.raises(PyruncError, match="uid 1000 is unmapped in the user namespace"):
        check_process(_proc(uid=1000, gid=0), linux)
    with pytest.raises(PyruncError, match="gid 10 is unmapped"):
        check_process(_proc(uid=0, gid=0, additionalGids=[1, 10]), linux)


def test_id_mapping_ranges() -> None:
    maps = [{"containerID": 0, "hostID": 1000, "size": 1},
            {"containerID": 1, "hostID": 100000, "size": 65536}]
    assert idmap.is_mapped(0, maps) and idmap.is_mapped(65536, maps)
    assert not idmap.is_mapped(65537, maps)
    assert idmap.unmapped_user({}, maps, maps) is None


# --- the executable, looked up as runc does ------------------------------------------------

def test_lookup_wording(tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    script = os.path.join(d, "run.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(script, 0o755)
    data = os.path.join(d, "data")
    with open(data, "w") as f:
        f.write("x")
    os.chmod(data, 0o644)
    assert process.lookup(script, {}) == script
    assert process.lookup("run.sh", {"PATH": f"/nonexistent:{d}"}) == script
    with pytest.raises(PyruncError, match=r'^exec: "/nope/x": stat /nope/x: no such file or directory$'):
        process.lookup("/nope/x", {})
    with pytest.raises(PyruncError, match=r'^exec: ".*data": permission denied$'):
        process.lookup(data, {})
    with pytest.raises(PyruncError, match=r'^exec: ".*": permission denied$'):
        process.lookup(d, {})  # a directory is never executable, whatever its mode
    with pytest.raises(PyruncError, match=r'^exec: "nope": executable file not found in \$PATH$'):
        process.lookup("nope", {"PATH": d})


def test_unmapped_id_error_names_the_id() -> None:
    def setter(a: int, b: int, c: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    with pytest.raises(PyruncError, match="^unable to setup user: cannot set uid to 1000: unmapped in"):
        process._set_id("uid", 1000, setter)


def test_text_log_lines_quote_the_message_as_logrus_does() -> None:
    line = log._line("error", 'exec: "/no/such": stat /no/such\nsecond line')
    assert line.endswith(' level=error msg="exec: \\"/no/such\\": stat /no/such\\nsecond line"\n'), line
