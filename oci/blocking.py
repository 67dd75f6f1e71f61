"""A synchronous facade over an OCIRuntime, for scripts, benchmarks and tests.

It owns one event loop and runs each coroutine method to completion on it; it must not be used
from inside a running event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from oci.runtime import OCIRuntime


class BlockingRuntime:
    def __init__(self, runtime: OCIRuntime) -> None:
        self.runtime = runtime
        self._runner = asyncio.Runner()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.runtime, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> BlockingRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
