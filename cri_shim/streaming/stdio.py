"""What a streaming session hands the container side: the client's streams, protocol-free.

The protocol layer (SPDY or WebSocket) fills `stdin` and `resize` as frames arrive and puts
None on each at the client's end of stream; the container side calls the write methods and
returns an exit code. Cancelling the container side's task means the client went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


Writer = Callable[[bytes], Awaitable[None]]


@dataclass
class StreamIO:
    """One exec or attach session's streams. A stream the client did not ask for is None."""

    stdin: asyncio.Queue[bytes | None] | None = None
    stdout: Writer | None = None
    stderr: Writer | None = None
    tty: bool = False
    resize: asyncio.Queue[TerminalSize | None] = field(default_factory=asyncio.Queue)
    # The client has a resize stream: its first message (sent as it connects) is the size
    # the process should start with.
    sizes_coming: bool = False

    async def read_stdin(self) -> bytes:
        """The next chunk of stdin; b"" at its end (or when there is no stdin)."""
        if self.stdin is None:
            return b""
        chunk = await self.stdin.get()
        if not chunk:
            self.stdin.put_nowait(None)  # the end stays the end for every later read
            return b""
        return chunk
