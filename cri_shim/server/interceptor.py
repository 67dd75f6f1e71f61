"""The one place where every RPC is logged and exceptions become gRPC statuses.

`answer_now`, `answer_unary` and `answer_stream` call a servicer's method and raise `RPCFailure`
(a code and a message) for whatever it raised; the built-in server (cri_shim/server/grpc_server.py) sends
that as the call's status, and `LoggingInterceptor` does the same for grpcio's server.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from cri_shim import logs
from cri_shim.encoded import Encoded
from cri_shim.errors import CRIError, oci_code

log = logging.getLogger("cri_shim.rpc")

# Calls the kubelet makes every second or so; logged at DEBUG to keep INFO readable.
POLLING = frozenset({
    "Version", "Status", "ListPodSandbox", "ListContainers", "ListImages", "ImageStatus",
    "ImageFsInfo", "PodSandboxStatus", "ContainerStatus", "ListContainerStats",
    "ListPodSandboxStats", "ContainerStats", "PodSandboxStats", "ListMetricDescriptors",
    "ListPodSandboxMetrics", "RuntimeConfig",
})


def status_for(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """Map an exception to (code, message). Unknown exceptions are INTERNAL."""
    if isinstance(exc, CRIError):
        return exc.code, exc.message
    code = oci_code(exc)
    if code is not None:
        return code, str(exc)
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by cri-shim"
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: timed out: {exc}".rstrip(": ")
    return grpc.StatusCode.INTERNAL, f"{method}: internal error: {type(exc).__name__}: {exc}"


# (method, gRPC code name, seconds): the daemon's metrics
RPCObserver = Callable[[str, str, float], None]


def _ignore(method: str, code: str, seconds: float) -> None:
    pass


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, observe: RPCObserver = _ignore) -> None:
        self._observe = observe
        # method -> (the servicer's handler, our wrapper of it): wrapped once, not per call
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        full = details.method  # "/runtime.v1.RuntimeService/Version"
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, full.rsplit("/", 1)[-1])
        self._wrapped[full] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, short: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, short, self._observe),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, short, self._observe),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _log_failure(method: str, start: float, exc: BaseException, code: grpc.StatusCode,
                 observe: RPCObserver) -> None:
    seconds = time.monotonic() - start
    observe(method, code.name, seconds)
    ms = seconds * 1000
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed in %.1f ms: %s", method, ms, exc, exc_info=exc)
    else:
        log.warning("%s -> %s in %.1f ms: %s", method, code.name, ms, exc)


class RPCFailure(Exception):
    """The call ends with this status; logged and counted already."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _failure(exc: Exception, method: str, start: float, observe: RPCObserver) -> RPCFailure:
    code, message = status_for(exc, method)
    _log_failure(method, start, exc, code, observe)
    return RPCFailure(code, message)


def succeeded(method: str, seconds: float, observe: RPCObserver, ids: logs.Ids = ()) -> None:
    """A call answered OK: counted, and logged with its request's `ids` (the polled calls at
    DEBUG, so the line and its context cost nothing at the default level)."""
    observe(method, "OK", seconds)
    level = logging.DEBUG if method in POLLING else logging.INFO
    if log.isEnabledFor(level):
        token = logs.enter(ids)
        try:
            log.log(level, "%s ok in %.1f ms", method, seconds * 1000)
        finally:
            logs.leave(token)


def answer_now(behavior: Callable[..., Any], method: str, observe: RPCObserver,
               request: Any, context: Any) -> tuple[Any, float, logs.Ids]:
    """What a plain (not async) `behavior` answers `request`, the seconds it took and the
    request's ids (on the log lines inside); the server hands the last two to `succeeded`
    once the answer is written. RPCFailure, logged and counted, for what it raised."""
    ids = logs.request_ids(request)
    token = logs.enter(ids)
    start = time.monotonic()
    try:
        reply = behavior(request, context)
    except Exception as exc:  # noqa: BLE001 - this is the conversion point
        raise _failure(exc, method, start, observe) from exc
    finally:
        logs.leave(token)
    return reply, time.monotonic() - start, ids


async def answer_unary(behavior: Callable[..., Any], method: str, observe: RPCObserver,
                       request: Any, context: Any) -> tuple[Any, float, logs.Ids]:
    """As answer_now, for a `behavior` that may be async; cancellation passes through."""
    ids = logs.request_ids(request)
    token = logs.enter(ids)
    start = time.monotonic()
    try:
        result = behavior(request, context)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 - this is the conversion point
        raise _failure(exc, method, start, observe) from exc
    finally:
        logs.leave(token)
    return result, time.monotonic() - start, ids


async def answer_stream(behavior: Callable[..., Any], method: str, observe: RPCObserver,
                        request: Any, context: Any) -> AsyncIterator[Any]:
    """What `behavior` streams for `request`, logged at the end; RPCFailure for what it raised."""
    start = time.monotonic()
    try:
        produced = behavior(request, context)
        if inspect.isasyncgen(produced):
            async for item in produced:
                yield item
        else:
            await produced
    except Exception as exc:  # noqa: BLE001 - this is the conversion point
        raise _failure(exc, method, start, observe) from exc
    succeeded(method, time.monotonic() - start, observe)


def _wrap_unary(behavior: Callable[..., Any], method: str, observe: RPCObserver) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result, seconds, ids = await answer_unary(behavior, method, observe, request, context)
        except RPCFailure as f:
            await context.abort(f.code, f.message)
        succeeded(method, seconds, observe, ids)
        # grpcio serializes with the response type's own method, which wants a message
        return result.decoded() if isinstance(result, Encoded) else result

    return call


def _wrap_stream(behavior: Callable[..., Any], method: str, observe: RPCObserver) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in answer_stream(behavior, method, observe, request, context):
                yield item
        except RPCFailure as f:
            await context.abort(f.code, f.message)

    return call
