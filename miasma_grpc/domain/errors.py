"""The one exception tree of Miasma.

Every refusal the service can give is a subclass of :class:`MiasmaError`
with a stable ``reason`` (sent as ``google.rpc.ErrorInfo.reason``). The API
layer maps each class to a gRPC status code in one table; nothing below the
API knows about gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """Which request field was wrong and why."""

    field: str
    description: str


class MiasmaError(Exception):
    """Base of every error Miasma reports to callers."""

    reason = "MIASMA_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[FieldViolation] = (),
        resource: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.violations = tuple(violations)
        self.resource = resource
        self.metadata = dict(metadata or {})


class InvalidArgument(MiasmaError):
    """Raised when a request is malformed: bad port, bad name, duplicates."""

    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """An error about a single field."""
        return cls(
            f"{field}: {description}",
            reason=reason,
            violations=[FieldViolation(field, description)],
        )


class NotFound(MiasmaError):
    """Raised when the named app does not exist."""

    reason = "APP_NOT_FOUND"


class AlreadyExists(MiasmaError):
    """Raised when an app name or a published port is already taken.

    ``resource`` names the holder (``apps/{name}``).
    """

    reason = "ALREADY_EXISTS"

    @classmethod
    def app(cls, name: str) -> AlreadyExists:
        """The app name ``name`` is taken."""
        return cls(
            f"an app named {name!r} already exists", reason="APP_EXISTS", resource=f"apps/{name}"
        )


class FailedPrecondition(MiasmaError):
    """Raised when the system state forbids the change: reserved or busy host port."""

    reason = "FAILED_PRECONDITION"


class ResourceExhausted(MiasmaError):
    """Raised when no automatic port is left in a range."""

    reason = "PORT_RANGE_EXHAUSTED"


class Aborted(MiasmaError):
    """Raised when an ``etag`` does not match the current revision."""

    reason = "ETAG_MISMATCH"


class Unauthenticated(MiasmaError):
    """Raised when a call lacks the access token the server requires, or has a wrong one."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(MiasmaError):
    """Raised when the caller's role does not hold the permission a call needs."""

    reason = "PERMISSION_DENIED"


class DeadlineExceeded(MiasmaError):
    """Raised when a call runs past the server's per-call limit (``--rpc-timeout``).

    Like any gRPC deadline, the change may or may not have been made; the
    reconciler finishes a rollout that was cut short.
    """

    reason = "RPC_TIMEOUT"


class OutOfRange(MiasmaError):
    """Raised when a watch asks for revisions the event log no longer (or not yet) holds.

    ``metadata["oldest_revision"]`` is the lowest ``start_revision`` that
    can still be resumed from; below it the client re-lists (start at 0).
    """

    reason = "REVISION_COMPACTED"


class Unavailable(MiasmaError):
    """Raised when Docker cannot be reached and the operation needs it now."""

    reason = "DOCKER_UNAVAILABLE"


class RuntimeFailure(MiasmaError):
    """Raised when Docker answered but refused the change (pull failed, port taken).

    Not raised when Docker is merely unreachable: that is :class:`Unavailable`.
    ``docker_status`` keeps the HTTP status Docker answered with (0 when the refusal
    is Miasma's own reading of Docker's state), so callers decide on it, not on words.
    """

    reason = "RUNTIME_FAILED"

    def __init__(
        self,
        message: str,
        *,
        docker_status: int = 0,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.docker_status = docker_status
