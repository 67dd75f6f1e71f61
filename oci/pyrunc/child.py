"""How every process pyrunc forks ends.

A forked child runs its work under `run`, which guarantees two things whatever goes wrong
(an error we raise, an OSError, a bug, an import that fails, a signal turned into an
exception): the failure is reported, as one `ERR` line on the sync channel while the parent
listens, on stderr once the channel is closed; and the child `_exit`s. It never returns into
the code it was forked from, where it would run the parent's clean-up (killing the container,
removing its cgroup and state) or its error reporting a second time.
"""

import posix

from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from collections.abc import Callable
    from typing import NoReturn

    from .sync import Channel

LATE_FAILURE = 127  # after READY the container process itself failed to start, as a shell says


def describe(e: BaseException) -> str:
    """One line for the parent: our own messages as they are, OS errors as "what: why",
    anything else (a bug) with its type and where it was raised."""
    if isinstance(e, PyruncError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        msg = e.strerror if e.filename is None else f"{e.filename}: {e.strerror}"
    else:
        msg = f"{type(e).__name__}: {e}"
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        msg += f" ({tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno})"
    return msg


def report(chan: "Channel", e: BaseException, prefix: str = "pyrunc") -> None:
    """Never raises: a failure to report must not stop the child from exiting."""
    try:
        msg = describe(e)
    except BaseException:  # noqa: BLE001 - a broken __str__ still gets a line
        msg = type(e).__name__
    try:
        if not chan.closed:
            chan.send("ERR " + msg)
            return
    except BaseException:  # noqa: BLE001 - the parent is gone; stderr is all that is left
        pass
    try:
        posix.write(2, f"{prefix}: {msg}\n".encode())
    except BaseException:  # noqa: BLE001
        pass


def run(chan: "Channel", work: "Callable[[], object]", prefix: str = "pyrunc") -> "NoReturn":
    """Run `work` in a freshly forked child and _exit: 0 when it returns, non-zero when it
    fails (after reporting), never by returning."""
    code = 1
    try:
        work()
        code = 0
    except SystemExit as e:  # expect_ok: the parent stopped listening, nobody to tell
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - every failure is reported the same way
        code = 1 if not chan.closed else LATE_FAILURE
        report(chan, e, prefix)
    finally:
        posix._exit(code)
