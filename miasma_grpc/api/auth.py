"""Who calls, and may they: every call but health is authenticated, then authorized.

An interceptor, so no servicer can forget it. A caller is told apart by its bearer
token (``authorization: Bearer <token>``; only the token's hash is compared, in
constant time) or by its client certificate's subject (mutual TLS); the access file
gives each a role (miasma_grpc/access.py), and the method's permission is checked
against it (domain/access.py): ``UNAUTHENTICATED`` for an unknown caller,
``PERMISSION_DENIED`` naming the permission for a role without it. A refused call
never reaches a handler, so it changes nothing. Nothing is answered before
authentication but health: a method that does not exist is UNAUTHENTICATED too for
an unknown caller (UNIMPLEMENTED would tell it what exists), and so is reflection.

A server given no token and no access file asks nobody (every caller is
"anonymous", admin), as before.

Every call that may change something, and every refused call, is recorded in the
audit log (domain/audit.py): the changes in their own transactions, a refusal or a
failure as a record of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message
from miasma.v1 import apps_pb2

from miasma_grpc.access import AccessFile
from miasma_grpc.api.audit import app_of, outcome, summarize
from miasma_grpc.api.handlers import (
    SERVICE_PREFIX,
    Context,
    Continuation,
    Handler,
    Interceptor,
    abort,
)
from miasma_grpc.domain.access import ANONYMOUS, CALLER, CHANGES, Identity
from miasma_grpc.domain.audit import AUDITED, AuditCall, AuditRecord
from miasma_grpc.domain.errors import MiasmaError, Unauthenticated

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # load balancers probe without credentials

Recorder = Callable[[AuditRecord], Awaitable[None]]
CERT_NAMES = ("x509_common_name", "x509_subject_alternative_name")


class Access(Interceptor):
    """Authenticates and authorizes every call but health, from the access file in force."""

    def __init__(self, access: AccessFile, record: Recorder) -> None:
        self.access = access
        self.record = record  # writes an audit record of its own

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        """The method's handler, behind the check of its caller."""
        handler = await continuation(details)
        if details.method.startswith(OPEN_PREFIXES):
            return handler
        service = details.method.startswith(SERVICE_PREFIX)
        method = details.method.rpartition("/")[2]
        if self.access.current.empty and not (service and method in CHANGES):
            return handler  # nobody to tell apart, nothing to record
        token = _bearer(dict(details.invocation_metadata or ()))
        guard = Guard(self.access, token, method if service else "", self.record)
        return _guarded(handler, guard)


class Guard:
    """The check of one call: who it is (token, else certificate), and may it."""

    def __init__(
        self, access: AccessFile, token: str | None, method: str, record: Recorder
    ) -> None:
        self.access = access
        self.token = token
        self.method = method  # an AppService method, or "" (reflection: any known caller)
        self.record = record
        self.app = ""  # the app the request names, once read

    def identify(self, context: Context) -> Identity:
        """The caller; :class:`Unauthenticated` saying why not."""
        known = self.access.current
        if known.empty:
            return ANONYMOUS
        if self.token is not None:
            identity = known.by_token(self.token)
            if identity is None:
                raise Unauthenticated("the access token is not valid", reason="TOKEN_INVALID")
            return identity
        names = [
            value.decode(errors="replace")
            for key in CERT_NAMES
            for value in (context.auth_context().get(key) or ())
        ]
        if names:
            identity = known.by_subject(names)
            if identity is None:
                raise Unauthenticated(
                    f"the client certificate ({', '.join(sorted(set(names)))}) has no role "
                    "in the access file: add a [[certificate]] for its subject",
                    reason="CERTIFICATE_UNKNOWN",
                )
            return identity
        raise Unauthenticated(
            "this server requires an access token: send 'authorization: Bearer <token>'",
            reason="TOKEN_MISSING",
        )

    def admit(self, context: Context) -> Identity:
        """The caller, if it may make this call (raises otherwise)."""
        identity = self.identify(context)
        if self.method:
            identity.check(self.method)
        return identity


