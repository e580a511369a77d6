"""Maps Miasma's exception tree to gRPC status codes with ``google.rpc`` details.

The one table here is the only place that decides which code a refusal
gets. Details travel in the ``grpc-status-details-bin`` trailer
(grpcio-status), so any client can read ErrorInfo, BadRequest and
ResourceInfo.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from miasma_grpc.domain import errors

DOMAIN = "miasma"

STATUS_CODES: dict[type[errors.MiasmaError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    # Docker answered and refused (image cannot be pulled, host port taken):
    # the system is not in a state where the change can be made.
    errors.RuntimeFailure: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_code(error: errors.MiasmaError) -> grpc.StatusCode:
    """The gRPC code for ``error`` (walks the class hierarchy)."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.UNKNOWN


# Errors quote the request (names, ports, env keys); a huge request must still get its
# details back, and gRPC drops trailers over 8 KiB. Limits are in UTF-8 bytes: the
# message travels twice (grpc-message, percent-encoded, up to 3x; and inside the
# base64 details), so the worst case stays near 6 KiB.
MAX_MESSAGE = 512
MAX_VIOLATIONS = 6


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 14].decode(errors="ignore") + "…(truncated)"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: errors.MiasmaError) -> grpc.Status:
    """A rich status carrying ErrorInfo, BadRequest and ResourceInfo details."""
    code = status_code(error)
    metadata = {_clip(k, 32): _clip(v, 64) for k, v in list(error.metadata.items())[:8]}
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata))
    ]
    if error.violations:
        shown = error.violations[:MAX_VIOLATIONS]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.field, 96), description=_clip(v.description, 128)
            )
            for v in shown
        ]
        if len(error.violations) > len(shown):
            violations.append(
                error_details_pb2.BadRequest.FieldViolation(
                    description=f"…and {len(error.violations) - len(shown)} more"
                )
            )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    if error.resource:
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type="miasma.v1.App",
                    resource_name=_clip(error.resource, 128),
                    description=_clip(error.message, 256),
                )
            )
        )
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=_clip(error.message, MAX_MESSAGE),
        details=details,
    )
    return rpc_status.to_status(status)
