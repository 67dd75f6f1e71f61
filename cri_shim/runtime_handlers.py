"""Runtime handlers: which OCI runtime binary serves a CRI runtime_handler name, and the
HandlerRuntime (cri_shim.runtimes) that runs its containers.

A handler whose binary is missing stays configured and is reported in Status
(RuntimeReady names it); only using it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri_shim.config import Config, RuntimeHandlerConfig
from cri_shim.errors import FailedPrecondition, NotFound
from cri_shim.runtimes.conmon_oci import ConmonSettings, conmon_oci_runtime
from cri_shim.runtimes.handler_runtime import HandlerRuntime
from cri_shim.runtimes.observed import ObservedRuntime, Observer
from oci.errors import OCIRuntimeError

# How long a runtime may take to print its `features` at start-up.
FEATURES_TIMEOUT = 10.0


def resolve_binary(binary: str) -> str | None:
    """Absolute path of `binary`: as given if absolute, else PATH, else beside our interpreter.

    Looking beside sys.executable finds console scripts of our own virtualenv (pyrunc)
    when the venv is not activated, as under a service manager.
    """
    if os.path.isabs(binary):
        return binary if os.access(binary, os.X_OK) else None
    found = shutil.which(binary)
    if found:
        return found
    candidate = Path(sys.executable).parent / binary
    return str(candidate) if os.access(candidate, os.X_OK) else None


@dataclass
class Handler:
    name: str
    config: RuntimeHandlerConfig
    root: Path
    path: str | None
    # The runtime's own `features` document, when it has one.
    features: dict[str, Any] = field(default_factory=dict)
    # What runs its containers; None while the binary is missing.
    runtime: HandlerRuntime | None = None

    @property
    def available(self) -> bool:
        return self.path is not None

    @property
    def recursive_read_only_mounts(self) -> bool:
        return "rro" in (self.features.get("mountOptions") or [])

    @property
    def user_namespaces(self) -> bool:
        linux = self.features.get("linux") or {}
        idmap = (linux.get("mountExtensions") or {}).get("idmap") or {}
        return "user" in (linux.get("namespaces") or []) and bool(idmap.get("enabled"))


class HandlerRegistry:
    def __init__(self, config: Config) -> None:
        self.default = config.default_runtime
        self.conmon = ConmonSettings.from_config(config)
        self.handlers: dict[str, Handler] = {}
        for name, rt in config.runtimes.items():
            handler = Handler(name, rt, config.runtime_root(name), resolve_binary(rt.binary))
            if handler.path is not None:
                # Only "oci" exists (Config.validate refuses others); another kind of
                # handler, a micro-VM runtime say, would choose its HandlerRuntime here.
                handler.runtime = conmon_oci_runtime(name, handler.path, handler.root, rt, self.conmon)
            self.handlers[name] = handler

    def observe(self, observer: Observer) -> None:
        """Report every runtime operation (handler, verb, seconds, failed) to observer."""
        for handler in self.handlers.values():
            if handler.runtime is not None:
                handler.runtime = ObservedRuntime(handler.runtime, observer)

    async def probe_features(self) -> None:
        """Ask each available runtime for `features`; a runtime without the verb has none."""
        await asyncio.gather(*(self._probe(h) for h in self.handlers.values() if h.runtime))

    async def _probe(self, handler: Handler) -> None:
        assert handler.runtime
        try:
            handler.features = await asyncio.wait_for(handler.runtime.features(), FEATURES_TIMEOUT)
        except (OCIRuntimeError, OSError, TimeoutError, ValueError):
            handler.features = {}

    def get(self, name: str) -> Handler:
        """The handler for a CRI runtime_handler ('' means the default)."""
        handler = self.handlers.get(name or self.default)
        if handler is None:
            raise NotFound(
                f"runtime handler {name!r} is not configured (known: {', '.join(sorted(self.handlers))})"
            )
        if not handler.available:
            raise FailedPrecondition(
                f"runtime handler {handler.name!r}: binary {handler.config.binary!r} not found"
            )
        return handler

    def runtime(self, name: str) -> HandlerRuntime:
        """What runs the containers of a handler; NotFound or FailedPrecondition as get()."""
        runtime = self.get(name).runtime
        assert runtime is not None  # get() refuses a handler without its binary
        return runtime

    def missing(self) -> list[Handler]:
        return [h for h in self.handlers.values() if not h.available]
