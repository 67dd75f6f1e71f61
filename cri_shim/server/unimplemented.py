"""Answer UNIMPLEMENTED, naming the method, for every RPC a servicer does not define."""

from __future__ import annotations

from typing import Any

from cri_shim.criapi import api_pb2
from cri_shim.errors import Unimplemented


def fill_unimplemented(cls: type, base: type, service: str) -> type:
    """Replace each inherited generated stub of `base` with one raising Unimplemented."""
    desc = api_pb2.DESCRIPTOR.services_by_name[service]
    for m in desc.methods:
        if getattr(cls, m.name, None) is getattr(base, m.name, None):
            setattr(cls, m.name, _stub(f"/{desc.full_name}/{m.name}", m.server_streaming))
    return cls


def _stub(full_name: str, streaming: bool) -> Any:
    message = f"{full_name} is not implemented by cri-shim yet"
    if streaming:
        async def stream(self: Any, request: Any, context: Any):  # type: ignore[no-untyped-def]
            raise Unimplemented(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(self: Any, request: Any, context: Any) -> Any:
        raise Unimplemented(message)

    return unary
