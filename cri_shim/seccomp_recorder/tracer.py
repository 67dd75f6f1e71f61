"""The tracer program: `python -m cri_shim.seccomp_recorder.tracer --pid PID --output FILE ...`.

It runs as a process of its own (its waitpid loop blocks), started by the daemon after the
runtime's `create` and before `start`. It seizes every thread of the container's init
(PTRACE_SEIZE with TRACESYSGOOD | TRACEFORK | TRACEVFORK | TRACECLONE | TRACEEXEC, never
EXITKILL), interrupts each so that it can be resumed with PTRACE_SYSCALL, then says "ok" on the
readiness descriptor: only then does the daemon run `start`, so nothing the container does
escapes the trace. Every fork, vfork and clone is followed (the kernel attaches the child),
every syscall entry is recorded as (audit architecture, number) with PTRACE_GET_SYSCALL_INFO,
and when the last traced process is gone the profile (`profile.build`) is written atomically to
FILE, with FILE's name in the log line the daemon keeps.

Behaviour is kept: a signal-delivery-stop is resumed with the same signal (re-injected); a
group-stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU under PTRACE_SEIZE) is resumed with
PTRACE_LISTEN, so the process stays stopped until a SIGCONT, as it would untraced; exit codes
are the kernel's own (the tracer only reaps its ptrace notifications).

Detaching: when the daemon goes away (the write end of --watch-fd closes: the daemon exited,
was killed, or dropped the recording) or on SIGTERM/SIGINT/SIGHUP, every tracee is interrupted
(PTRACE_INTERRUPT) and detached with the signal it was about to receive, a group-stopped one
left stopped; the container keeps running untraced. What was seen so far goes to FILE.partial,
never to FILE: a profile missing the calls of the rest of the run must not pass for a whole one.

python-ptrace provides the ptrace(2) entry (`ptrace.binding.func.ptrace`, which raises
PtraceError with the errno), PTRACE_SETOPTIONS/GETEVENTMSG/SYSCALL/DETACH through its
`ptrace_*` helpers, the PTRACE_O_* and PTRACE_EVENT_* constants, and the syscall name tables
(`syscall_names`). It has no PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_LISTEN or
PTRACE_GET_SYSCALL_INFO: those go through the same entry with their numbers from
<linux/ptrace.h>, the last with a ctypes struct.

The main loop never blocks in waitpid: SIGCHLD (a tracee stopped or exited) and the watch
descriptor are both waited for with select (SIGCHLD through signal.set_wakeup_fd), and stops
are collected with waitpid(WNOHANG). A detach request is therefore only ever acted on between
two fully handled stops.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import sys
import time
from pathlib import Path

from ptrace import PtraceError
from ptrace.binding import func as pt

from cri_shim.atomic_file import SHARED_FILE, write_atomic
from cri_shim.seccomp_recorder import annotation, profile

PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_EVENT_STOP = 128
SYSCALL_INFO_ENTRY = 1
WALL = 0x40000000  # __WALL: threads too

OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_TRACEVFORK
           | pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEEXEC)
STOPPING = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
SYSCALL_TRAP = signal.SIGTRAP | 0x80
FORK_EVENTS = {pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE}


class SyscallInfo(ctypes.Structure):
    """struct ptrace_syscall_info up to the entry's number (the rest is not read)."""

    _fields_ = [("op", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("arch", ctypes.c_uint32),
                ("instruction_pointer", ctypes.c_uint64), ("stack_pointer", ctypes.c_uint64),
                ("nr", ctypes.c_uint64), ("args", ctypes.c_uint64 * 6), ("ret_data", ctypes.c_uint32),
                ("pad2", ctypes.c_uint32)]


class Tracer:
    def __init__(self) -> None:
        self.tracees: set[int] = set()
        # audit arch -> syscall numbers entered
        self.observed: dict[int, set[int]] = {}
        self._info = SyscallInfo()
        self._info_addr = ctypes.addressof(self._info)
        self.stops = 0

    # --- attaching -------------------------------------------------------------------

    def seize(self, pid: int) -> None:
        """Seize every thread of `pid`, again until no thread is new (one may be cloned by a
        thread not yet seized), and interrupt each so it stops where it is."""
        me = str(os.getpid())
        while True:
            try:
                tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")} - self.tracees
            except FileNotFoundError:
                raise RuntimeError(f"process {pid} is gone") from None
            if not tids:
                break
            for tid in tids:
                try:
                    pt.ptrace(PTRACE_SEIZE, tid, 0, OPTIONS)
                except PtraceError as e:
                    if e.errno == errno.ESRCH:
                        continue  # the thread exited in between
                    if e.errno == errno.EPERM and _tracer_of(tid) == me:
                        self.tracees.add(tid)  # cloned by a seized thread: attached already
                        continue
                    raise
                self.tracees.add(tid)
                _ignore_esrch(pt.ptrace, PTRACE_INTERRUPT, tid)
        if not self.tracees:
            raise RuntimeError(f"process {pid} is gone")

    def wait_initial_stops(self) -> None:
        """Handle stops until every seized thread has stopped once and been resumed under
        PTRACE_SYSCALL: from then on each of its calls is seen."""
        pending = set(self.tracees)
        while pending & self.tracees:
            pid, status = os.waitpid(-1, WALL)
            pending.discard(pid)
            self.handle(pid, status)

    # --- the loop ----------------------------------------------------------------------

    def handle(self, pid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.tracees.discard(pid)
            return
        if not os.WIFSTOPPED(status):
            return
        self.tracees.add(pid)  # a new child may report before its parent's fork event
        self.stops += 1
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if sig == SYSCALL_TRAP:
            if self._syscall_entry(pid):
                self.observed.setdefault(self._info.arch, set()).add(self._info.nr)
            self._resume(pid, 0)
        elif event == PTRACE_EVENT_STOP:
            if sig in STOPPING:
                _ignore_esrch(pt.ptrace, PTRACE_LISTEN, pid)  # group-stop: stay stopped
            else:
                self._resume(pid, 0)  # our interrupt, or a new child's first stop
        elif event in FORK_EVENTS:
            child = _event_msg(pid)
            if child:
                self.tracees.add(child)
            self._resume(pid, 0)
        elif event == pt.PTRACE_EVENT_EXEC:
            former = _event_msg(pid)
            if former and former != pid:
                self.tracees.discard(former)  # a thread that exec'd now has the leader's pid
            self._resume(pid, 0)
        elif event:
            self._resume(pid, 0)
        else:
            self._resume(pid, sig)  # signal-delivery-stop: deliver it

    def _syscall_entry(self, pid: int) -> bool:
        try:
            pt.ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(SyscallInfo), self._info_addr)
        except PtraceError as e:
            if e.errno == errno.ESRCH:
                return False
            raise
        return self._info.op == SYSCALL_INFO_ENTRY

    @staticmethod
    def _resume(pid: int, sig: int) -> None:
        _ignore_esrch(pt.ptrace_syscall, pid, sig)

    def drain(self) -> bool:
        """Handle every stop and exit waiting; False once no tracee is left."""
        while self.tracees:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                self.tracees.clear()
                break
            if pid == 0:
                break
            self.handle(pid, status)
        return bool(self.tracees)

    def detach_all(self, deadline: float) -> None:
        """Interrupt every tracee and detach it once it has stopped, handing it the signal it
        was stopped for (a group-stopped one is detached stopped, as it would be untraced)."""
        for pid in list(self.tracees):
            _ignore_esrch(pt.ptrace, PTRACE_INTERRUPT, pid)
        while self.tracees and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.001)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.tracees.discard(pid)
                continue
            sig = os.WSTOPSIG(status)
            event = status >> 16
            inject = 0
            if event in FORK_EVENTS:
                child = _event_msg(pid)
                if child and child not in self.tracees:
                    self.tracees.add(child)  # it reports its first stop next; detached then
            elif event == pt.PTRACE_EVENT_EXEC:
                former = _event_msg(pid)
                if former and former != pid:
                    self.tracees.discard(former)
            elif event == 0 and sig != SYSCALL_TRAP:
                inject = sig
            _ignore_esrch(pt.ptrace_detach, pid, inject)
            self.tracees.discard(pid)


