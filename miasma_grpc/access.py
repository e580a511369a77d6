"""Identities from the access file: named tokens (only their SHA-256 kept) and client
certificate subjects, each with a role (docs/security.md).

The file is TOML, edited by the operator::

    [[token]]
    name = "router"            # who it is, in errors, whoami and the audit
    role = "viewer"            # viewer, deployer or admin
    sha256 = "9f86d081…"       # of the token: `python -m miasma_grpc.access token router`

    [[certificate]]
    subject = "ci.internal"    # a client certificate's CN or DNS name (--tls-client-ca)
    role = "deployer"
    apps = ["web-*", "api"]    # optional: only apps whose name matches one of these,
    groups = ["staging"]       #   or whose group is one of these (either key alone too)

It is read again when it changes (looked at every second) and on SIGHUP; a file
that does not read keeps the identities in force and says why in the log.
``MIASMA_ACCESS_TOKEN`` is one more token, named ``admin``, with role admin.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miasma_grpc.domain.access import Identity, Role, Scope

log = logging.getLogger(__name__)

HASH_HEX = 64


def token_hash(token: str) -> str:
    """The SHA-256 of ``token``, hex: what the access file keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessList:
    """Who may call: identities by token hash and by certificate subject."""

    tokens: Mapping[str, Identity] = field(default_factory=dict)  # sha256 hex -> identity
    subjects: Mapping[str, Identity] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Whether nobody is named (the server is then open to every caller)."""
        return not self.tokens and not self.subjects

    def by_token(self, token: str) -> Identity | None:
        """The identity of ``token`` (its hash compared in constant time)."""
        digest = token_hash(token)
        found = None
        for known, identity in self.tokens.items():
            if hmac.compare_digest(known, digest):
                found = identity
        return found

    def by_subject(self, names: Iterable[str]) -> Identity | None:
        """The identity of a client certificate that carries any of ``names``."""
        for name in names:
            if name in self.subjects:
                return self.subjects[name]
        return None


def parse_access(
    text: str, *, admin_token: str = "", services: Mapping[str, Identity] | None = None
) -> AccessList:
    """The identities of an access file's ``text`` (plus ``admin_token``, if given, and the
    server's own ``services`` by token hash, where anyone is asked at all).
    ``ValueError`` saying where, for anything malformed: it is not applied."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML: {exc}") from None
    unknown = set(data) - {"token", "certificate"}
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}: use [[token]] and [[certificate]]")
    tokens: dict[str, Identity] = {}
    subjects: dict[str, Identity] = {}
    names: set[str] = set()
    for index, entry in enumerate(_entries(data, "token")):
        where = f"token #{index + 1}"
        identity = _identity(entry, where, "token", {"sha256"})
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != HASH_HEX or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where} ({identity.name}): sha256 must be 64 hex digits")
        if digest in tokens:
            raise ValueError(f"{where} ({identity.name}): the same token as {tokens[digest].name}")
        _unique(identity.name, names, where)
        tokens[digest] = identity
    for index, entry in enumerate(_entries(data, "certificate")):
        where = f"certificate #{index + 1}"
        identity = _identity(entry, where, "certificate", set())
        if identity.name in subjects:
            raise ValueError(f"{where}: subject {identity.name!r} is named twice")
        subjects[identity.name] = identity
    if admin_token:
        tokens.setdefault(token_hash(admin_token), Identity("admin", Role.ADMIN))
    if tokens or subjects:
        tokens.update(services or {})
    return AccessList(tokens, subjects)


def _entries(data: Mapping[str, Any], table: str) -> list[Mapping[str, Any]]:
    entries = data.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{table} must be an array of tables: [[{table}]]")
    return entries


def _identity(entry: Mapping[str, Any], where: str, source: str, extra: set[str]) -> Identity:
    key = "name" if source == "token" else "subject"
    allowed = {key, "role", "apps", "groups"} | extra
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    name = entry.get(key)
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ValueError(f"{where}: {key} must be a non-empty string")
    try:
        role = Role.parse(str(entry.get("role", "")))
    except ValueError as exc:
        raise ValueError(f"{where} ({name}): {exc}") from None
    return Identity(name.strip(), role, source, _scope(entry, f"{where} ({name})"))


