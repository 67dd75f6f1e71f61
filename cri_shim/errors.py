"""Errors the daemon raises, each bound to the gRPC status code it becomes.

Code anywhere in cri_shim raises these; cri_shim/server/interceptor.py is the one
place that turns them (and errors from the `oci` layer) into gRPC statuses. The
message must name the object: "container 3f2a… not found", not "not found".
"""

from __future__ import annotations

import grpc


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


class PermissionDenied(CRIError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CRIError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(CRIError):
    code = grpc.StatusCode.INTERNAL
