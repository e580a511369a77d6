"""One exception type for every failed call, translated once at the edge.

gRPC failures arrive as ``grpc.RpcError`` (blocking) or ``grpc.aio.AioRpcError``
(async); both carry the server's ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer. :func:`from_rpc_error` reads it, so
callers see the code, Miasma's reason and the offending fields without
knowing about trailers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request and why it was refused."""

    field: str
    description: str


class MiasmaError(Exception):
    """A call to Miasma failed: raised for every error status, never for success.

    ``code`` is the gRPC status code, ``reason`` Miasma's machine-readable
    reason (``PORT_IN_USE``, ``APP_NOT_FOUND``, …; empty when the
    failure came from the transport, not the server), ``violations`` the
    fields of the request that were refused, and ``resource`` the app that
    holds a contested resource, if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
        resource: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = violations
        self.resource = resource
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        """One line: ``message (CODE REASON; field: f)``."""
        tags = " ".join(part for part in (self.code.name, self.reason) if part)
        # The server's messages usually start with the field; don't say it twice.
        fields = [v.field for v in self.violations if not self.message.startswith(v.field)]
        if fields:
            tags += f"; field: {', '.join(fields)}"
        return f"{self.message} ({tags})"


class InvalidInput(MiasmaError, ValueError):
    """Input the client refuses before any call (a port that is no port, an update of
    nothing): a :class:`MiasmaError` with code INVALID_ARGUMENT and reason
    ``INVALID_INPUT``, like the server's refusals (and a ``ValueError``)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_INPUT")


def from_rpc_error(error: grpc.RpcError) -> MiasmaError:
    """Translate a failed call (blocking or async) into :class:`MiasmaError`."""
    code = error.code()
    message = error.details() or code.name
    trailers: Any = error.trailing_metadata() or ()  # (key, value) pairs at runtime
    raw = next((value for key, value in trailers if key == DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return MiasmaError(code, message)
    status = status_pb2.Status.FromString(raw)
    reason, resource, metadata = "", "", {}
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info_ = error_details_pb2.ResourceInfo()
            detail.Unpack(info_)
            resource = info_.resource_name
    return MiasmaError(
        code,
        status.message or message,
        reason=reason,
        violations=tuple(violations),
        resource=resource,
        metadata=metadata,
    )