def _scope(entry: Mapping[str, Any], where: str) -> Scope | None:
    """The apps an entry is limited to: None (all) unless it has ``apps`` or ``groups``."""
    if "apps" not in entry and "groups" not in entry:
        return None
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("apps", "groups"):
        items = entry.get(key, [])
        if not isinstance(items, list) or not all(
            isinstance(i, str) and i.strip() and i.isprintable() for i in items
        ):
            raise ValueError(f"{where}: {key} must be a list of non-empty strings")
        lists[key] = tuple(i.strip() for i in items)
    if not lists["apps"] and not lists["groups"]:
        raise ValueError(
            f"{where}: apps and groups are empty, so it could touch no app: "
            "name some, or leave both keys out for all apps"
        )
    return Scope(lists["apps"], lists["groups"])


def _unique(name: str, names: set[str], where: str) -> None:
    if name in names:
        raise ValueError(f"{where}: the name {name!r} is used twice")
    names.add(name)


class AccessFile:
    """The access file and the identities in force: read again when it changes."""

    def __init__(self, path: Path | None, *, admin_token: str = "") -> None:
        self.path = path
        self.admin_token = admin_token
        self.services: dict[str, Identity] = {}  # the server's own callers, by token hash
        self._stamp: tuple[int, int] | None = None
        self.current = parse_access("", admin_token=admin_token)
        if path is not None:
            self.current = self._read()  # at start-up a bad file stops the server

    def _read(self) -> AccessList:
        assert self.path is not None
        stat = self.path.stat()
        access = parse_access(self.path.read_text(encoding="utf-8"), admin_token=self.admin_token,
                              services=self.services)  # fmt: skip
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return access

    def service_token(self, name: str, role: Role) -> str:
        """A new token for one of the server's own parts (the router) as ``name`` with
        ``role``, kept in memory only; "" when the server asks nobody."""
        token = secrets.token_urlsafe(32)
        self.services[token_hash(token)] = Identity(name, role, "internal")
        text = self.path.read_text(encoding="utf-8") if self.path is not None else ""
        self.current = parse_access(text, admin_token=self.admin_token, services=self.services)
        return "" if self.current.empty else token

    def reload(self, *, forced: bool = False) -> bool:
        """Read the file again if it changed (or ``forced``: SIGHUP); whether the identities
        changed. One that does not read keeps those in force, and the log says why."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
            if not forced and (stat.st_mtime_ns, stat.st_size) == self._stamp:
                return False
            access = self._read()
        except (OSError, ValueError) as exc:
            log.error("access file %s not applied (the identities in force stay): %s",
                      self.path, exc)  # fmt: skip
            return False
        changed = access != self.current
        self.current = access
        log.info("access file %s applied: %d tokens, %d certificate subjects",
                 self.path, len(access.tokens), len(access.subjects))  # fmt: skip
        return changed


def main() -> None:
    """``python -m miasma_grpc.access token NAME --role ROLE``: a new token, and the lines
    that give it to NAME in the access file (only its hash is kept there)."""
    parser = argparse.ArgumentParser(prog="python -m miasma_grpc.access")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("token", help="make a new token for the access file")
    new.add_argument("name")
    new.add_argument("--role", default="viewer", choices=[str(r) for r in Role])
    new.add_argument("--apps", action="append", default=[], metavar="PATTERN",
                     help="limit it to apps whose name matches (web-*); repeatable")  # fmt: skip
    new.add_argument("--groups", action="append", default=[], metavar="GROUP",
                     help="limit it to apps of this group; repeatable")  # fmt: skip
    ns = parser.parse_args()
    token = secrets.token_urlsafe(32)
    print(f"token (give it to {ns.name}; it is not kept anywhere): {token}")
    print()
    print("[[token]]")
    print(f"name = {json.dumps(ns.name)}")
    print(f'role = "{ns.role}"')
    print(f'sha256 = "{token_hash(token)}"')
    for key in ("apps", "groups"):
        if values := getattr(ns, key):
            print(f"{key} = {json.dumps(values)}")


if __name__ == "__main__":
    main()
