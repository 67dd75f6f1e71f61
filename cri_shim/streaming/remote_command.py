"""Running an exec or attach session once its transport has its streams, whatever the transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cri_shim.errors import CRIError
from cri_shim.streaming.status import CommandResult
from cri_shim.streaming.stdio import StreamIO
from cri_shim.streaming.targets import AttachTarget, Backend, ExecTarget

log = logging.getLogger(__name__)


async def run_command(backend: Backend, target: ExecTarget | AttachTarget, io: StreamIO) -> CommandResult:
    """The session's result; a failure to run becomes an error result, never an exception."""
    try:
        if isinstance(target, ExecTarget):
            code = await backend.exec(target, io)
            return CommandResult(exit_code=code, command=target.cmd)
        await backend.attach(target, io)
        return CommandResult(exit_code=0)
    except CRIError as e:
        return CommandResult(exit_code=None, error=str(e))
    except OSError as e:
        log.warning("streaming %s in container %s failed: %s", type(target).__name__, target.container_id, e)
        return CommandResult(exit_code=None, error=f"{e.strerror or e}")


async def until_client_leaves(session: Awaitable[CommandResult], client_gone: asyncio.Future[None],
                              on_gone: Callable[[], None] | None = None) -> CommandResult | None:
    """The session's result, or None once the client has gone (the session is then cancelled,
    which kills an exec'd process)."""
    task = asyncio.ensure_future(session)
    try:
        await asyncio.wait({task, client_gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    if task.done():
        return task.result()
    if on_gone:
        on_gone()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
