"""The audit log's records: who changed what, when, and how it ended (docs/security.md).

A call that may change something carries an :class:`AuditCall` (a context variable,
set by the access check for the call's task); every transaction the call commits
writes a record of it in that same transaction (:mod:`miasma_grpc.store.audit`),
and a call that ends in an error, or is refused, gets one more record of its own.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

MAX_SUMMARY = 500  # characters of a request's summary kept


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log."""

    identity: str
    source: str
    method: str
    app: str  # "" for none
    result: str  # "OK", or "CODE REASON: message"
    summary: str
    revision: int = 0  # the change's revision; 0 for a refusal or failure
    time: datetime | None = None
    id: int = 0


@dataclass
class AuditCall:
    """The call under way, as its changes are to be recorded."""

    identity: str
    source: str
    method: str
    app: str
    summary: str
    changes: int = 0  # transactions written with a record of this call

    def record(self, result: str = "OK", revision: int = 0) -> AuditRecord:
        """A record of this call: of a change (at ``revision``), or of how it ended."""
        return AuditRecord(
            self.identity, self.source, self.method, self.app, result, self.summary, revision
        )


AUDITED: ContextVar[AuditCall | None] = ContextVar("audited", default=None)
