"""Errors the daemon raises, each bound to the gRPC status code it becomes.

Code anywhere in cri_shim raises these; cri_shim/server/interceptor.py is the one
place that turns them (and errors from the `oci` layer, through `oci_code`) into gRPC
statuses. The message must name the object: "container 3f2a… not found", not "not found".
"""

from __future__ import annotations

import grpc

from oci import errors as oci_errors
from oci.spec import SpecError


class CRIError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CRIError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CRIError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(CRIError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(CRIError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(CRIError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(CRIError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(CRIError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(CRIError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(CRIError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(CRIError):
    code = grpc.StatusCode.INTERNAL


# Errors of the low-level layer carry no gRPC knowledge: their class decides, the first match wins
# (subclasses before their base). RuntimeFailure and RuntimeTimeout fall to OCIRuntimeError.
_OCI_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (oci_errors.ContainerNotFound, grpc.StatusCode.NOT_FOUND),
    (oci_errors.ContainerAlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (oci_errors.WrongState, grpc.StatusCode.FAILED_PRECONDITION),
    (oci_errors.OCIRuntimeError, grpc.StatusCode.INTERNAL),
    (SpecError, grpc.StatusCode.INTERNAL),
)


def oci_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC code for an error raised by the `oci` layer; None for any other exception."""
    for cls, code in _OCI_CODES:
        if isinstance(exc, cls):
            return code
    return None