def _tracer_of(tid: int) -> str:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return line.split()[1]
    except OSError:
        pass
    return ""


def _event_msg(pid: int) -> int:
    try:
        return int(pt.ptrace_geteventmsg(pid))
    except PtraceError:
        return 0


def _ignore_esrch(fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except PtraceError as e:
        if e.errno != errno.ESRCH:
            raise


def write_profile(t: Tracer, output: Path, tail: tuple[str, ...]) -> None:
    doc, unknown = profile.build(t.observed, tail)
    write_atomic(output, json.dumps(doc, indent=2) + "\n", SHARED_FILE)
    names = profile.allowed(doc)
    print(f"seccomp recorder: wrote {output}: {len(names)} calls allowed "
          f"({sum(len(v) for v in t.observed.values())} observed, {len(tail)} runtime tail; "
          f"{t.stops} ptrace stops)", file=sys.stderr)
    for u in unknown:
        print(f"seccomp recorder: {u} has no name and is not in the profile", file=sys.stderr)


def run(pid: int, output: Path, tail: tuple[str, ...], ready_fd: int, watch_fd: int) -> int:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda s, f: None)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    t = Tracer()
    try:
        t.seize(pid)
        t.wait_initial_stops()
    except (PtraceError, RuntimeError, OSError) as e:
        os.write(ready_fd, f"error: attaching to process {pid}: {e}\n".encode())
        t.detach_all(time.monotonic() + 5)
        return 1
    os.write(ready_fd, b"ok\n")
    os.close(ready_fd)
    print(f"seccomp recorder: tracing process {pid} ({len(t.tracees)} threads) into {output}",
          file=sys.stderr)
    detached = False
    while t.drain():
        if stop:
            detached = True
            break
        ready, _, _ = select.select([wake_r, watch_fd], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        if watch_fd in ready and not os.read(watch_fd, 64):
            detached = True
            break
    if detached:
        t.detach_all(time.monotonic() + 10)
        partial = annotation.partial_path(output)
        print(f"seccomp recorder: detached from process {pid} before it exited; "
              f"the calls seen so far go to {partial}", file=sys.stderr)
        write_profile(t, partial, tail)
        return 3
    write_profile(t, output, tail)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cri_shim.seccomp_recorder.tracer")
    p.add_argument("--pid", type=int, required=True, help="the created container's init")
    p.add_argument("--output", required=True, help="the profile to write")
    p.add_argument("--tail", default="", help="calls the runtime makes before the attach, comma-separated")
    p.add_argument("--ready-fd", type=int, required=True, help='"ok" or an error is written here')
    p.add_argument("--watch-fd", type=int, required=True, help="EOF here means: detach")
    args = p.parse_args(argv)
    tail = tuple(n for n in args.tail.split(",") if n)
    return run(args.pid, Path(args.output), tail, args.ready_fd, args.watch_fd)


if __name__ == "__main__":
    sys.exit(main())
