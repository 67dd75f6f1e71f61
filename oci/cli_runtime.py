"""OCIRuntime over any binary that speaks the runc command-line interface (runc, crun, pyrunc).

Each call gets its own json log file (runtimes append to --log, and concurrent calls on one file
could not be told apart). Commands whose children outlive them (create, detached exec) never get
pipes: the container would inherit the write end and a reader would wait for EOF forever. Their
stdio go to the caller's files or /dev/null and errors are read from the log file instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal as _signal
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from oci.cli_errors import make_error, parse_log
from oci.errors import RuntimeFailure, RuntimeTimeout
from oci.runtime import CommandLineRuntime, State, Stdio, StdioTarget, StrPath
from oci.spec import Process, Resources


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    log: str


class CLIRuntime(CommandLineRuntime):
    """Drive ``binary`` with ``--root root``; ``name`` labels errors (defaults to the binary's name).

    ``log_dir`` holds the per-call log and process/resources files (default ``<root>.cli``).
    """

    def __init__(self, binary: str, root: StrPath, *, name: str | None = None, log_dir: StrPath | None = None,
                 systemd_cgroup: bool = False, global_args: Sequence[str] = (), timeout: float = 120.0,
                 env: dict[str, str] | None = None) -> None:
        resolved = shutil.which(binary) if os.sep not in binary else binary
        if not resolved:
            raise FileNotFoundError(f"OCI runtime binary {binary!r} not found in PATH")
        self.binary = resolved
        self.name = name or os.path.basename(binary)
        self.root = os.path.abspath(os.fspath(root))
        # beside the root, not in it: every directory under --root is taken for a container by `list`
        self.log_dir = os.fspath(log_dir) if log_dir is not None else f"{self.root}.cli"
        self.systemd_cgroup = systemd_cgroup
        self.global_args = list(global_args)
        self.timeout = timeout
        self.env = env
        # crun's `exec -t` in the foreground copies its terminal's size only once, at the start
        # (no SIGWINCH); it takes a --console-socket in the foreground instead, which runc
        # refuses ("cannot use console socket if runc will not detach").
        self.foreground_console_socket = os.path.basename(self.binary) == "crun"

    def __repr__(self) -> str:
        return f"CLIRuntime({self.name!r}, binary={self.binary!r}, root={self.root!r})"

    def runtime_args(self) -> list[str]:
        """Global options that select this handler's state, for a monitor that runs the runtime
        itself (conmon: one ``--runtime-arg`` each)."""
        # One word each: conmon passes every --runtime-arg through as one argument.
        args = [f"--root={self.root}"]
        if self.systemd_cgroup:
            args.append("--systemd-cgroup")
        return args + self.global_args

    # --- plumbing ---

    def _argv(self, log_file: str | None, args: Sequence[str]) -> list[str]:
        """The one place a command line of this runtime is put together."""
        argv = [self.binary, "--root", self.root]
        if log_file is not None:
            argv += ["--log", log_file, "--log-format", "json"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        return argv + self.global_args + list(args)

    @contextlib.contextmanager
    def _log_file(self, command: str) -> Iterator[str]:
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{command}-", suffix=".json", dir=self.log_dir)
        os.close(fd)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def invoke(self, command: str, args: Sequence[str], *, container_id: str | None = None,
                  stdio: Stdio | None = None, inherit_stdio: bool = False, check: bool = True,
                  timeout: float | None = None) -> CommandResult:
        """Run one runtime command. With ``inherit_stdio`` the runtime (and what it spawns) get
        ``stdio`` instead of pipes, and only the log file tells what went wrong."""
        with self._log_file(command) as log_file, contextlib.ExitStack() as stack:
            argv = self._argv(log_file, [command, *args])
            if inherit_stdio:
                stdio = stdio or Stdio()
                fds = (_open(stdio.stdin, os.O_RDONLY, stack), _open(stdio.stdout, os.O_WRONLY, stack),
                       _open(stdio.stderr, os.O_WRONLY, stack))
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], env=self.env)
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=self.env)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout or self.timeout)
            except TimeoutError:
                raise RuntimeTimeout(f"{self.name} {command} timed out after {timeout or self.timeout}s",
                                     runtime=self.name, command=command, container_id=container_id) from None
            finally:
                # Timed out, or the caller was cancelled: leave no runtime command behind.
                await _reap(proc)
            assert proc.returncode is not None
            with open(log_file, errors="replace") as f:
                log = f.read()
            result = CommandResult(proc.returncode, (out or b"").decode(errors="replace"),
                                   (err or b"").decode(errors="replace"), log)
        if check and result.exit_code != 0:
            raise make_error(runtime=self.name, command=command, exit_code=result.exit_code,
                             log_text=result.log, stderr=result.stderr, container_id=container_id,
                             root=self.root)
        return result

    def _json_file(self, prefix: str, document: dict[str, Any], stack: contextlib.ExitStack) -> str:
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".json", dir=self.log_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f)
        stack.callback(lambda: os.path.exists(path) and os.unlink(path))
        return path

    # --- OCIRuntime ---

    async def create(self, container_id: str, bundle: StrPath, *, pid_file: StrPath | None = None,
                     console_socket: StrPath | None = None, no_pivot: bool = False,
                     no_new_keyring: bool = False, stdio: Stdio | None = None) -> None:
        args = ["--bundle", os.path.abspath(os.fspath(bundle))]
        if pid_file is not None:
            args += ["--pid-file", os.path.abspath(os.fspath(pid_file))]
        if console_socket is not None:
            args += ["--console-socket", os.path.abspath(os.fspath(console_socket))]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        await self.invoke("create", [*args, container_id], container_id=container_id, stdio=stdio,
                       inherit_stdio=True)

    async def start(self, container_id: str) -> None:
        await self.invoke("start", [container_id], container_id=container_id)

    async def state(self, container_id: str) -> State:
        result = await self.invoke("state", [container_id], container_id=container_id)
        try:
            return State.from_dict(json.loads(result.stdout))
        except ValueError as e:
            raise RuntimeFailure(f"{self.name} state {container_id!r}: unreadable output: {e}",
                                 runtime=self.name, command="state", container_id=container_id) from None

    async def list(self) -> list[State]:
        result = await self.invoke("list", ["--format", "json"])
        data = json.loads(result.stdout or "null") or []  # runc prints "null" for none
        return [State.from_dict(item) for item in data]

    async def kill(self, container_id: str, signal: int | str = _signal.SIGTERM, *,
                   all: bool = False) -> None:
        sig = str(int(signal)) if isinstance(signal, int) else signal
        args = ["--all"] if all else []
        await self.invoke("kill", [*args, container_id, sig], container_id=container_id)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        args = ["--force"] if force else []
        await self.invoke("delete", [*args, container_id], container_id=container_id)

    async def exec(self, container_id: str, process: Process, *, pid_file: StrPath | None = None,
                   console_socket: StrPath | None = None, detach: bool = False,
                   stdio: Stdio | None = None) -> int:
        with contextlib.ExitStack() as stack:
            process_file = self._json_file("process-", process.to_dict(), stack)
            args = ["--process", process_file]
            if pid_file is not None:
                args += ["--pid-file", os.path.abspath(os.fspath(pid_file))]
            if console_socket is not None:
                args += ["--console-socket", os.path.abspath(os.fspath(console_socket))]
            if detach:
                args.append("--detach")
            # runc exec exits with the process's own status; only the log tells a runtime failure apart
            result = await self.invoke("exec", [*args, container_id], container_id=container_id, stdio=stdio,
                                    inherit_stdio=True, check=False, timeout=None if detach else 24 * 3600)
            failed = any(e.level in ("error", "fatal", "panic") for e in parse_log(result.log))
            if failed or (detach and result.exit_code != 0):
                raise make_error(runtime=self.name, command="exec", exit_code=result.exit_code,
                                 log_text=result.log, container_id=container_id, root=self.root)
            return result.exit_code

    @contextlib.asynccontextmanager
    async def exec_piped(self, container_id: str, process: Process, *, pid_file: StrPath,
                         stdin: int = asyncio.subprocess.DEVNULL, stdout: int = asyncio.subprocess.PIPE,
                         stderr: int = asyncio.subprocess.PIPE, console_socket: StrPath | None = None,
                         ) -> AsyncIterator[asyncio.subprocess.Process]:
        # No --log: the runtime's own complaint (no such executable, say) then reaches the
        # caller on stderr, as the exec'd process's would, which is where ExecSync reports it.
        with contextlib.ExitStack() as stack:
            process_file = self._json_file("process-", process.to_dict(), stack)
            tty = ["-t"] if process.terminal else []
            if console_socket is not None:
                tty += ["--console-socket", os.fspath(console_socket)]
            argv = self._argv(None, ["exec", *tty, "--process", process_file,
                                     "--pid-file", os.path.abspath(os.fspath(pid_file)), container_id])
            # A session of its own: a terminal given as its stdio is then no one else's, and
            # the caller's signals (a ^C in a test's terminal) do not reach it.
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=stdin, stdout=stdout, stderr=stderr, env=self.env,
                start_new_session=True)
            try:
                yield proc
            finally:
                await _reap(proc)

    async def update(self, container_id: str, resources: Resources) -> None:
        with contextlib.ExitStack() as stack:
            path = self._json_file("resources-", resources.to_dict(), stack)
            await self.invoke("update", ["--resources", path, container_id], container_id=container_id)

    async def pause(self, container_id: str) -> None:
        await self.invoke("pause", [container_id], container_id=container_id)

    async def resume(self, container_id: str) -> None:
        await self.invoke("resume", [container_id], container_id=container_id)

    async def pids(self, container_id: str) -> list[int]:
        result = await self.invoke("ps", ["--format", "json", container_id], container_id=container_id)
        return [int(p) for p in json.loads(result.stdout or "null") or []]

    async def features(self) -> dict[str, Any]:
        result = await self.invoke("features", [])
        return dict(json.loads(result.stdout))


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _open(target: StdioTarget, flags: int, stack: contextlib.ExitStack) -> int:
    if target is None:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    elif isinstance(target, int):
        return target
    else:
        extra = os.O_CREAT | os.O_APPEND if flags & os.O_WRONLY else 0
        fd = os.open(os.fspath(target), flags | extra | os.O_CLOEXEC, 0o644)
    stack.callback(os.close, fd)
    return fd