def _bearer(metadata: Mapping[str, Any]) -> str | None:
    """The bearer token sent, "" for another scheme, None for no authorization header."""
    header = metadata.get("authorization")
    if header is None:
        return None
    scheme, _, token = str(header).partition(" ")
    return token if scheme.lower() == "bearer" else ""


async def _admitted(guard: Guard, context: Context, request: object = None) -> object:
    """Admit the call (setting CALLER, and AUDITED for a change, for its handler), or
    record the refusal and abort the call with why. The request for the handler: parsed
    here once (the handler's parsing takes it as it is), else the bytes, for the handler
    to refuse as malformed (api/parsing.py) now that the caller is known."""
    message = _message(guard.method, request)
    guard.app = app = app_of(guard.method, message) if message is not None else ""
    try:
        identity = guard.admit(context)
    except MiasmaError as exc:
        if isinstance(exc, Unauthenticated):
            who, source = "unknown", "token" if guard.token is not None else "none"
        else:
            known = guard.identify(context)
            who, source = known.name, known.source
        await _record(guard, AuditRecord(who, source, guard.method or "?", app, outcome(exc), ""))
        await abort(context, exc)
    CALLER.set(identity)
    if guard.method in CHANGES:
        summary = summarize(message) if message is not None else "(not a valid request)"
        AUDITED.set(AuditCall(identity.name, identity.source, guard.method, app, summary))
    return request if message is None else message


def _message(method: str, request: object) -> Message | None:
    """The request as a message (the handlers take bytes: api/parsing.py); None when it
    does not parse."""
    if isinstance(request, Message):
        return request
    kind = getattr(apps_pb2, f"{method}Request", None)
    if not isinstance(request, bytes) or kind is None:
        return None
    try:
        return cast(Message, kind.FromString(request))
    except DecodeError:
        return None


async def _ended(guard: Guard, exc: BaseException, context: Context) -> None:
    """A call ended in ``exc``: record how a change call ended (its changes are recorded),
    and any call refused by the handler (an app out of the caller's scope)."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the caller went away
        return
    result = outcome(exc, context.code(), context.details())
    call = AUDITED.get()
    if call is not None:
        await _record(guard, call.record(result))
    elif context.code() == grpc.StatusCode.PERMISSION_DENIED:
        caller = CALLER.get()
        await _record(
            guard, AuditRecord(caller.name, caller.source, guard.method, guard.app, result, "")
        )


async def _record(guard: Guard, record: AuditRecord) -> None:
    try:
        await guard.record(record)
    except MiasmaError as exc:  # the call's own answer matters more than its record
        log.error("could not write an audit record (%s %s): %s", record.method, record.result,
                  exc.message)  # fmt: skip


def _guarded(handler: Handler | None, guard: Guard) -> Handler:
    """``handler`` behind ``guard``; for an unknown method (None), a unary handler that
    answers UNIMPLEMENTED to a known caller and UNAUTHENTICATED to others."""
    if handler is None:

        async def unknown(request: object, context: Context) -> None:
            await _admitted(Guard(guard.access, guard.token, "", guard.record), context)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

        return grpc.unary_unary_rpc_method_handler(unknown)
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)

        async def unary_call(request: Any, context: Context) -> Any:
            request = await _admitted(guard, context, request)
            try:
                return await unary(request, context)
            except BaseException as exc:
                await _ended(guard, exc, context)
                raise

        return grpc.unary_unary_rpc_method_handler(unary_call, **options)
    if handler.unary_stream is not None:
        stream = cast(Callable[[Any, Context], AsyncIterator[Any]], handler.unary_stream)

        async def stream_call(request: Any, context: Context) -> AsyncIterator[Any]:
            request = await _admitted(guard, context, request)
            try:
                async for item in stream(request, context):
                    yield item
            except BaseException as exc:
                await _ended(guard, exc, context)
                raise

        return grpc.unary_stream_rpc_method_handler(stream_call, **options)
    if handler.stream_stream is not None:
        both = cast(Callable[[Any, Context], AsyncIterator[Any]], handler.stream_stream)

        async def both_call(requests: Any, context: Context) -> AsyncIterator[Any]:
            await _admitted(guard, context)
            async for item in both(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(both_call, **options)
    return handler  # a client-streaming method: Miasma has none
