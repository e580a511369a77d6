"""What the audit log says of a call: the app it names, the request in brief (variables'
values left out), and how it ended (docs/security.md)."""

from __future__ import annotations

from google.protobuf import text_format
from google.protobuf.message import Message

from miasma_grpc.api.errors import status_code
from miasma_grpc.domain.audit import MAX_SUMMARY
from miasma_grpc.domain.errors import MiasmaError

SECRET_MAPS = frozenset({"env", "set_env"})  # their values may be passwords
MAX_LISTED = 50  # items of a repeated field a summary shows (10,000 ports cost 17 ms)


def app_of(method: str, request: Message) -> str:
    """The app ``request`` names, "apps/{app}" ("" for none)."""
    if method == "CreateApp":
        return f"apps/{getattr(request, 'app_id', '')}"
    if method == "UpdateApp":
        return str(request.app.name)  # type: ignore[attr-defined]
    name = str(getattr(request, "name", ""))
    return name if name.startswith("apps/") else ""


def summarize(request: Message) -> str:
    """``request`` on one line, the values of its env maps replaced by "…"."""
    shown = type(request)()
    shown.CopyFrom(request)
    _redact(shown)
    text = text_format.MessageToString(shown, as_one_line=True)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def _redact(message: Message) -> None:
    for field, value in message.ListFields():
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map and len(value) > MAX_LISTED:
            del value[MAX_LISTED:]  # the summary is cut at MAX_SUMMARY characters anyway
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.name in SECRET_MAPS:
                for key in list(value):
                    value[key] = "…"
        elif field.is_repeated:
            for item in value:
                _redact(item)
        else:
            _redact(value)


def outcome(exc: BaseException, code: object = None, details: str | None = None) -> str:
    """How a call that raised ``exc`` ended: "CODE REASON: message"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MiasmaError):
            return f"{status_code(seen).name} {seen.reason}: {seen.message}"
        seen = seen.__cause__ or seen.__context__
    name = getattr(code, "name", None) or type(exc).__name__
    return f"{name}: {details or exc}"
