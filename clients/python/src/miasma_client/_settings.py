"""Where the client connects, and how: flags > environment > config file > default.

``miasma connect HOST:PORT`` writes the config file
(``$XDG_CONFIG_HOME/miasma/config.json``, else ``~/.config/miasma/``, or
the file ``MIASMA_CONFIG`` names); ``MIASMA_SERVER``, ``MIASMA_TOKEN``
and ``MIASMA_TLS_*`` override it for one shell, and explicit arguments
override both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

DEFAULT_SERVER = "127.0.0.1:50051"

# Settings field -> environment variable.
ENVIRONMENT = {
    "server": "MIASMA_SERVER",
    "token": "MIASMA_TOKEN",
    "tls_ca": "MIASMA_TLS_CA",
    "tls_cert": "MIASMA_TLS_CERT",
    "tls_key": "MIASMA_TLS_KEY",
}


class SettingsError(ValueError):
    """The config file or a TLS file cannot be read; raised before any call is made."""


@dataclass(frozen=True)
class Settings:
    """A server address plus the optional token and TLS material to reach it.

    ``tls`` turns on TLS with the system's trusted roots; ``tls_ca`` (a PEM
    file) trusts that CA instead and implies TLS; ``tls_cert`` and
    ``tls_key`` present a client certificate for mutual TLS.
    """

    server: str = DEFAULT_SERVER
    token: str = ""
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def uses_tls(self) -> bool:
        """Whether the channel is encrypted."""
        return self.tls or bool(self.tls_ca or self.tls_cert)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the bearer token, when there is one."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, or ``None`` for a plaintext channel."""
        if not self.uses_tls:
            return None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("a client certificate needs both tls_cert and tls_key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.tls_ca),
            private_key=_read(self.tls_key),
            certificate_chain=_read(self.tls_cert),
        )


def _read(path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from exc


def config_path() -> Path:
    """The config file ``miasma connect`` writes."""
    if explicit := os.environ.get("MIASMA_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "miasma" / "config.json"


def load_file(path: Path | None = None) -> dict[str, Any]:
    """The saved settings (empty when nothing was saved yet); ``tokens`` maps each server
    a token was saved for to it."""
    data = _saved(path or config_path())
    known = {f.name for f in dataclasses.fields(Settings)} - {"token"}
    return {key: value for key, value in data.items() if key in known} | {"tokens": _tokens(data)}


def _tokens(data: dict[str, Any]) -> dict[str, str]:
    """Server -> token, as saved (the older file's one token is its server's)."""
    saved = data.get("tokens")
    tokens = {str(k): str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}
    if data.get("token") and data.get("server"):
        tokens = {str(data["server"]): str(data["token"])} | tokens
    return tokens


def save_file(settings: Settings, path: Path | None = None) -> Path:
    """Write ``settings`` (owner-only, since it holds tokens); its token is kept for its
    server only, beside those saved for other servers. Returns the path."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    before = _saved(path)
    tokens = _tokens(before)
    if settings.token:
        tokens[settings.server] = settings.token
    data: dict[str, Any] = {
        k: v
        for k, v in dataclasses.asdict(settings).items()
        if v not in ("", False) and k != "token"
    }
    if tokens:
        data["tokens"] = tokens
    if isinstance(app := before.get("app"), str):
        data["app"] = app
    _write(path, data)
    return path


def saved_app(path: Path | None = None) -> str:
    """The app the CLI used last (Miasma's sticky ``-a``); "" when none (or unreadable)."""
    try:
        app = _saved(path or config_path()).get("app")
    except SettingsError:
        return ""
    return app if isinstance(app, str) else ""


def save_app(name: str, path: Path | None = None) -> None:
    """Remember ``name`` as the app the next command without ``-a`` works on."""
    path = path or config_path()
    data = _saved(path)
    if data.get("app") == name:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, data | {"app": name})


def _saved(path: Path) -> dict[str, Any]:
    """The config file as it is on disk (empty when there is none yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"the config file {path} does not hold a JSON object")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON, owner-only, atomically."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
    temporary.replace(path)


def resolve(**overrides: Any) -> Settings:
    """Settings from the config file, then the environment, then ``overrides``.

    ``None`` in ``overrides`` means "not given" and falls through. A token saved
    by ``connect`` is used only for the server it was saved for: never sent to
    another one.
    """
    saved = load_file()
    tokens: dict[str, str] = saved.pop("tokens", {})
    values: dict[str, Any] = saved
    values |= {field: os.environ[env] for field, env in ENVIRONMENT.items() if os.environ.get(env)}
    values |= {key: value for key, value in overrides.items() if value is not None}
    if "token" not in values:
        values["token"] = tokens.get(values.get("server", DEFAULT_SERVER), "")
    return Settings(**values)
